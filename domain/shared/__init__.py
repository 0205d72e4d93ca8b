"""Shared kernel: identifiers, clock, base errors, events and the event-store port."""
