"""/api/v1/runs: a run's state, its SSE event stream (CONTRACT.md, Streaming), and cancel.

A run is visible to whoever may read its conversation (ACL entity ``conversation``) or, for a run
without a conversation, to its creator; anything else is the same 404 ``run_not_found``.
Cancelling needs the editor role on the conversation. The event stream is served straight from the
run's Redis stream: the handler holds no database connection while streaming, and nothing buffers
it (our ASGI middleware passes body messages through; idempotency applies only to POSTs).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter, PathParameter, QueryParameter
from litestar.response import Stream
from sqlalchemy.ext.asyncio import AsyncSession

from api.context import event_metadata
from api.errors import ApiError
from api.runs.openapi import RunEventFrame
from api.runs.schemas import Run, RunError
from api.services import Services
from domain.runs.audit import RunCancelRequested, run_stream
from domain.shared.authz import Action
from domain.shared.errors import Conflict, NotFound
from domain.shared.principal import Principal
from infra.access import acl
from infra.eventstore.postgres import PostgresEventStore
from infra.identity.accounts import record
from infra.runs import rows
from infra.runs import runner as rr
from infra.runs.stream import Frame, StreamExpired

PING_INTERVAL_S = 15.0
"""Seconds without an event before a ``: ping`` comment (module constant; tests patch it)."""

MAX_SEQ = 10**15
RunId = Annotated[uuid.UUID, PathParameter(description="The run's id (UUID).")]
AfterParam = Annotated[
    int | None,
    QueryParameter(
        name="after",
        ge=0,
        le=MAX_SEQ,
        description="Replay events with seq > after (for clients that cannot set Last-Event-ID).",
    ),
]
LastEventIdHeader = Annotated[
    str | None,
    HeaderParameter(name="Last-Event-ID", description="The last seq received: replay resumes after it."),
]


class RunNotFound(NotFound):
    """No run with this id visible to you."""

    code = "run_not_found"


class RunFinished(Conflict):
    """The run has already finished."""

    code = "run_finished"


_NOT_FOUND = {404: ResponseSpec(None, description="No run with this id visible to you (`run_not_found`).")}


async def visible_run(session: AsyncSession, principal: Principal, run_id: uuid.UUID, action: Action) -> rows.Run:
    """The run if the caller may ``action`` it: through its conversation's ACL, else as its creator."""
    run = await rows.load_run(session, run_id)
    if run is None or run.tenant_id != principal.tenant_id:
        raise RunNotFound()
    if run.conversation_id is not None:
        await acl.require(session, principal, "conversation", run.conversation_id, action, RunNotFound)
    elif run.created_by != principal.user_id:
        raise RunNotFound()
    return run


def to_schema(run: rows.Run) -> Run:
    duration = None
    if run.started_at is not None and run.finished_at is not None:
        duration = int((run.finished_at - run.started_at).total_seconds() * 1000)
    error = None
    if run.error:
        e = run.error
        error = RunError(
            type=str(e.get("type", "about:blank")),
            title=str(e.get("title", "")),
            status=int(e.get("status", 500)),
            code=str(e.get("code", "error")),
            detail=e.get("detail"),
        )
    return Run(
        id=run.id,
        kind=run.kind,
        status=run.status,
        conversation_id=run.conversation_id,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        duration_ms=duration,
        last_seq=run.last_seq,
        cancel_requested_at=run.cancel_requested_at,
        usage=run.usage,
        error=error,
    )


def sse_frame(frame: Frame) -> bytes:
    """``event: <type>`` / ``id: <seq>`` / ``data: <one-line JSON>`` and a blank line."""
    return b"event: %s\nid: %d\ndata: %s\n\n" % (frame.type.encode(), frame.seq, frame.data)


PING = b": ping\n\n"


def _resume_position(after: int | None, last_event_id: str | None) -> int:
    if last_event_id is not None and last_event_id.strip():
        raw = last_event_id.strip()
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 16 or int(raw) > MAX_SEQ:
            raise ApiError(400, "invalid_last_event_id", "Last-Event-ID must be a non-negative integer (a seq).")
        return int(raw)
    return after or 0


async def sse_response(services: Services, run_id: uuid.UUID, position: int = 0, *, finished: bool) -> Stream:
    """The run's events after ``position`` as a server-sent event stream (replay, then live, until
    the terminal event); 410 ``stream_expired`` when that position is no longer retained."""
    streams = services.run_streams()
    try:
        if position or finished:  # from the start of a live run nothing can have expired yet
            await streams.check(run_id, position, finished=finished)
    except StreamExpired:
        raise ApiError(410, "stream_expired", StreamExpired.__doc__ or "stream expired") from None
    batches = streams.read_batches(run_id, position, finished=finished, idle_s=PING_INTERVAL_S)

    async def body() -> AsyncIterator[bytes]:
        try:
            async for batch in batches:
                yield PING if batch is None else b"".join(sse_frame(frame) for frame in batch)
        finally:
            await batches.aclose()

    return Stream(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class RunController(Controller):
    path = "/runs"
    tags = ["runs"]
    opt = {"scope": "runs"}

    @get(
        "/{run_id:str}", operation_id="GetRun", summary="Get a run: status, kind, timings, usage", responses=_NOT_FOUND
    )
    async def get_run(
        self, services: NamedDependency[Services], principal: NamedDependency[Principal], run_id: RunId
    ) -> Run:
        async with services.db.read() as session:
            return to_schema(await visible_run(session, principal, run_id, "read"))

    @get(
        "/{run_id:str}/events",
        operation_id="StreamRunEvents",
        summary="Stream a run's events (SSE): replay after a position, then live, until its terminal event",
        media_type="text/event-stream",
        responses={
            200: ResponseSpec(
                RunEventFrame,
                media_type="text/event-stream",
                generate_examples=False,
                description="Server-sent events: `event: <type>`, `id: <seq>`, `data: <RunEvent JSON>`;"
                " a `: ping` comment every 15 s; closes after the terminal event.",
            ),
            **_NOT_FOUND,
            410: ResponseSpec(None, description="The requested position is no longer retained (`stream_expired`)."),
        },
    )
    async def stream_run_events(
        self,
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        run_id: RunId,
        after: AfterParam = None,
        last_event_id: LastEventIdHeader = None,
    ) -> Stream:
        position = _resume_position(after, last_event_id)
        async with services.db.read() as session:
            run = await visible_run(session, principal, run_id, "read")
        return await sse_response(services, run_id, position, finished=run.finished)

    @post(
        "/{run_id:str}/cancel",
        operation_id="CancelRun",
        summary="Cancel a run: its work stops and it ends with run.cancelled",
        status_code=202,
        responses={
            **_NOT_FOUND,
            403: ResponseSpec(None, description="Your role on the conversation does not allow this (`forbidden`)."),
            409: ResponseSpec(None, description="The run has already finished (`run_finished`)."),
        },
    )
    async def cancel_run(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        run_id: RunId,
    ) -> Response[Run]:
        async with services.db.write() as session:
            run = await visible_run(session, principal, run_id, "update")
            if not await rows.request_cancel(session, run_id):
                raise RunFinished()
            event = RunCancelRequested(run_id=run.id, kind=run.kind, conversation_id=run.conversation_id)
            await record(PostgresEventStore(session), run_stream(run.id), event, event_metadata(request, principal))
            run = await rows.load_run(session, run_id) or run
        await rr.notify_cancel(services.redis, run_id)
        if services.runner is not None:
            services.runner.cancel_local(run_id)  # this process may be the one running it
        return Response(to_schema(run), status_code=202)
