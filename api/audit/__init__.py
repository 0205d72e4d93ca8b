"""/api/v1/audit-events: the tenant's audit trail for admins (list and NDJSON export)."""
