"""/api/v1/audit-events: the audit trail of the caller's tenant, for admins.

Rows come from the ``audit_log`` read model (one row per event, fed by the audit projection), so an
event shows up here once the projection has caught up. The list is newest first and cursor-paged by
event position; the export streams the same filtered rows oldest first as NDJSON, in batches.
Reading the trail needs the ``view_audit`` system permission (admins hold it); others get 403.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter
from litestar.response import Stream
from sqlalchemy import ColumnElement, Row, and_, select

from api.errors import ApiError
from api.pagination import CursorParam, LimitParam, Page, decode_cursor, page_response, paginate
from api.services import Services
from domain.shared.principal import Principal
from infra.db.tables.eventstore import audit_log as t

EXPORT_BATCH = 500
NDJSON = "application/x-ndjson"

ActorFilter = Annotated[
    str | None, QueryParameter(name="actor", description="Only events of this actor (`user:<id>`).", max_length=200)
]
ActionFilter = Annotated[
    str | None,
    QueryParameter(
        name="action", description="Only events of this action (`identity.user_registered`).", max_length=200
    ),
]
EntityTypeFilter = Annotated[
    str | None, QueryParameter(name="entity_type", description="Only events about this kind of entity.", max_length=100)
]
EntityIdFilter = Annotated[
    str | None, QueryParameter(name="entity_id", description="Only events about this entity id.", max_length=200)
]
SinceFilter = Annotated[
    datetime | None,
    QueryParameter(name="since", description="Only events recorded at or after this RFC 3339 time (UTC if no offset)."),
]
UntilFilter = Annotated[
    datetime | None,
    QueryParameter(name="until", description="Only events recorded before this RFC 3339 time (UTC if no offset)."),
]

_FORBIDDEN = {
    403: ResponseSpec(None, description="The caller is neither an admin nor holds `view_audit` (`forbidden`).")
}


class AuditEvent(msgspec.Struct, kw_only=True):
    """One audited event. ``id`` is the event's id; ``position`` its place in the global event order."""

    id: uuid.UUID
    object: Literal["audit_event"] = "audit_event"
    position: int
    action: str
    entity_type: str
    entity_id: str
    actor: str | None
    tenant_id: str | None
    ip: str | None
    user_agent: str | None
    changed: list[str] | None
    """The fields a change touched, for events that change an existing entity."""
    data: dict[str, Any] | None
    """The event's payload (never holds secret values)."""
    request_id: str | None
    correlation_id: str | None
    stream_id: str
    type_id: str
    recorded_at: datetime
    created_at: datetime


class AuditEventList(Page[AuditEvent], kw_only=True):
    data: list[AuditEvent]


class PositionCursor(msgspec.Struct, array_like=True, frozen=True):
    """The position after a row of the audit list (newest first)."""

    position: int


def _to_schema(row: Row[Any]) -> AuditEvent:
    return AuditEvent(
        id=row.event_id,
        position=row.position,
        action=row.action,
        entity_type=row.entity_type,
        entity_id=row.entity_id,
        actor=row.actor,
        tenant_id=row.tenant_id,
        ip=row.ip,
        user_agent=row.user_agent,
        changed=list(row.changed) if row.changed is not None else None,
        data=row.data,
        request_id=row.request_id,
        correlation_id=row.correlation_id,
        stream_id=row.stream_id,
        type_id=row.type_id,
        recorded_at=row.recorded_at,
        created_at=row.recorded_at,
    )


def _require_admin(principal: Principal) -> None:
    if not principal.has("view_audit"):
        raise ApiError(403, "forbidden", "Reading the audit trail needs the view_audit permission.")


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _conditions(
    principal: Principal,
    actor: str | None,
    action: str | None,
    entity_type: str | None,
    entity_id: str | None,
    since: datetime | None,
    until: datetime | None,
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [t.c.tenant_id == str(principal.tenant_id)]
    if actor is not None:
        where.append(t.c.actor == actor)
    if action is not None:
        where.append(t.c.action == action)
    if entity_type is not None:
        where.append(t.c.entity_type == entity_type)
    if entity_id is not None:
        where.append(t.c.entity_id == entity_id)
    if since is not None:
        where.append(t.c.recorded_at >= _utc(since))
    if until is not None:
        where.append(t.c.recorded_at < _utc(until))
    return where


class AuditController(Controller):
    path = "/audit-events"
    tags = ["audit"]
    opt = {"scope": "audit"}

    @get("", operation_id="ListAuditEvents", summary="List audit events, newest first", responses=_FORBIDDEN)
    async def list_audit_events(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        limit: LimitParam = 20,
        cursor: CursorParam = None,
        actor: ActorFilter = None,
        action: ActionFilter = None,
        entity_type: EntityTypeFilter = None,
        entity_id: EntityIdFilter = None,
        since: SinceFilter = None,
        until: UntilFilter = None,
    ) -> Response[AuditEventList]:
        _require_admin(principal)
        where = _conditions(principal, actor, action, entity_type, entity_id, since, until)
        if cursor is not None:
            where.append(t.c.position < decode_cursor(cursor, PositionCursor).position)
        query = select(t).where(and_(*where)).order_by(t.c.position.desc()).limit(limit + 1)
        async with services.db.read() as session:
            rows = (await session.execute(query)).all()
        page, has_more, next_cursor = paginate(rows, limit, lambda r: PositionCursor(r.position))
        body = AuditEventList(data=[_to_schema(r) for r in page], has_more=has_more, next_cursor=next_cursor)
        return page_response(body, request, limit, services.settings.http.public_url)

    @get(
        "/export",
        operation_id="ExportAuditEvents",
        summary="Export audit events as NDJSON, oldest first",
        media_type=NDJSON,
        responses={
            200: ResponseSpec(
                AuditEvent,
                description="One `audit_event` object (as in the list) per line, oldest first.",
                media_type=NDJSON,
                generate_examples=False,
            ),
            **_FORBIDDEN,
        },
    )
    async def export_audit_events(
        self,
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        actor: ActorFilter = None,
        action: ActionFilter = None,
        entity_type: EntityTypeFilter = None,
        entity_id: EntityIdFilter = None,
        since: SinceFilter = None,
        until: UntilFilter = None,
    ) -> Stream:
        """One JSON object per line (the list's items), streamed in batches; filters as in the list."""
        _require_admin(principal)
        where = _conditions(principal, actor, action, entity_type, entity_id, since, until)
        db = services.db

        async def lines() -> AsyncIterator[bytes]:
            after = -1
            while True:
                query = select(t).where(and_(*where, t.c.position > after)).order_by(t.c.position).limit(EXPORT_BATCH)
                async with db.read() as session:
                    rows = (await session.execute(query)).all()
                if not rows:
                    return
                yield b"".join(msgspec.json.encode(_to_schema(r)) + b"\n" for r in rows)
                if len(rows) < EXPORT_BATCH:
                    return
                after = rows[-1].position

        return Stream(
            lines(),
            media_type=NDJSON,
            headers={"Content-Disposition": 'attachment; filename="audit-events.ndjson"'},
        )
