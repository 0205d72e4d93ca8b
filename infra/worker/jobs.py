"""Jobs: named async handlers run by the worker, each inside its own write transaction.

A job is declared with ``@job("context.name")`` and enqueued through the outbox of a unit of work
(``tx.outbox.enqueue("context.name", key=value)``), so it is sent only if that transaction commits.
Delivery is at least once; the worker records each message id in ``processed_messages`` in the
job's own transaction, so a redelivered message is skipped and the job's writes happen once.
Arguments are JSON values (keyword arguments only).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

if TYPE_CHECKING:
    from infra.eventstore.postgres import PostgresTransaction

JobHandler = Callable[..., Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    queue: str
    handler: JobHandler
    max_retries: int


_JOBS: dict[str, Job] = {}


def job(name: str, *, queue: str = "default", max_retries: int = 10) -> Callable[[JobHandler], JobHandler]:
    """Register ``handler(tx, **kwargs)`` as the job ``name``."""

    def register(handler: JobHandler) -> JobHandler:
        existing = _JOBS.get(name)
        if existing is not None and existing.handler is not handler:
            raise ValueError(f"job {name!r} already registered")
        _JOBS[name] = Job(name=name, queue=queue, handler=handler, max_retries=max_retries)
        return handler

    return register


def registered_jobs() -> dict[str, Job]:
    return dict(_JOBS)


def get_job(name: str) -> Job:
    found = _JOBS.get(name)
    if found is None:
        raise LookupError(f"no job named {name!r}")
    return found


PROCESSED_RETENTION_DAYS = 7


@job("platform.prune", queue="maintenance")
async def prune(tx: PostgresTransaction, **_: Any) -> None:
    """Delete expired idempotency keys and old processed-message records."""
    await tx.session.execute(
        text("DELETE FROM processed_messages WHERE processed_at < now() - make_interval(days => :days)"),
        {"days": PROCESSED_RETENTION_DAYS},
    )
    await tx.session.execute(text("DELETE FROM idempotency_keys WHERE expires_at < now()"))
