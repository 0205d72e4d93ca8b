"""/api/v1/mcp-servers: MCP servers of a tenant, their tools, and their ACL."""
