"""HTTP routes of sharing: entity ACLs and groups."""
