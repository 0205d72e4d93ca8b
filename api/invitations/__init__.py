"""Invitations into a tenant."""
