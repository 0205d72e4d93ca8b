"""MCP servers registered by a tenant: rows, their write-only secrets (the rules a configuration must
meet and the stored shape: ``infra.mcp.server_config``); create, update, delete.

Secrets (HTTP headers, an OAuth bearer token, stdio environment values) are one JSON object
encrypted by the secrets service (record ``mcp_server:<id>``, field ``secrets``); the row keeps only
their names in ``secret_info``. Like a provider's credentials, HTTP secrets are bound to the host
they were saved for (``credential_host``): moving the URL to another host needs them sent again.

Servers are shared through the ACL (entity ``mcp_server``): using one needs viewer, changing it
editor. stdio servers run a program on the host, so only instance admins create or change them;
HTTP servers need an https URL (plain http only to hosts an administrator allow-listed) that passes
the outbound guard when saved, and again on every request the gateway makes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, insert, select
from sqlalchemy import delete as sql_delete
from sqlalchemy import update as sql_update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from domain.mcp import server_events as ev
from domain.shared.authz import Action
from domain.shared.clock import utcnow
from domain.shared.errors import Conflict, Forbidden, NotFound
from domain.shared.events import EventMetadata
from domain.shared.ids import new_id
from domain.shared.principal import Principal
from infra.access import acl
from infra.db.tables.mcp import mcp_servers as t
from infra.eventstore.postgres import PostgresEventStore
from infra.identity.accounts import record
from infra.llm import tenant_settings
from infra.mcp.server_config import (
    HTTP_FIELDS,
    HTTP_SECRETS,
    HTTP_TRANSPORTS,
    SECRET_FIELDS,
    STDIO_FIELDS,
    Server,
    check_url,
    credential_host,
    secret_info,
    secrets_of,
    server_of,
    validate_shape,
)
from infra.net.outbound import CredentialsHostMismatch, OutboundGuard
from infra.secrets.envelope import Kek
from infra.secrets.service import SecretsService

ENTITY = "mcp_server"
SECRETS_FIELD = "secrets"
# The order fields are reported in ``changed``.
FIELDS = (
    "name",
    "transport",
    "url",
    "headers",
    "bearer_token",
    "command",
    "args",
    "env",
    "enabled",
    "approval",
    "tool_approval",
    "allowed_tools",
    "call_timeout_s",
)


class McpServerNotFound(NotFound):
    """No MCP server with this id visible to you."""

    code = "mcp_server_not_found"


class McpServerDisabled(Conflict):
    """The MCP server is disabled; enable it first."""

    code = "mcp_server_disabled"


class McpServerNameTaken(Conflict):
    """Another MCP server of your tenant has this name."""

    code = "mcp_server_name_taken"


def _record(server_id: uuid.UUID) -> str:
    return f"mcp_server:{server_id}"


async def decrypt(session: AsyncSession, kek: Kek, server: Server) -> dict[str, Any]:
    if server.secrets_token is None:
        return {}
    plain = await SecretsService(session, kek).decrypt(
        str(server.tenant_id), _record(server.id), SECRETS_FIELD, server.secrets_token
    )
    value = json.loads(plain)
    return value if isinstance(value, dict) else {}


async def encrypt(
    session: AsyncSession, kek: Kek, tenant_id: uuid.UUID, server_id: uuid.UUID, secrets: Mapping[str, Any]
) -> str | None:
    clean = {k: v for k, v in secrets.items() if v}
    if not clean:
        return None
    return await SecretsService(session, kek).encrypt(
        str(tenant_id), _record(server_id), SECRETS_FIELD, json.dumps(clean, sort_keys=True)
    )


def visible_clause(principal: Principal) -> ColumnElement[bool]:
    """The servers the caller holds any role on (viewer and up) in their tenant."""
    return (t.c.tenant_id == principal.tenant_id) & acl.visible_ids_clause(principal, ENTITY, t.c.id)


async def load(
    session: AsyncSession, principal: Principal, server_id: uuid.UUID, action: Action, *, lock: bool = False
) -> Server:
    """The server if the caller's role allows ``action``: 404 if it is invisible, 403 otherwise."""
    query = select(t).where(t.c.id == server_id, t.c.tenant_id == principal.tenant_id)
    row = (await session.execute(query.with_for_update() if lock else query)).one_or_none()
    if row is None:
        raise McpServerNotFound()
    await acl.require(session, principal, ENTITY, server_id, action, McpServerNotFound)
    return server_of(row)


def require_stdio_admin(principal: Principal) -> None:
    if not principal.instance_admin:
        raise Forbidden("stdio MCP servers run programs on the host: only instance admins create or change them.")


async def tenant_allow(session: AsyncSession, tenant_id: uuid.UUID, base: Sequence[str]) -> tuple[str, ...]:
    """The outbound allow-list for a tenant's servers: the instance's plus the tenant admin's."""
    own = (await tenant_settings.get(session, tenant_id)).outbound_allow
    return tuple(dict.fromkeys([*base, *own]))


async def _write_row(session: AsyncSession, statement: Any) -> Any:
    try:
        async with session.begin_nested():
            return (await session.execute(statement.returning(t))).one()
    except IntegrityError:
        raise McpServerNameTaken() from None


async def create(
    session: AsyncSession,
    principal: Principal,
    meta: EventMetadata,
    *,
    kek: Kek,
    guard: OutboundGuard,
    spec: Mapping[str, Any],
) -> Server:
    """Register a server (``spec`` holds every field of ``FIELDS``); the caller becomes its owner."""
    state = dict(spec)
    state["name"] = state["name"].strip() or state["name"]
    if state["transport"] == "stdio":
        require_stdio_admin(principal)
    validate_shape(state)
    if state.get("url"):
        await check_url(guard, state["url"])
    server_id, now = new_id(), utcnow()
    secrets = secrets_of(state)
    token = await encrypt(session, kek, principal.tenant_id, server_id, secrets)
    host = credential_host(state)
    row = await _write_row(
        session,
        insert(t).values(
            id=server_id,
            tenant_id=principal.tenant_id,
            name=state["name"],
            transport=state["transport"],
            url=state.get("url"),
            command=state.get("command"),
            args=list(state.get("args") or []),
            secrets=token,
            secret_info=secret_info(secrets),
            credential_host=host,
            enabled=state["enabled"],
            approval=state["approval"],
            tool_approval=dict(state.get("tool_approval") or {}),
            allowed_tools=state.get("allowed_tools"),
            call_timeout_s=state["call_timeout_s"],
            version=1,
            created_by=principal.user_id,
            created_at=now,
            updated_at=now,
        ),
    )
    created = ev.McpServerCreated(
        mcp_server_id=server_id,
        name=row.name,
        transport=row.transport,
        host=host,
        command=row.command,
        secrets=sorted(secrets),
    )
    await record(PostgresEventStore(session), ev.server_stream(server_id), created, meta)
    await acl.add_owner(session, principal, ENTITY, server_id, meta)
    return server_of(row)


def _state_of(server: Server, secrets: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": server.name,
        "transport": server.transport,
        "url": server.url,
        "headers": dict(secrets.get("headers") or {}),
        "bearer_token": secrets.get("bearer_token") or None,
        "command": server.command,
        "args": list(server.args),
        "env": dict(secrets.get("env") or {}),
        "enabled": server.enabled,
        "approval": server.approval,
        "tool_approval": dict(server.tool_approval),
        "allowed_tools": server.allowed_tools,
        "call_timeout_s": server.call_timeout_s,
    }


def _normal(field: str, value: Any) -> Any:
    """Empty and absent secrets and args compare equal."""
    if field in ("headers", "env", "tool_approval"):
        return dict(value or {})
    if field == "args":
        return list(value or [])
    return (value or None) if field == "bearer_token" else value


async def update(
    session: AsyncSession,
    principal: Principal,
    meta: EventMetadata,
    server_id: uuid.UUID,
    *,
    kek: Kek,
    guard: OutboundGuard,
    changes: Mapping[str, Any],
    precondition: Callable[[Server], None],
) -> tuple[Server, bool]:
    """Apply the fields present in ``changes`` (``None`` clears); ``(server, changed?)``.

    Changing the transport clears the old transport's fields that were not sent. Moving an HTTP
    server to another host needs its stored headers and bearer token sent again (or cleared).
    """
    current = await load(session, principal, server_id, "update", lock=True)
    precondition(current)
    target = changes.get("transport", current.transport)
    if current.transport == "stdio" or target == "stdio":
        require_stdio_admin(principal)
    secrets = await decrypt(session, kek, current)
    before = _state_of(current, secrets)
    state = dict(before)
    if target != current.transport:
        dropped = STDIO_FIELDS if target in HTTP_TRANSPORTS else HTTP_FIELDS
        if (current.transport in HTTP_TRANSPORTS) != (target in HTTP_TRANSPORTS):
            for name in dropped:
                state[name] = _normal(name, None)
    state.update(changes)
    if "name" in changes:
        state["name"] = state["name"].strip() or state["name"]
    changed = [f for f in FIELDS if _normal(f, state.get(f)) != _normal(f, before.get(f))]
    if not changed:
        return current, False
    validate_shape(state)
    if "url" in changed and state.get("url"):
        await check_url(guard, state["url"])
    new_host = credential_host(state)
    stored_http = [f for f in HTTP_SECRETS if _normal(f, before.get(f))]
    if current.credential_host is not None and stored_http and new_host != current.credential_host:
        missing = sorted(set(stored_http) - set(changes))
        if new_host is not None and missing:
            raise CredentialsHostMismatch(
                f"The stored secrets belong to {current.credential_host}. Send {', '.join(missing)} again"
                f" (or null to clear) when moving the server to {new_host}."
            )
    version = current.version + 1
    values: dict[str, Any] = {
        "name": state["name"],
        "transport": state["transport"],
        "url": state.get("url"),
        "command": state.get("command"),
        "args": list(state.get("args") or []),
        "enabled": state["enabled"],
        "approval": state["approval"],
        "tool_approval": dict(state.get("tool_approval") or {}),
        "allowed_tools": state.get("allowed_tools"),
        "call_timeout_s": state["call_timeout_s"],
        "credential_host": new_host,
        "version": version,
        "updated_at": utcnow(),
    }
    if any(f in changed for f in SECRET_FIELDS):
        new_secrets = secrets_of(state)
        values["secrets"] = await encrypt(session, kek, current.tenant_id, server_id, new_secrets)
        values["secret_info"] = secret_info(new_secrets)
    row = await _write_row(session, sql_update(t).where(t.c.id == server_id).values(**values))
    updated = ev.McpServerUpdated(mcp_server_id=server_id, changed=changed, version=version)
    await record(PostgresEventStore(session), ev.server_stream(server_id), updated, meta)
    return server_of(row), True


async def delete(
    session: AsyncSession,
    principal: Principal,
    meta: EventMetadata,
    server_id: uuid.UUID,
    *,
    precondition: Callable[[Server], None],
) -> None:
    current = await load(session, principal, server_id, "delete", lock=True)
    precondition(current)
    await session.execute(sql_delete(t).where(t.c.id == server_id))
    await acl.remove_all(session, ENTITY, server_id)
    deleted = ev.McpServerDeleted(mcp_server_id=server_id, version=current.version)
    await record(PostgresEventStore(session), ev.server_stream(server_id), deleted, meta)


async def record_refresh(
    session: AsyncSession, meta: EventMetadata, server_id: uuid.UUID, tools: Sequence[str]
) -> None:
    refreshed = ev.McpServerToolsRefreshed(mcp_server_id=server_id, tools=sorted(tools))
    await record(PostgresEventStore(session), ev.server_stream(server_id), refreshed, meta)
