"""MCP client side: the tool gateway, its pooled connections and its call ledger."""
