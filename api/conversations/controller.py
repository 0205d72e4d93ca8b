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
from typing import Any

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody
from msgspec import UnsetType
from sqlalchemy import func, select, text

from api.access.acl_routes import acl_controller
from api.context import event_metadata, mark_unchanged
from api.conversations.schemas import (
    Conversation,
    ConversationCreate,
    ConversationList,
    ConversationUpdate,
)
from api.conversations.support import (
    CONFLICT,
    ENTITY,
    ETAG_HEADER,
    FORBIDDEN,
    NOT_FOUND,
    PRECONDITION,
    ArchivedParam,
    ConversationId,
    SearchParam,
    check_model,
    check_tools,
    checked,
    conversation_row,
    conversation_schema,
    tool_settings,
    with_etag,
)
from api.errors import ApiError
from api.etag import IfMatchHeader, IfNoneMatchHeader, check_if_match, etag, is_not_modified
from api.idempotency import IdempotencyKeyHeader, idempotent
from api.pagination import CursorParam, IdCursor, LimitParam, decode_cursor, page_response, paginate
from api.problem import FieldError
from api.prompts.controller import caller_scope
from api.services import Services
from domain.chat import conversation as agg
from domain.chat.errors import ConversationNotFound
from domain.chat.events import ToolSettings
from domain.chat.limits import clean_tools
from domain.shared.events import Event
from domain.shared.ids import new_id
from domain.shared.principal import Principal
from infra.access import acl
from infra.chat import commands
from infra.db.tables.chat import conversations as ct
from infra.llm import tenant_settings


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
        tools = tool_settings(data.tools) if data.tools is not None else ToolSettings()
        meta = event_metadata(request, principal)
        async with services.db.write() as session:
            model_id = data.model_id
            if model_id is None:
                model_id = (await tenant_settings.get(session, principal.tenant_id)).default_chat_model_id
            else:
                await check_model(session, principal, model_id)
            events = checked(
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
            await check_tools(session, principal, clean_tools(tools))
            loaded = await commands.load_conversation(session, conversation_id)
            await commands.append(session, conversation_id, loaded, events, meta)
            await acl.add_owner(session, principal, ENTITY, conversation_id, meta)
            row = await conversation_row(session, conversation_id)
        location = f"{request.url.path.rstrip('/')}/{conversation_id}"
        return with_etag(conversation_schema(row), 201, {"Location": location})

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
        body = ConversationList(data=[conversation_schema(r) for r in page], has_more=has_more, next_cursor=next_cursor)
        return page_response(body, request, limit, services.settings.http.public_url)

    @get(
        "/{conversation_id:str}",
        operation_id="GetConversation",
        summary="Get a conversation",
        response_headers=[ETAG_HEADER],
        responses={304: ResponseSpec(None, description="Not modified (If-None-Match)."), **NOT_FOUND},
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
            row = await conversation_row(session, conversation_id)
        if is_not_modified(if_none_match, row.version):
            not_modified: Response[Any] = Response(None, status_code=304, headers={"ETag": etag(row.version)})
            return not_modified
        return with_etag(conversation_schema(row))

    @patch(
        "/{conversation_id:str}",
        operation_id="UpdateConversation",
        summary="Change the title, system prompt, model or tool settings",
        response_headers=[ETAG_HEADER],
        responses={**NOT_FOUND, **FORBIDDEN, **PRECONDITION, **CONFLICT},
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
                events += checked(lambda: agg.change_title(state, title))
            system_prompt: str | UnsetType | None = data.system_prompt
            model_id: uuid.UUID | UnsetType = data.model_id
            if not isinstance(system_prompt, UnsetType) or not isinstance(model_id, UnsetType):
                if not isinstance(model_id, UnsetType) and model_id != state.model_id:
                    await check_model(session, principal, model_id)
                events += checked(lambda: agg.change_settings(state, system_prompt=system_prompt, model_id=model_id))
            if not isinstance(data.tools, UnsetType):
                tools = tool_settings(data.tools)
                events += checked(lambda: agg.change_tools(state, tools))
                await check_tools(session, principal, clean_tools(tools))
            if not events:
                mark_unchanged(request)
            await commands.append(session, conversation_id, loaded, events, meta)
            row = await conversation_row(session, conversation_id)
        return with_etag(conversation_schema(row))

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
            return conversation_schema(await conversation_row(session, conversation_id))

    @post(
        "/{conversation_id:str}/archive",
        operation_id="ArchiveConversation",
        summary="Archive a conversation (read-only and hidden from lists until restored)",
        status_code=200,
        response_headers=[ETAG_HEADER],
        responses={**NOT_FOUND, **FORBIDDEN, **PRECONDITION, **CONFLICT},
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
        return with_etag(body)

    @post(
        "/{conversation_id:str}/restore",
        operation_id="RestoreConversation",
        summary="Restore an archived conversation",
        status_code=200,
        response_headers=[ETAG_HEADER],
        responses={**NOT_FOUND, **FORBIDDEN, **PRECONDITION, **CONFLICT},
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
        return with_etag(body)

    @delete(
        "/{conversation_id:str}",
        operation_id="DeleteConversation",
        summary="Delete a conversation (owner only)",
        status_code=204,
        responses={**NOT_FOUND, **FORBIDDEN, **PRECONDITION, **CONFLICT},
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
