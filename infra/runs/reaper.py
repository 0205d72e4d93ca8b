"""The reaper: runs whose lease expired (their process died) end as ``interrupted``, their stream
closed with ``run.failed`` (``run_interrupted``), and the hooks of their kind run (chat keeps the
partial text). Only an expired lease counts, never "no update for a while": a slow run that
heartbeats is never reaped. Runs at start-up and every lease period (infra.worker.runtime).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.runs.events import RunFailed, RunProblem
from infra.db.engine import Database
from infra.db.tables.runs import runs
from infra.runs.rows import Run, interrupted_problem, problem_json, run_of
from infra.runs.stream import RunStreams, stream_key

log = logging.getLogger(__name__)


InterruptedHook = Callable[[AsyncSession, Run], Awaitable[None]]


class RunHooks:
    """Code to run when a run of a kind is interrupted (chat keeps its partial text), inside the
    reaper's transaction. Registered at import by the context that owns the kind."""

    def __init__(self) -> None:
        self._interrupted: dict[str, list[InterruptedHook]] = {}

    def on_interrupted(self, kind: str) -> Callable[[InterruptedHook], InterruptedHook]:
        def register(fn: InterruptedHook) -> InterruptedHook:
            self._interrupted.setdefault(kind, []).append(fn)
            return fn

        return register

    def interrupted_hooks(self, kind: str) -> list[InterruptedHook]:
        return list(self._interrupted.get(kind, ()))


hooks = RunHooks()


async def reap(db: Database, streams: RunStreams, run_hooks: RunHooks = hooks, *, limit: int = 100) -> list[uuid.UUID]:
    """Mark running runs whose lease expired ``interrupted`` and end their streams with
    ``run.failed`` (``run_interrupted``), unless the stream already holds a terminal frame.
    Safe to run in several processes at once (``SKIP LOCKED``)."""
    reaped: list[uuid.UUID] = []
    async with db.write() as session:
        rows = (
            await session.execute(
                select(runs)
                .where(and_(runs.c.status == "running", runs.c.lease_expires_at < func.now()))
                .order_by(runs.c.lease_expires_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
        for row in rows:
            run = run_of(row)
            last: Any = await streams.redis.xrevrange(stream_key(run.id), count=1)
            last_type = last[0][1].get(b"type", b"").decode() if last else ""
            status, error = "interrupted", interrupted_problem()
            final_error: RunProblem | None = error
            if last_type == "run.completed":
                status, final_error = "completed", None
            elif last_type == "run.cancelled":
                status, final_error = "cancelled", None
            elif last_type == "run.failed":
                pass  # its problem is on the stream; the row says interrupted
            else:
                await streams.publish(run.id, RunFailed(problem=error))
                streams.forget(run.id)
            await session.execute(
                update(runs)
                .where(runs.c.id == run.id)
                .values(
                    status=status,
                    finished_at=func.now(),
                    last_seq=await streams.last_seq(run.id),
                    error=problem_json(final_error),
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
            if status == "interrupted":
                for hook in run_hooks.interrupted_hooks(run.kind):
                    await hook(session, run)
            reaped.append(run.id)
    if reaped:
        log.warning("reaped runs with expired leases", extra={"runs": [str(r) for r in reaped]})
    return reaped
