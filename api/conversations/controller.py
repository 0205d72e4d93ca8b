"""/api/v1/conversations: create, list (full-text ``?q=``), get, patch, archive, restore and delete
conversations, read their messages and their domain events, and share them (``/acl``).

Every change is a command on the event-sourced aggregate (``domain.chat.conversation``) run in one
write transaction that appends its events and applies them to the read model before commit
(``infra.chat.commands``), so reads right after a write see it. Reads come from the read model.
Access follows the conversation's ACL: viewers read, editors change and archive, managers share,
the owner deletes; a conversation the caller has no role on is 404 ``conversation_not_found``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter, QueryParameter
from msgspec import UnsetType
from sqlalchemy import Row, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from api.access.acl_routes import acl_controller
from api.context import event_metadata, mark_unchanged
from api.conversations.schemas import (
    Conversation,
    ConversationCreate,
    ConversationList,
    ConversationTools,
    ConversationUpdate,
    Message,
    MessageError,
    MessageToolCall,
    MessageUsage,
)
from api.errors import ApiError
from api.etag import IfMatchHeader, IfNoneMatchHeader, check_if_match, etag, is_not_modified
from api.idempotency import IdempotencyKeyHeader, idempotent
from api.pagination import CursorParam, IdCursor, LimitParam, decode_cursor, page_response, paginate
from api.problem import FieldError
from api.prompts.controller import caller_scope
from api.services import Services
from domain.chat import conversation as agg
from domain.chat.errors import ConversationNotFound, InvalidConversation
from domain.chat.events import ToolSettings
from domain.chat.limits import clean_tools
from domain.shared.events import Event
from domain.shared.ids import new_id
from domain.shared.principal import Principal
from infra.access import acl
from infra.chat import commands
from infra.db.tables.chat import conversations as ct
from infra.db.tables.llm import models
from infra.db.tables.mcp import mcp_servers
from infra.llm import tenant_settings
from infra.mcp.servers import ENTITY as MCP_ENTITY

ENTITY = "conversation"
Q_MAX = 200

ConversationId = Annotated[uuid.UUID, PathParameter(description="The conversation's id (UUID).")]
SearchParam = Annotated[
    str | None,
    QueryParameter(
        name="q", max_length=Q_MAX, description="Full-text search over titles and message text (all words must match)."
    ),
]
ArchivedParam = Annotated[
    bool, QueryParameter(name="archived", description="Include archived conversations (hidden by default).")
]

_ETAG_HEADER = ResponseHeader(
    name="ETag", description="Strong ETag of the conversation's version.", documentation_only=True
)
_NOT_FOUND = {404: ResponseSpec(None, description="No conversation with this id (`conversation_not_found`).")}
_FORBIDDEN = {403: ResponseSpec(None, description="Your role on the conversation does not allow this (`forbidden`).")}
_PRECONDITION = {412: ResponseSpec(None, description="If-Match does not name the current version.")}
_CONFLICT = {
    409: ResponseSpec(
        None,
        description="A turn is running (`conversation_busy`), the conversation is archived"
        " (`conversation_archived`) or not archived (`conversation_not_archived`).",
    )
}


class PositionCursor(msgspec.Struct, array_like=True, frozen=True):
    position: int


class VersionCursor(msgspec.Struct, array_like=True, frozen=True):
    version: int


def _to_schema(row: Row[Any]) -> Conversation:
    return Conversation(
        id=row.id,
        title=row.title,
        system_prompt=row.system_prompt,
        model_id=row.model_id,
        tools=msgspec.convert(row.tools or {}, ConversationTools),
        status=row.status,
        owner_id=row.owner_id,
        parent_conversation_id=row.parent_conversation_id,
        forked_from_message_id=row.forked_from_message_id,
        last_message_at=row.last_message_at,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _message(row: Row[Any]) -> Message:
    return Message(
        id=row.id,
        conversation_id=row.conversation_id,
        position=row.position,
        role=row.role,
        content=row.content,
        status=row.status,
        run_id=row.run_id,
        model_id=row.model_id,
        usage=None if row.usage is None else msgspec.convert(row.usage, MessageUsage),
        error=None if row.error is None else msgspec.convert(row.error, MessageError),
        finish_reason=row.finish_reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
        tool_calls=msgspec.convert(row.tool_calls or [], list[MessageToolCall]),
    )


def _with_etag(
    conversation: Conversation, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response[Conversation]:
    return Response(
        conversation, status_code=status_code, headers={"ETag": etag(conversation.version), **(headers or {})}
    )


def _decide(fn: Callable[[], Sequence[Event]]) -> Sequence[Event]:
    """Run a decide function, turning a broken field rule into a 400 with its JSON Pointer."""
    try:
        return fn()
    except InvalidConversation as exc:
        raise ApiError(
            400,
            "validation_error",
            "The request is not valid.",
            errors=[FieldError(detail=exc.detail, code="invalid", pointer=exc.pointer)],
        ) from None


def _tools(body: ConversationTools) -> ToolSettings:
    return ToolSettings(mcp_server_ids=list(body.mcp_server_ids), approval=body.approval)


async def _check_model(session: AsyncSession, principal: Principal, model_id: uuid.UUID) -> None:
    kind = await session.scalar(
        select(models.c.kind).where(models.c.id == model_id, models.c.tenant_id == principal.tenant_id)
    )
    if kind != "chat":
        raise ApiError(
            422,
            "model_not_found",
            "model_id must name a chat model of your tenant.",
            errors=[FieldError(detail="No chat model with this id", code="model_not_found", pointer="/model_id")],
        )


async def _check_tools(session: AsyncSession, principal: Principal, tools: ToolSettings) -> None:
    if not tools.mcp_server_ids:
        return
    found = set(
        await session.scalars(
            select(mcp_servers.c.id).where(
                mcp_servers.c.id.in_(tools.mcp_server_ids),
                mcp_servers.c.tenant_id == principal.tenant_id,
                acl.visible_ids_clause(principal, MCP_ENTITY, mcp_servers.c.id),
            )
        )
    )
    for index, server_id in enumerate(tools.mcp_server_ids):
        if server_id not in found:
            raise ApiError(
                422,
                "mcp_server_not_found",
                "Every tools.mcp_server_ids entry must name an MCP server you can see.",
                errors=[
                    FieldError(
                        detail="No MCP server with this id",
                        code="mcp_server_not_found",
                        pointer=f"/tools/mcp_server_ids/{index}",
                    )
                ],
            )


async def _row(session: AsyncSession, conversation_id: uuid.UUID) -> Row[Any]:
    row = (await session.execute(select(ct).where(ct.c.id == conversation_id, ct.c.status != "deleted"))).one_or_none()
    if row is None:
        raise ConversationNotFound()
    return row


class ConversationController(Controller):
    path = "/conversations"
    tags = ["conversations"]
    opt = {"scope": "conversations"}

    @post(
        "",
        operation_id="CreateConversation",
        summary="Create a conversation",
        status_code=201,
        middleware=[idempotent(scope_of=caller_scope)],
        response_headers=[
            ResponseHeader(name="Location", description="The new conversation's URL.", documentation_only=True)
        ],
        responses={
            409: ResponseSpec(None, description="The Idempotency-Key is still in flight (`idempotency_in_flight`)."),
            422: ResponseSpec(
                None,
                description="Unknown model (`model_not_found`) or MCP server (`mcp_server_not_found`), or the"
                " Idempotency-Key was used for another request.",
            ),
        },
    )
    async def create_conversation(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        data: JSONBody[ConversationCreate],
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response[Conversation]:
        """Without ``model_id`` the tenant's default chat model is used (none set: no model yet)."""
        conversation_id = new_id()
        tools = _tools(data.tools) if data.tools is not None else ToolSettings()
        meta = event_metadata(request, principal)
        async with services.db.write() as session:
            model_id = data.model_id
            if model_id is None:
                model_id = (await tenant_settings.get(session, principal.tenant_id)).default_chat_model_id
            else:
                await _check_model(session, principal, model_id)
            events = _decide(
                lambda: agg.create(
                    agg.ConversationState(),
                    conversation_id=conversation_id,
                    tenant_id=principal.tenant_id,
                    owner_id=principal.user_id,
                    title=data.title,
                    system_prompt=data.system_prompt,
                    model_id=model_id,
                    tools=tools,
                )
            )
            await _check_tools(session, principal, clean_tools(tools))
            loaded = await commands.load_conversation(session, conversation_id)
            await commands.append(session, conversation_id, loaded, events, meta)
            await acl.add_owner(session, principal, ENTITY, conversation_id, meta)
            row = await _row(session, conversation_id)
        location = f"{request.url.path.rstrip('/')}/{conversation_id}"
        return _with_etag(_to_schema(row), 201, {"Location": location})

    @get("", operation_id="ListConversations", summary="List conversations you own or that are shared with you")
    async def list_conversations(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        limit: LimitParam = 20,
        cursor: CursorParam = None,
        q: SearchParam = None,
        archived: ArchivedParam = False,
    ) -> Response[ConversationList]:
        """Newest first. ``q`` matches every word against the title and the text of the current branch
        (no stemming). Archived conversations are left out unless ``archived=true``."""
        query = (
            select(ct)
            .where(
                ct.c.tenant_id == principal.tenant_id,
                acl.visible_ids_clause(principal, ENTITY, ct.c.id),
                ct.c.status != "deleted",
            )
            .order_by(ct.c.id.desc())
            .limit(limit + 1)
        )
        if not archived:
            query = query.where(ct.c.status != "archived")
        if cursor is not None:
            query = query.where(ct.c.id < decode_cursor(cursor, IdCursor).id)
        if q is not None and q.strip():
            if "\x00" in q:
                raise ApiError(
                    400,
                    "validation_error",
                    "The request is not valid.",
                    errors=[FieldError(detail="Must not contain NUL characters", code="invalid", parameter="q")],
                )
            tsquery = func.plainto_tsquery(text("'simple'::regconfig"), q)
            query = query.where(ct.c.search.op("@@")(tsquery))
        async with services.db.read() as session:
            rows = (await session.execute(query)).all()
        page, has_more, next_cursor = paginate(rows, limit, lambda r: IdCursor(r.id))
        body = ConversationList(data=[_to_schema(r) for r in page], has_more=has_more, next_cursor=next_cursor)
        return page_response(body, request, limit, services.settings.http.public_url)

    @get(
        "/{conversation_id:str}",
        operation_id="GetConversation",
        summary="Get a conversation",
        response_headers=[_ETAG_HEADER],
        responses={304: ResponseSpec(None, description="Not modified (If-None-Match)."), **_NOT_FOUND},
    )
    async def get_conversation(
        self,
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        conversation_id: ConversationId,
        if_none_match: IfNoneMatchHeader = None,
    ) -> Response[Conversation]:
        async with services.db.read() as session:
            await acl.require(session, principal, ENTITY, conversation_id, "read", ConversationNotFound)
            row = await _row(session, conversation_id)
        if is_not_modified(if_none_match, row.version):
            not_modified: Response[Any] = Response(None, status_code=304, headers={"ETag": etag(row.version)})
            return not_modified
        return _with_etag(_to_schema(row))

    @patch(
        "/{conversation_id:str}",
        operation_id="UpdateConversation",
        summary="Change the title, system prompt, model or tool settings",
        response_headers=[_ETAG_HEADER],
        responses={**_NOT_FOUND, **_FORBIDDEN, **_PRECONDITION, **_CONFLICT},
    )
    async def update_conversation(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        conversation_id: ConversationId,
        data: JSONBody[ConversationUpdate],
        if_match: IfMatchHeader = None,
    ) -> Response[Conversation]:
        """Fields left out keep their value; a change that alters nothing keeps the version (no event).
        The title may change while a turn runs; the other settings may not (409 ``conversation_busy``)."""
        meta = event_metadata(request, principal)
        async with services.db.write() as session:
            await acl.require(session, principal, ENTITY, conversation_id, "update", ConversationNotFound)
            loaded = await commands.load_conversation(session, conversation_id)
            if loaded.state.status in ("none", "deleted"):
                raise ConversationNotFound()
            check_if_match(if_match, loaded.version)
            state = loaded.state
            events: list[Event] = []
            if not isinstance(data.title, UnsetType):
                title = data.title
                events += _decide(lambda: agg.change_title(state, title))
            system_prompt: str | UnsetType | None = data.system_prompt
            model_id: uuid.UUID | UnsetType = data.model_id
            if not isinstance(system_prompt, UnsetType) or not isinstance(model_id, UnsetType):
                if not isinstance(model_id, UnsetType) and model_id != state.model_id:
                    await _check_model(session, principal, model_id)
                events += _decide(lambda: agg.change_settings(state, system_prompt=system_prompt, model_id=model_id))
            if not isinstance(data.tools, UnsetType):
                tools = _tools(data.tools)
                events += _decide(lambda: agg.change_tools(state, tools))
                await _check_tools(session, principal, clean_tools(tools))
            if not events:
                mark_unchanged(request)
            await commands.append(session, conversation_id, loaded, events, meta)
            row = await _row(session, conversation_id)
        return _with_etag(_to_schema(row))

    async def _transition(
        self,
        request: Request[Any, Any, Any],
        services: Services,
        principal: Principal,
        conversation_id: uuid.UUID,
        decide: Callable[[agg.ConversationState], Sequence[Event]],
        if_match: str | None = None,
    ) -> Conversation:
        async with services.db.write() as session:
            await acl.require(session, principal, ENTITY, conversation_id, "update", ConversationNotFound)
            loaded = await commands.load_conversation(session, conversation_id)
            if loaded.state.status not in ("none", "deleted"):
                check_if_match(if_match, loaded.version)
            events = decide(loaded.state)
            await commands.append(session, conversation_id, loaded, events, event_metadata(request, principal))
            return _to_schema(await _row(session, conversation_id))

    @post(
        "/{conversation_id:str}/archive",
        operation_id="ArchiveConversation",
        summary="Archive a conversation (read-only and hidden from lists until restored)",
        status_code=200,
        response_headers=[_ETAG_HEADER],
        responses={**_NOT_FOUND, **_FORBIDDEN, **_PRECONDITION, **_CONFLICT},
    )
    async def archive_conversation(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        conversation_id: ConversationId,
        if_match: IfMatchHeader = None,
    ) -> Response[Conversation]:
        body = await self._transition(request, services, principal, conversation_id, agg.archive, if_match)
        return _with_etag(body)

    @post(
        "/{conversation_id:str}/restore",
        operation_id="RestoreConversation",
        summary="Restore an archived conversation",
        status_code=200,
        response_headers=[_ETAG_HEADER],
        responses={**_NOT_FOUND, **_FORBIDDEN, **_PRECONDITION, **_CONFLICT},
    )
    async def restore_conversation(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        conversation_id: ConversationId,
        if_match: IfMatchHeader = None,
    ) -> Response[Conversation]:
        body = await self._transition(request, services, principal, conversation_id, agg.restore, if_match)
        return _with_etag(body)

    @delete(
        "/{conversation_id:str}",
        operation_id="DeleteConversation",
        summary="Delete a conversation (owner only)",
        status_code=204,
        responses={**_NOT_FOUND, **_FORBIDDEN, **_PRECONDITION, **_CONFLICT},
    )
    async def delete_conversation(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        conversation_id: ConversationId,
        if_match: IfMatchHeader = None,
    ) -> None:
        """The messages are removed from the read model; the event history stays in the audit trail."""
        meta = event_metadata(request, principal)
        async with services.db.write() as session:
            await acl.require(session, principal, ENTITY, conversation_id, "delete", ConversationNotFound)
            loaded = await commands.load_conversation(session, conversation_id)
            if loaded.state.status not in ("none", "deleted"):
                check_if_match(if_match, loaded.version)
            await commands.append(session, conversation_id, loaded, agg.delete(loaded.state), meta)
            await acl.remove_all(session, ENTITY, conversation_id)


ConversationAclController = acl_controller(
    collection="conversations",
    id_param="conversation_id",
    entity_type=ENTITY,
    noun="conversation",
    operation_noun="Conversation",
    not_found=ConversationNotFound,
    scope="conversations",
)
