"""Audit events of registered MCP servers (stream ``mcp_server-<id>``). They name the fields that
changed and which write-only secrets are set, never a secret's value (nor the URL, which may carry
a token in its path or query: only its host)."""

from __future__ import annotations

import uuid

from domain.shared.events import Event, event_type


def server_stream(server_id: uuid.UUID) -> str:
    return f"mcp_server-{server_id}"


@event_type("mcp.server_created.v1")
class McpServerCreated(Event, frozen=True, kw_only=True):
    """``secrets`` names the write-only fields that were set (``headers``, ``bearer_token``, ``env``)."""

    mcp_server_id: uuid.UUID
    name: str
    transport: str
    host: str | None
    command: str | None
    secrets: list[str]


@event_type("mcp.server_updated.v1")
class McpServerUpdated(Event, frozen=True, kw_only=True):
    mcp_server_id: uuid.UUID
    changed: list[str]
    version: int


@event_type("mcp.server_deleted.v1")
class McpServerDeleted(Event, frozen=True, kw_only=True):
    mcp_server_id: uuid.UUID
    version: int


@event_type("mcp.server_tools_refreshed.v1")
class McpServerToolsRefreshed(Event, frozen=True, kw_only=True):
    """The tool list was read again from the server; ``tools`` names what it offers now."""

    mcp_server_id: uuid.UUID
    tools: list[str]
