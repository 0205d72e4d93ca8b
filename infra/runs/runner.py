"""Runs in this process: a lease with heartbeats, lifecycle in the ``runs`` row, exactly one
terminal event, cancellation within a second, and the reaper of runs whose lease expired.

The work is an async callable given a ``RunContext``; it publishes progress through the context
and never a terminal event (the runner publishes exactly one: ``run.completed``, ``run.failed``
with a problem, or ``run.cancelled``). The terminal frame goes to the stream *before* the row is
updated, so a reader that sees a finished row finds the terminal frame; the reaper
(infra.runs.reaper) checks the stream so a crash between the two never produces a second
terminal event.

Cancellation: ``POST /runs/{id}/cancel`` stores ``cancel_requested_at`` and publishes the run id on
``liteskill:run-cancel``; the process running it cancels the work's task (closing the provider
stream). Heartbeats also read ``cancel_requested_at``, so a lost pub/sub message only delays the
cancel to the next heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.runs.events import (
    RunCancelled,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunProblem,
    RunStarted,
    is_terminal,
    problem,
)
from domain.shared.errors import DomainError
from infra.db.engine import Database
from infra.db.tables.runs import runs
from infra.runs.rows import (
    Run,
    interrupted_problem,
    problem_json,
    run_of,
)
from infra.runs.stream import RunStreams

log = logging.getLogger(__name__)

CANCEL_CHANNEL = "liteskill:run-cancel"
NUDGE_CHANNEL = "liteskill:run-nudge"
"""Wakes a run's work that waits for something recorded elsewhere (a tool-call approval)."""


async def notify_cancel(redis: Redis, run_id: uuid.UUID) -> None:
    await redis.publish(CANCEL_CHANNEL, str(run_id))


async def notify_nudge(redis: Redis, run_id: uuid.UUID) -> None:
    """Wake the run's work in whichever process runs it (``RunContext.wait_nudge``)."""
    await redis.publish(NUDGE_CHANNEL, str(run_id))


class RunContext:
    """What the work of a run may do: publish non-terminal events, watch ``cancelled``, record
    usage, and ``checkpoint`` (persist ``last_seq`` and usage in the row)."""

    def __init__(self, runner: RunRunner, run: Run) -> None:
        self.run = run
        self.run_id = run.id
        self.cancelled = asyncio.Event()
        self.usage: dict[str, Any] | None = None
        self.last_seq = 0
        self._runner = runner
        self._nudged = asyncio.Event()

    def nudge(self) -> None:
        self._nudged.set()

    async def wait_nudge(self, timeout_s: float) -> None:
        """Return when the run is nudged (``notify_nudge``, from any process) or after ``timeout_s``.
        A nudge is a hint to look again, never the news itself: callers re-read what they wait for."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, timeout_s)):
                await self._nudged.wait()
        self._nudged.clear()

    async def publish(self, event: RunEvent) -> int:
        if is_terminal(event):
            raise ValueError("terminal events are published by the runner, exactly once")
        self.last_seq = await self._runner.streams.publish(self.run_id, event)
        return self.last_seq

    async def checkpoint(self, session: AsyncSession) -> None:
        """Persist ``last_seq`` and ``usage`` in the run's row, in the caller's transaction."""
        await session.execute(
            update(runs)
            .where(runs.c.id == self.run_id, runs.c.lease_owner == self._runner.owner)
            .values(last_seq=self.last_seq, usage=self.usage)
        )


Work = Callable[[RunContext], Coroutine[Any, Any, None]]


class RunFailure(Exception):
    """Raised by work to end its run with ``run.failed`` carrying this problem."""

    def __init__(self, run_problem: RunProblem) -> None:
        super().__init__(run_problem.detail or run_problem.title)
        self.problem = run_problem


@dataclass(slots=True)
class _Active:
    ctx: RunContext
    work: asyncio.Task[None] | None = None
    lease_lost: bool = False
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


def _problem_of(exc: BaseException) -> RunProblem:
    if isinstance(exc, RunFailure):
        return exc.problem
    if isinstance(exc, DomainError):
        return problem(422, exc.code, "Unprocessable Content", exc.detail)
    return problem(500, "internal_error", "Internal Server Error", "The run failed unexpectedly.")


class RunRunner:
    """Executes runs as asyncio tasks of this process. ``owner`` names this process in leases."""

    def __init__(self, db: Database, streams: RunStreams, *, lease_s: float = 30.0, owner: str | None = None) -> None:
        self.db = db
        self.streams = streams
        self.lease_s = lease_s
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._active: dict[uuid.UUID, _Active] = {}
        self._tasks: dict[uuid.UUID, asyncio.Task[str]] = {}
        self._listener: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()
        """Set once the cancel/nudge subscription is in place (messages before it are not heard)."""
        self._closing = False
        self._lease = timedelta(seconds=lease_s)

    # -- lifecycle ---------------------------------------------------------------------------
    def listen(self) -> None:
        """Start following cancel requests and nudges published by any process (idempotent); one
        subscription per process, however many runs it holds."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="liteskill-run-cancel")

    async def aclose(self) -> None:
        """Stop: running work is cancelled and its runs end as interrupted (run.failed)."""
        self._closing = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        for active in list(self._active.values()):
            if active.work is not None:
                active.work.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def start(self, run_id: uuid.UUID, work: Work, *, claimed: Run | None = None) -> asyncio.Task[str]:
        """Run ``work`` for a queued run, or for a run created ``claimed_by`` this runner (pass the
        row as ``claimed``: it is registered at once, so a cancel arriving before the task's first
        step is not missed); the task's result is the run's final status."""
        if claimed is not None:
            if claimed.lease_owner != self.owner:
                raise ValueError("the run is not claimed by this runner")
            self._active[run_id] = _Active(ctx=RunContext(self, claimed))
        task = asyncio.create_task(self._execute(run_id, work), name=f"liteskill-run-{run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(run_id, None))
        return task

    def nudge_local(self, run_id: uuid.UUID) -> bool:
        """Nudge the run's work if this process runs it."""
        active = self._active.get(run_id)
        if active is None:
            return False
        active.ctx.nudge()
        return True

    def cancel_local(self, run_id: uuid.UUID) -> bool:
        """Cancel the run's work if this process runs it."""
        active = self._active.get(run_id)
        if active is None:
            return False
        active.ctx.cancelled.set()
        if active.work is not None:
            active.work.cancel()
        return True

    async def _listen(self) -> None:
        while True:
            try:
                async with self.streams.redis.pubsub() as pubsub:
                    await pubsub.subscribe(CANCEL_CHANNEL, NUDGE_CHANNEL)
                    self.subscribed.set()
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        data, channel = message.get("data"), message.get("channel")
                        with contextlib.suppress(ValueError, AttributeError):
                            raw = data.decode() if isinstance(data, bytes) else str(data)
                            name = channel.decode() if isinstance(channel, bytes) else str(channel)
                            if name == NUDGE_CHANNEL:
                                self.nudge_local(uuid.UUID(raw))
                            else:
                                self.cancel_local(uuid.UUID(raw))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.debug("run cancel subscription lost", exc_info=True)
                await asyncio.sleep(1.0)

    # -- one run -----------------------------------------------------------------------------
    async def _claim(self, run_id: uuid.UUID) -> Run | None:
        async with self.db.write() as session:
            row = (
                await session.execute(
                    update(runs)
                    .where(runs.c.id == run_id, runs.c.status == "queued")
                    .values(
                        status="running",
                        started_at=func.now(),
                        lease_owner=self.owner,
                        lease_expires_at=func.now() + self._lease,
                    )
                    .returning(runs)
                )
            ).first()
        return run_of(row) if row is not None else None

    async def _execute(self, run_id: uuid.UUID, work: Work) -> str:
        active = self._active.get(run_id)
        if active is None:
            run = await self._claim(run_id)
            if run is None:
                log.warning("run not started: not queued", extra={"run_id": str(run_id)})
                return "skipped"
            active = _Active(ctx=RunContext(self, run))
            self._active[run_id] = active
        ctx, run = active.ctx, active.ctx.run
        status, error = "completed", None
        try:
            ctx.last_seq = await self.streams.publish(run_id, RunStarted(kind=run.kind))
            if run.cancel_requested_at is not None:
                ctx.cancelled.set()
            heartbeat = asyncio.create_task(self._heartbeat(active))
            try:
                if not ctx.cancelled.is_set():
                    active.work = asyncio.create_task(work(ctx))
                    await active.work
                status = "cancelled" if ctx.cancelled.is_set() else "completed"
            except asyncio.CancelledError:
                if active.lease_lost:
                    status = "lost"
                elif ctx.cancelled.is_set():
                    status = "cancelled"
                else:  # shutdown (or the task was cancelled from outside): not the user's cancel
                    status, error = "interrupted", interrupted_problem()
            except Exception as exc:
                log.info("run failed", extra={"run_id": str(run_id)}, exc_info=True)
                status, error = "failed", _problem_of(exc)
            finally:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
            if status == "lost":
                self.streams.forget(run_id)  # the reaper ended it; one terminal event only
                return "interrupted"
            await self._finish(ctx, status, error)
            return status
        except Exception:
            log.exception("run bookkeeping failed", extra={"run_id": str(run_id)})
            raise
        finally:
            self._active.pop(run_id, None)

    async def _finish(self, ctx: RunContext, status: str, error: RunProblem | None) -> None:
        terminal: RunEvent
        if status == "completed":
            terminal = RunCompleted()
        elif status == "cancelled":
            terminal = RunCancelled()
        else:
            terminal = RunFailed(problem=error or interrupted_problem())
        seq = await self.streams.publish(ctx.run_id, terminal)
        async with self.db.write() as session:
            await session.execute(
                update(runs)
                .where(runs.c.id == ctx.run_id, runs.c.lease_owner == self.owner)
                .values(
                    status=status,
                    finished_at=func.now(),
                    last_seq=seq,
                    usage=ctx.usage,
                    error=problem_json(error),
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )

    async def _heartbeat(self, active: _Active) -> None:
        every = self.lease_s / 3
        run_id = active.ctx.run_id
        while True:
            await asyncio.sleep(every)
            try:
                async with self.db.write() as session:
                    row = (
                        await session.execute(
                            update(runs)
                            .where(runs.c.id == run_id, runs.c.lease_owner == self.owner, runs.c.status == "running")
                            .values(lease_expires_at=func.now() + self._lease)
                            .returning(runs.c.cancel_requested_at)
                        )
                    ).first()
            except Exception:
                log.warning("run heartbeat failed", extra={"run_id": str(run_id)}, exc_info=True)
                continue
            if row is None:
                active.lease_lost = True
                if active.work is not None:
                    active.work.cancel()
                return
            if row.cancel_requested_at is not None:
                self.cancel_local(run_id)
