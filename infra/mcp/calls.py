"""What the MCP gateway hands to others without loading the MCP SDK: its "server unreachable"
problem and the record of one tool call (the ledger's input)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from domain.mcp.types import CallContext, ToolResult
from domain.shared.errors import DomainError
from domain.shared.principal import Principal


class McpUnavailable(DomainError):
    """The MCP server could not be reached or did not answer as an MCP server."""

    code = "mcp_unavailable"


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    """One tool call, as the ledger stores it."""

    call_id: uuid.UUID
    principal: Principal
    server_id: uuid.UUID | None
    server_name: str
    tool: str
    arguments: dict[str, Any]
    result: ToolResult
    context: CallContext


class ToolCallRecorder(Protocol):
    async def record(self, call: ToolCallRecord) -> None: ...
