"""Prompts: a library of reusable prompt templates (plain mutable configuration with an audit trail)."""
