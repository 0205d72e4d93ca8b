"""Ports the MCP gateway offers (ToolGateway) and needs (ServerDirectory)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from domain.mcp.types import CallContext, McpServerConfig, ToolInfo, ToolResult
from domain.shared.principal import Principal


class ServerDirectory(Protocol):
    async def configs(self, principal: Principal, server_ids: Sequence[uuid.UUID] | None) -> list[McpServerConfig]:
        """The enabled servers the principal may use (viewer+), secrets decrypted;
        `None` = all visible."""
        ...


class ToolGateway(Protocol):
    async def list_tools(self, principal: Principal, selection: Sequence[uuid.UUID] | None) -> list[ToolInfo]: ...

    async def call(
        self,
        principal: Principal,
        tool: str,
        arguments: dict[str, Any],
        *,
        timeout_s: float | None = None,
        context: CallContext = CallContext(),
    ) -> ToolResult: ...
