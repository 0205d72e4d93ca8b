"""Event store tables (owned by the event store work)."""
