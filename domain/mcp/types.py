"""MCP (Model Context Protocol) value types: a server's configuration as the gateway sees it, the
tools it offers, and the typed result of one tool call."""

from __future__ import annotations

import uuid
from typing import Any, Literal

import msgspec

Transport = Literal["streamable_http", "sse", "stdio"]
Approval = Literal["auto", "manual", "deny"]
ToolStatus = Literal["ok", "error", "invalid_arguments", "timeout", "unavailable", "too_large", "denied", "not_found"]


class McpServerConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One MCP server the gateway may connect to (secrets already decrypted)."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    transport: Transport
    url: str | None = None
    headers: dict[str, str] = {}
    bearer_token: str | None = None
    command: str | None = None
    args: list[str] = []
    env: dict[str, str] = {}
    enabled: bool = True
    approval: Approval = "manual"
    tool_approval: dict[str, Approval] = {}
    allowed_tools: list[str] | None = None
    call_timeout_s: float = 60.0
    version: int = 1
    outbound_allow: tuple[str, ...] = ()
    """The tenant's allow-list for the outbound guard."""


class ToolInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A tool one server offers, under a name unique within one listing."""

    server_id: uuid.UUID
    server_name: str
    name: str
    qualified_name: str
    """`<server-slug>__<tool>`, unique per selection, valid as a provider tool name
    ([A-Za-z0-9_-]{1,64})."""
    title: str | None = None
    description: str = ""
    input_schema: dict[str, Any] = {}
    annotations: dict[str, Any] = {}
    approval: Approval = "auto"
    """The server's policy for this tool (its per-tool override, else the server's)."""


class ToolResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one tool call; never raised, always returned."""

    status: ToolStatus
    is_error: bool
    text: str = ""
    structured: dict[str, Any] | None = None
    duration_ms: int = 0


class CallContext(msgspec.Struct, frozen=True, kw_only=True):
    """Where a tool call comes from (recorded with it)."""

    conversation_id: uuid.UUID | None = None
    run_id: uuid.UUID | None = None
    request_id: str | None = None
