"""Audit event of a tool call made through the MCP gateway (stream ``tool_call-<call id>``). It names
the server, the tool and the outcome; arguments and the result stay in the ``tool_calls`` ledger."""

from __future__ import annotations

import uuid

from domain.shared.events import Event, event_type


def tool_call_stream(call_id: uuid.UUID) -> str:
    return f"tool_call-{call_id}"


@event_type("mcp.tool_called.v1")
class ToolCalled(Event, frozen=True, kw_only=True):
    call_id: uuid.UUID
    mcp_server_id: uuid.UUID | None
    server_name: str
    tool: str
    status: str
    is_error: bool
    duration_ms: int
    conversation_id: uuid.UUID | None = None
    run_id: uuid.UUID | None = None
