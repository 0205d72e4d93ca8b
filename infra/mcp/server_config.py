"""An MCP server as stored (``Server``) and the rules its configuration meets: the fields a
transport needs and those it cannot have, https unless allow-listed, which secrets go where, and
what the gateway gets (``config_of``: HTTP secrets only for the host they were saved for)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from domain.mcp.types import Approval, McpServerConfig, Transport
from domain.shared.errors import Invalid
from infra.net.outbound import OutboundBlocked, OutboundGuard, url_host

HTTP_TRANSPORTS = ("streamable_http", "sse")
HTTP_SECRETS = ("headers", "bearer_token")
HTTP_FIELDS = ("url", "headers", "bearer_token")
STDIO_FIELDS = ("command", "args", "env")
SECRET_FIELDS = ("headers", "bearer_token", "env")


@dataclass(frozen=True, slots=True)
class Server:
    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    transport: Transport
    url: str | None
    command: str | None
    args: list[str]
    secrets_token: str | None
    secret_info: dict[str, Any]
    """Names of the stored secrets: ``header_names``, ``env_names``, ``has_bearer_token``."""
    credential_host: str | None
    enabled: bool
    approval: Approval
    tool_approval: dict[str, Approval]
    allowed_tools: list[str] | None
    call_timeout_s: int
    version: int
    created_at: datetime
    updated_at: datetime

    @property
    def stored_secrets(self) -> list[str]:
        info = self.secret_info
        names = []
        if info.get("header_names"):
            names.append("headers")
        if info.get("has_bearer_token"):
            names.append("bearer_token")
        if info.get("env_names"):
            names.append("env")
        return names


def server_of(row: Any) -> Server:
    return Server(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        transport=row.transport,
        url=row.url,
        command=row.command,
        args=[str(a) for a in row.args or []],
        secrets_token=row.secrets,
        secret_info=dict(row.secret_info or {}),
        credential_host=row.credential_host,
        enabled=row.enabled,
        approval=row.approval,
        tool_approval=dict(row.tool_approval or {}),
        allowed_tools=None if row.allowed_tools is None else [str(n) for n in row.allowed_tools],
        call_timeout_s=row.call_timeout_s,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def secret_info(secrets: Mapping[str, Any]) -> dict[str, Any]:
    """What a response may say about the secrets: their names, never their values."""
    return {
        "header_names": sorted(secrets.get("headers") or {}),
        "env_names": sorted(secrets.get("env") or {}),
        "has_bearer_token": bool(secrets.get("bearer_token")),
    }


async def check_url(guard: OutboundGuard, url: str) -> None:
    """The guard's rules, and https unless the host is allow-listed (name, address or network)."""
    await guard.check_url(url)
    parts = urlsplit(url)
    if parts.scheme.lower() == "https":
        return
    host = parts.hostname or ""
    if guard.allow.allows_host(host):
        return
    addresses = await guard.resolve(host, parts.port or 80)
    if not addresses or not all(guard.allow.allows_ip(ip) for ip in addresses):
        raise OutboundBlocked(
            "MCP servers need an https URL; plain http is only allowed to hosts an administrator allow-listed."
        )


def validate_shape(state: Mapping[str, Any]) -> None:
    """The fields a transport needs and those it cannot have."""
    transport = state["transport"]
    if transport in HTTP_TRANSPORTS:
        if not state.get("url"):
            raise Invalid(f"A {transport} server needs a url.", code="url_required")
        extra = [f for f in STDIO_FIELDS if state.get(f)]
    else:
        if not state.get("command"):
            raise Invalid("A stdio server needs a command.", code="command_required")
        extra = [f for f in HTTP_FIELDS if state.get(f)]
    if extra:
        raise Invalid(f"A {transport} server has no {', '.join(extra)}.", code="invalid_transport_fields")


def credential_host(state: Mapping[str, Any]) -> str | None:
    url = state.get("url")
    return url_host(url) if state["transport"] in HTTP_TRANSPORTS and url else None


def secrets_of(state: Mapping[str, Any]) -> dict[str, Any]:
    return {k: state[k] for k in SECRET_FIELDS if state.get(k)}


def config_of(server: Server, secrets: Mapping[str, Any], outbound_allow: Sequence[str]) -> McpServerConfig:
    """What the gateway needs to reach ``server``. HTTP secrets saved for another host are left out."""
    http_ok = server.transport in HTTP_TRANSPORTS and (
        server.url is not None and url_host(server.url) == server.credential_host
    )
    return McpServerConfig(
        id=server.id,
        tenant_id=server.tenant_id,
        name=server.name,
        transport=server.transport,
        url=server.url,
        headers=dict(secrets.get("headers") or {}) if http_ok else {},
        bearer_token=(secrets.get("bearer_token") or None) if http_ok else None,
        command=server.command,
        args=list(server.args),
        env=dict(secrets.get("env") or {}) if server.transport == "stdio" else {},
        enabled=server.enabled,
        approval=server.approval,
        tool_approval=dict(server.tool_approval),
        allowed_tools=None if server.allowed_tools is None else list(server.allowed_tools),
        call_timeout_s=float(server.call_timeout_s),
        version=server.version,
        outbound_allow=tuple(outbound_allow),
    )
