"""Administration: users, tenant settings and tenants."""
