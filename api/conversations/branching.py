"""Branching a conversation: edit a user message, regenerate an assistant message, fork at a message.

``POST /conversations/{id}/messages/{message_id}/edit`` drops the user message and everything after
it from the branch, posts the new text under a new id and starts the turn answering it;
``.../regenerate`` drops an assistant message (and everything after it) and starts a new turn
answering the user message before it. Both need editor on the conversation, run exactly like
``POST /messages`` (``api.conversations.turns.start_turn``) and answer 202 ``{message, run}``: the
new user message for an edit, the new (streaming) assistant message for a regeneration. A message
of the wrong role, or one not in the current branch, is 404 ``message_not_found``.

``POST /conversations/{id}/fork`` copies the branch up to and including ``at_message_id`` into a new
conversation owned by the caller (viewer on the source suffices) under new message ids, with
``parent_conversation_id`` and ``forked_from_message_id`` naming where it came from; the fork's
first event (``chat.conversation_forked.v1``) is its audit record. ``GET /conversations/{id}/forks``
lists the forks of a conversation that the caller can see.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter
from msgspec import Meta
from sqlalchemy import select

from api.context import event_metadata
from api.conversations.schemas import Conversation, ConversationList
from api.conversations.support import (
    ENTITY,
    ETAG_HEADER,
    NOT_FOUND,
    ArchivedParam,
    conversation_row,
    conversation_schema,
    with_etag,
)
from api.conversations.turns import _RESPONSES, PostedMessage, start_turn
from api.idempotency import IdempotencyKeyHeader, idempotent
from api.pagination import CursorParam, IdCursor, LimitParam, decode_cursor, page_response, paginate
from api.prompts.controller import caller_scope
from api.services import Services
from domain.chat import branching, turns
from domain.chat import conversation as agg
from domain.chat.errors import ConversationNotFound
from domain.chat.limits import CONTENT_MAX
from domain.shared.ids import new_id
from domain.shared.principal import Principal
from infra.access import acl
from infra.chat import commands
from infra.db.tables.chat import conversations as ct

ConversationId = Annotated[uuid.UUID, PathParameter(description="The conversation's id (UUID).")]
MessageId = Annotated[uuid.UUID, PathParameter(description="The message's id (UUID).")]

_TURN_RESPONSES = {
    **_RESPONSES,
    404: ResponseSpec(
        None,
        description="No conversation with this id (`conversation_not_found`), or no message of the right"
        " role with this id in its current branch (`message_not_found`).",
    ),
}


class MessageEdit(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The user message's new text; the old message and everything after it leave the branch."""

    content: Annotated[str, Meta(min_length=1, max_length=CONTENT_MAX, description="The message's new text.")]


class ForkCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Where to fork: the fork holds the source's branch up to and including this message."""

    at_message_id: Annotated[uuid.UUID, Meta(description="The last message the fork copies.")]


def _accepted(posted: PostedMessage) -> Response[PostedMessage]:
    return Response(posted, status_code=202, headers={"Location": f"/api/v1/runs/{posted.run.id}"})


class ConversationBranchController(Controller):
    path = "/conversations"
    tags = ["conversations"]
    opt = {"scope": "conversations"}

    @post(
        "/{conversation_id:str}/messages/{message_id:str}/edit",
        operation_id="EditConversationMessage",
        summary="Replace a user message (the branch after it is dropped) and answer the new text (202)",
        status_code=202,
        middleware=[idempotent(scope_of=caller_scope)],
        response_headers=[ResponseHeader(name="Location", description="The run's URL.", documentation_only=True)],
        responses=_TURN_RESPONSES,
    )
    async def edit_message(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        conversation_id: ConversationId,
        message_id: MessageId,
        data: JSONBody[MessageEdit],
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response[PostedMessage]:
        """Answers the new user message (a new id) and the run answering it."""
        new_message_id, assistant_id = new_id(), new_id()
        posted = await start_turn(
            request,
            services,
            principal,
            conversation_id,
            lambda state, run_id: turns.edit(
                state,
                message_id=message_id,
                content=data.content,
                new_message_id=new_message_id,
                run_id=run_id,
                assistant_message_id=assistant_id,
            ),
            message_id=new_message_id,
            assistant_id=assistant_id,
        )
        return _accepted(posted)

    @post(
        "/{conversation_id:str}/messages/{message_id:str}/regenerate",
        operation_id="RegenerateConversationMessage",
        summary="Replace an assistant message (and the branch after it) with a new answer (202)",
        status_code=202,
        middleware=[idempotent(scope_of=caller_scope)],
        response_headers=[ResponseHeader(name="Location", description="The run's URL.", documentation_only=True)],
        responses=_TURN_RESPONSES,
    )
    async def regenerate_message(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        conversation_id: ConversationId,
        message_id: MessageId,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response[PostedMessage]:
        """Answers the new assistant message (status ``streaming``, a new id) and its run."""
        assistant_id = new_id()
        posted = await start_turn(
            request,
            services,
            principal,
            conversation_id,
            lambda state, run_id: turns.regenerate(
                state, message_id=message_id, run_id=run_id, new_message_id=assistant_id
            ),
            message_id=assistant_id,
            assistant_id=assistant_id,
        )
        return _accepted(posted)

    @post(
        "/{conversation_id:str}/fork",
        operation_id="ForkConversation",
        summary="Fork the conversation at a message into a new conversation you own",
        status_code=201,
        middleware=[idempotent(scope_of=caller_scope)],
        response_headers=[
            ETAG_HEADER,
            ResponseHeader(name="Location", description="The fork's URL.", documentation_only=True),
        ],
        responses={
            404: ResponseSpec(
                None,
                description="No conversation with this id (`conversation_not_found`), or no message with"
                " `at_message_id` in its current branch (`message_not_found`).",
            ),
            409: ResponseSpec(
                None,
                description="The conversation is archived (`conversation_archived`), the message is still"
                " being written (`message_not_finished`), or the Idempotency-Key is in flight.",
            ),
            422: ResponseSpec(None, description="The Idempotency-Key was used for another request."),
        },
    )
    async def fork_conversation(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        conversation_id: ConversationId,
        data: JSONBody[ForkCreate],
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response[Conversation]:
        """Viewer on the source suffices; the fork has the source's title, settings and tools, its
        messages get new ids (each remembers its source message), and only the caller has access."""
        fork_id = new_id()
        meta = event_metadata(request, principal)
        async with services.db.write() as session:
            await acl.require(session, principal, ENTITY, conversation_id, "read", ConversationNotFound)
            source = await commands.load_conversation(session, conversation_id)
            agg.require_exists(source.state)
            event = branching.fork(
                source.state,
                conversation_id=fork_id,
                owner_id=principal.user_id,
                at_message_id=data.at_message_id,
                new_id=new_id,
            )
            loaded = await commands.load_conversation(session, fork_id)
            await commands.append(session, fork_id, loaded, [event], meta)
            await acl.add_owner(session, principal, ENTITY, fork_id, meta)
            row = await conversation_row(session, fork_id)
        location = f"/api/v1/conversations/{fork_id}"
        return with_etag(conversation_schema(row), 201, {"Location": location})

    @get(
        "/{conversation_id:str}/forks",
        operation_id="ListConversationForks",
        summary="List the forks of a conversation that you can see, newest first",
        responses={**NOT_FOUND},
    )
    async def list_forks(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        conversation_id: ConversationId,
        limit: LimitParam = 20,
        cursor: CursorParam = None,
        archived: ArchivedParam = False,
    ) -> Response[ConversationList]:
        """Direct forks only (a fork of a fork is listed under its own parent); archived forks are
        left out unless ``archived=true``."""
        query = (
            select(ct)
            .where(
                ct.c.parent_conversation_id == conversation_id,
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
        async with services.db.read() as session:
            await acl.require(session, principal, ENTITY, conversation_id, "read", ConversationNotFound)
            await conversation_row(session, conversation_id)
            rows = (await session.execute(query)).all()
        page, has_more, next_cursor = paginate(rows, limit, lambda r: IdCursor(r.id))
        body = ConversationList(data=[conversation_schema(r) for r in page], has_more=has_more, next_cursor=next_cursor)
        return page_response(body, request, limit, services.settings.http.public_url)
