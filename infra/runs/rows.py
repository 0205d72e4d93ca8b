"""The ``runs`` row: the run as stored, creating it (queued, or already claimed by the runner that
starts it), reading it, recording a cancel request, and the problems a run's end records."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.runs.events import RunProblem, problem
from domain.shared.ids import new_id
from infra.db.tables.runs import runs

if TYPE_CHECKING:
    from infra.runs.runner import RunRunner

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "interrupted"})
KINDS = frozenset({"chat", "agent", "team", "ingestion"})


@dataclass(frozen=True, slots=True)
class Run:
    id: uuid.UUID
    tenant_id: uuid.UUID
    kind: str
    conversation_id: uuid.UUID | None
    created_by: uuid.UUID | None
    status: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    last_seq: int
    cancel_requested_at: datetime | None
    usage: dict[str, Any] | None
    error: dict[str, Any] | None
    lease_owner: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


def run_of(row: Any) -> Run:
    return Run(
        id=row.id,
        tenant_id=row.tenant_id,
        kind=row.kind,
        conversation_id=row.conversation_id,
        created_by=row.created_by,
        status=row.status,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        last_seq=row.last_seq,
        cancel_requested_at=row.cancel_requested_at,
        usage=row.usage,
        error=row.error,
        lease_owner=row.lease_owner,
    )


async def create_run(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    kind: str,
    conversation_id: uuid.UUID | None = None,
    created_by: uuid.UUID | None = None,
    claimed_by: RunRunner | None = None,
) -> Run:
    """Insert a run in the caller's transaction and answer with it as stored; start it with
    ``RunRunner.start`` after commit.

    ``claimed_by``: the runner of this process that will start it right after commit. The run is
    then inserted already running under that runner's lease (no second write to claim it), so if
    the process dies before it starts, the reaper ends it like any run whose lease expired."""
    if kind not in KINDS:
        raise ValueError(f"unknown run kind {kind!r}")
    run_id = new_id()
    values: dict[str, Any] = {}
    if claimed_by is not None:
        values = {
            "status": "running",
            "started_at": func.now(),
            "lease_owner": claimed_by.owner,
            "lease_expires_at": func.now() + timedelta(seconds=claimed_by.lease_s),
        }
    row = (
        await session.execute(
            insert(runs)
            .values(
                id=run_id,
                tenant_id=tenant_id,
                kind=kind,
                conversation_id=conversation_id,
                created_by=created_by,
                **values,
            )
            .returning(*runs.c)
        )
    ).one()
    return run_of(row)


async def load_run(session: AsyncSession, run_id: uuid.UUID) -> Run | None:
    row = (await session.execute(select(runs).where(runs.c.id == run_id))).first()
    return run_of(row) if row is not None else None


async def request_cancel(session: AsyncSession, run_id: uuid.UUID) -> bool:
    """Record a cancel request on an unfinished run (in the caller's transaction); False if finished.
    After commit, call ``notify_cancel`` so the owning process acts at once."""
    result = await session.execute(
        update(runs)
        .where(runs.c.id == run_id, runs.c.status.in_(("queued", "running")))
        .values(cancel_requested_at=func.coalesce(runs.c.cancel_requested_at, func.now()))
        .returning(runs.c.id)
    )
    return result.first() is not None


def interrupted_problem() -> RunProblem:
    return problem(503, "run_interrupted", "Service Unavailable", "The run was interrupted before it finished.")


def problem_json(error: RunProblem | None) -> dict[str, Any] | None:
    if error is None:
        return None
    out: dict[str, Any] = {"type": error.type, "title": error.title, "status": error.status, "code": error.code}
    if error.detail is not None:
        out["detail"] = error.detail
    return out
