"""MCP: tool servers, the tools they offer, and the gateway port that calls them."""

from domain.mcp.types import (
    Approval,
    CallContext,
    McpServerConfig,
    ToolInfo,
    ToolResult,
    ToolStatus,
    Transport,
)

__all__ = [
    "Approval",
    "CallContext",
    "McpServerConfig",
    "ToolInfo",
    "ToolResult",
    "ToolStatus",
    "Transport",
]
