"""POST /api/v1/conversations/{id}/messages (and ``/messages/stream``): post a user message and
start the assistant turn that answers it, as a ``chat`` run.

One write transaction checks the caller's editor role, decides ``domain.chat.turns.post_message``
(409 ``conversation_busy`` while a turn runs, 409 ``conversation_archived``), resolves the
conversation's model (422 ``model_not_set`` without one; the model's own problems such as
``model_disabled`` are answered here too, before anything runs), appends the user message and the
started assistant turn, and inserts the queued run. After commit the run starts in this process
(``infra.chat.turn.TurnWork`` on the ``RunRunner``). ``/messages`` answers 202 with the message and
the run (follow it on ``GET /runs/{id}/events``); ``/messages/stream`` answers with that same SSE
stream directly.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter
from litestar.response import Stream
from msgspec import Meta
from sqlalchemy import select

from api.context import event_metadata
from api.conversations.schemas import Message
from api.conversations.support import ENTITY, checked, message_schema
from api.errors import ApiError
from api.idempotency import IdempotencyKeyHeader, idempotent
from api.prompts.controller import caller_scope
from api.runs.controller import sse_response, to_schema
from api.runs.openapi import RunEventFrame
from api.runs.schemas import Run
from api.services import Services
from domain.chat import turns
from domain.chat.conversation import ConversationState
from domain.chat.conversation import fold as chat_fold
from domain.chat.errors import ConversationNotFound
from domain.chat.limits import CONTENT_MAX
from domain.shared.events import Event
from domain.shared.ids import new_id
from domain.shared.principal import Principal
from infra.access import acl
from infra.chat import commands
from infra.chat.turn import TurnWork
from infra.db.tables.chat import messages as mt
from infra.runs import rows

ConversationId = Annotated[uuid.UUID, PathParameter(description="The conversation's id (UUID).")]


class MessagePost(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A user message; the assistant's answer streams as the returned run's events."""

    content: Annotated[str, Meta(min_length=1, max_length=CONTENT_MAX, description="The message's text.")]


class PostedMessage(msgspec.Struct, kw_only=True):
    """The stored user message and the run answering it (``run.id``: follow ``GET /runs/{id}/events``)."""

    message: Message
    run: Run


_RESPONSES = {
    404: ResponseSpec(None, description="No conversation with this id (`conversation_not_found`)."),
    403: ResponseSpec(None, description="Your role on the conversation does not allow this (`forbidden`)."),
    409: ResponseSpec(
        None,
        description="A turn is running (`conversation_busy`), the conversation is archived"
        " (`conversation_archived`), or the Idempotency-Key is in flight (`idempotency_in_flight`).",
    ),
    422: ResponseSpec(
        None,
        description="The conversation has no model (`model_not_set`), its model cannot answer"
        " (`model_not_found`, `model_disabled`, `provider_disabled`), or the Idempotency-Key was used"
        " for another request.",
    ),
}


Decide = Callable[[ConversationState, uuid.UUID], Sequence[Event]]
"""A turn-starting decision: the conversation's state and the new run's id -> the events to append."""


async def start_turn(
    request: Request[Any, Any, Any],
    services: Services,
    principal: Principal,
    conversation_id: uuid.UUID,
    decide: Decide,
    *,
    message_id: uuid.UUID,
    assistant_id: uuid.UUID,
) -> PostedMessage:
    """Start an assistant turn the way every chat route does: in one write transaction check the
    caller's editor role, ``decide`` (first with a placeholder run id, so rejections come before
    anything is resolved or stored), resolve the conversation's model, insert the queued run, append
    the events; after commit start ``TurnWork`` answering with message ``assistant_id``. Answers
    message ``message_id`` (read back from the read model) and the run."""
    meta = event_metadata(request, principal)
    async with services.db.write() as session:
        await acl.require(session, principal, ENTITY, conversation_id, "update", ConversationNotFound)
        loaded = await commands.load_conversation(session, conversation_id)
        if loaded.state.status in ("none", "deleted"):
            raise ConversationNotFound()
        state = loaded.state
        checked(lambda: decide(state, new_id()))
        model_id = state.model_id
        if model_id is None:
            raise ApiError(422, "model_not_set", "The conversation has no model: set its model_id first.")
        model, info = await services.llm_registry().chat_model(session, principal, model_id)
        runner = services.runs()
        run = await rows.create_run(
            session,
            tenant_id=principal.tenant_id,
            kind="chat",
            conversation_id=conversation_id,
            created_by=principal.user_id,
            claimed_by=runner,
        )
        run_id = run.id
        events = decide(state, run_id)
        await commands.append(session, conversation_id, loaded, events, meta)
        row = (await session.execute(select(mt).where(mt.c.id == message_id))).one()
    work = TurnWork(
        db=services.db,
        usage_sink=services.usage(),
        principal=principal,
        conversation_id=conversation_id,
        message_id=assistant_id,
        model=model,
        info=info,
        meta=msgspec.structs.replace(meta, causation_id=str(run_id)),
        gateway=services.mcp_gateway() if state.tools.mcp_server_ids else None,
        posted=chat_fold(events, state),
        max_tool_rounds=services.settings.chat_max_tool_rounds,
        approval_timeout_s=services.settings.approval_timeout_s,
    )
    runner.start(run_id, work, claimed=run)
    return PostedMessage(message=message_schema(row), run=to_schema(run))


async def _post(
    request: Request[Any, Any, Any],
    services: Services,
    principal: Principal,
    conversation_id: uuid.UUID,
    data: MessagePost,
) -> PostedMessage:
    message_id, assistant_id = new_id(), new_id()
    return await start_turn(
        request,
        services,
        principal,
        conversation_id,
        lambda state, run_id: turns.post_message(
            state, message_id=message_id, content=data.content, run_id=run_id, assistant_message_id=assistant_id
        ),
        message_id=message_id,
        assistant_id=assistant_id,
    )


class ConversationTurnController(Controller):
    path = "/conversations"
    tags = ["conversations"]
    opt = {"scope": "conversations"}

    @post(
        "/{conversation_id:str}/messages",
        operation_id="PostConversationMessage",
        summary="Post a user message; the assistant's answer runs as a chat run (202)",
        status_code=202,
        middleware=[idempotent(scope_of=caller_scope)],
        response_headers=[ResponseHeader(name="Location", description="The run's URL.", documentation_only=True)],
        responses=_RESPONSES,
    )
    async def post_message(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        conversation_id: ConversationId,
        data: JSONBody[MessagePost],
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response[PostedMessage]:
        posted = await _post(request, services, principal, conversation_id, data)
        location = f"/api/v1/runs/{posted.run.id}"
        return Response(posted, status_code=202, headers={"Location": location})

    @post(
        "/{conversation_id:str}/messages/stream",
        operation_id="PostConversationMessageStream",
        summary="Post a user message and stream the assistant's answer (SSE, the run's events)",
        status_code=200,
        media_type="text/event-stream",
        middleware=[idempotent(scope_of=caller_scope)],
        response_headers=[
            ResponseHeader(name="X-Run-Id", description="The id of the run being streamed.", documentation_only=True)
        ],
        responses={
            200: ResponseSpec(
                RunEventFrame,
                media_type="text/event-stream",
                generate_examples=False,
                description="The run's server-sent events, exactly as `GET /runs/{id}/events` sends them;"
                " the `X-Run-Id` header names the run (resume there after a disconnect).",
            ),
            **_RESPONSES,
        },
    )
    async def post_message_stream(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        conversation_id: ConversationId,
        data: JSONBody[MessagePost],
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Stream:
        posted = await _post(request, services, principal, conversation_id, data)
        stream = await sse_response(services, posted.run.id, 0, finished=False)
        stream.headers["X-Run-Id"] = str(posted.run.id)
        return stream
