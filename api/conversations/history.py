"""A conversation's history: the messages of its current branch and its domain events (read-only)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from sqlalchemy import select

from api.conversations.schemas import ConversationEvent, ConversationEventList, MessageList
from api.conversations.support import (
    ENTITY,
    NOT_FOUND,
    ConversationId,
    PositionCursor,
    VersionCursor,
    conversation_row,
    message_schema,
)
from api.pagination import CursorParam, LimitParam, decode_cursor, page_response, paginate
from api.services import Services
from domain.chat.errors import ConversationNotFound
from domain.chat.events import stream_id
from domain.shared.principal import Principal
from infra.access import acl
from infra.db.tables.chat import messages as mt
from infra.eventstore.postgres import PostgresEventStore


class ConversationHistoryController(Controller):
    path = "/conversations"
    tags = ["conversations"]
    opt = {"scope": "conversations"}

    @get(
        "/{conversation_id:str}/messages",
        operation_id="ListConversationMessages",
        summary="List the messages of the conversation's current branch, oldest first",
        responses=NOT_FOUND,
    )
    async def list_messages(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        conversation_id: ConversationId,
        limit: LimitParam = 20,
        cursor: CursorParam = None,
    ) -> Response[MessageList]:
        query = (
            select(mt)
            .where(mt.c.conversation_id == conversation_id, mt.c.in_branch.is_(True))
            .order_by(mt.c.position)
            .limit(limit + 1)
        )
        if cursor is not None:
            query = query.where(mt.c.position > decode_cursor(cursor, PositionCursor).position)
        async with services.db.read() as session:
            await acl.require(session, principal, ENTITY, conversation_id, "read", ConversationNotFound)
            await conversation_row(session, conversation_id)
            rows = (await session.execute(query)).all()
        page, has_more, next_cursor = paginate(rows, limit, lambda r: PositionCursor(r.position))
        body = MessageList(data=[message_schema(r) for r in page], has_more=has_more, next_cursor=next_cursor)
        return page_response(body, request, limit, services.settings.http.public_url)

    @get(
        "/{conversation_id:str}/events",
        operation_id="ListConversationEvents",
        summary="List the conversation's domain events (its history), oldest first",
        responses=NOT_FOUND,
    )
    async def list_events(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        conversation_id: ConversationId,
        limit: LimitParam = 20,
        cursor: CursorParam = None,
    ) -> Response[ConversationEventList]:
        after = 0 if cursor is None else decode_cursor(cursor, VersionCursor).version
        async with services.db.read() as session:
            await acl.require(session, principal, ENTITY, conversation_id, "read", ConversationNotFound)
            await conversation_row(session, conversation_id)
            recorded = await PostgresEventStore(session).read_stream(
                stream_id(conversation_id), from_version=max(after, 0) + 1, limit=limit + 1
            )
        page, has_more, next_cursor = paginate(recorded, limit, lambda e: VersionCursor(e.version))
        data = [
            ConversationEvent(
                id=e.event_id,
                type=e.type_id,
                version=e.version,
                actor=e.metadata.actor,
                request_id=e.metadata.request_id,
                data=msgspec.to_builtins(e.payload),
                created_at=e.recorded_at,
            )
            for e in page
        ]
        body = ConversationEventList(data=data, has_more=has_more, next_cursor=next_cursor)
        return page_response(body, request, limit, services.settings.http.public_url)
