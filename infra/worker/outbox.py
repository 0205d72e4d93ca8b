"""The transactional outbox and its relay.

``Outbox.enqueue`` inserts a row in the caller's transaction: the job exists if and only if the
command committed. The relay moves rows to Dramatiq *after* commit: it locks a batch with
``FOR UPDATE SKIP LOCKED`` (so several relays share the work), sends each message with the row's
``message_id``, and deletes the rows it sent in the same transaction. A crash after sending but
before that commit leaves the rows in place; they are sent again with the same message id and the
worker's processed-message ledger drops the duplicate. Nothing is lost, nothing runs twice.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from domain.shared.ids import new_id
from infra.db.engine import Database
from infra.worker.jobs import get_job

log = logging.getLogger(__name__)

OUTBOX_CHANNEL = "liteskill:outbox"
"""Redis pub/sub channel told (best effort, after commit) that the outbox has new rows."""

_INSERT = text(
    "INSERT INTO outbox (message_id, actor, queue, kwargs, available_at) "
    "VALUES (:message_id, :actor, :queue, CAST(:kwargs AS jsonb), now() + make_interval(secs => :delay))"
)
_CLAIM = text(
    "SELECT id, message_id, actor, queue, kwargs::text, attempts FROM outbox WHERE available_at <= now() "
    "ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED"
)
_DELETE = text("DELETE FROM outbox WHERE id = ANY(:ids)").bindparams(bindparam("ids", type_=ARRAY(BIGINT)))
_BACKOFF = text(
    "UPDATE outbox SET attempts = attempts + 1, last_error = :error, "
    "available_at = now() + make_interval(secs => :delay) WHERE id = :id"
)


class Outbox:
    """Jobs enqueued inside one unit of work."""

    def __init__(self, session: AsyncSession | AsyncConnection) -> None:
        self.session = session
        self.enqueued = 0

    async def enqueue(self, job_name: str, *, delay_s: float = 0.0, **kwargs: Any) -> uuid.UUID:
        job = get_job(job_name)
        message_id = new_id()
        await self.session.execute(
            _INSERT,
            {
                "message_id": message_id,
                "actor": job.name,
                "queue": job.queue,
                "kwargs": msgspec.json.encode(kwargs).decode(),
                "delay": delay_s,
            },
        )
        self.enqueued += 1
        return message_id


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: int
    message_id: uuid.UUID
    actor: str
    queue: str
    kwargs: dict[str, Any]


class Sender:
    """Where the relay sends messages: a Dramatiq broker (``infra.worker.broker.DramatiqSender``)."""

    def send(self, message: OutboxMessage) -> None:  # pragma: no cover - interface
        raise NotImplementedError


async def relay_once(db: Database, sender: Sender, *, batch: int = 100) -> int:
    """Send one batch of due outbox rows; return how many were sent."""
    async with db.write() as session:
        rows = (await session.execute(_CLAIM, {"limit": batch})).all()
        if not rows:
            return 0
        messages = [
            OutboxMessage(id=r[0], message_id=r[1], actor=r[2], queue=r[3], kwargs=msgspec.json.decode(r[4]))
            for r in rows
        ]
        attempts = {r[0]: r[5] for r in rows}
        sent: list[int] = []
        failed: OutboxMessage | None = None
        error = ""

        def send_all() -> None:
            nonlocal failed, error
            for m in messages:
                try:
                    sender.send(m)
                except Exception as exc:  # noqa: BLE001 - the row is retried later with backoff
                    failed, error = m, f"{type(exc).__name__}: {exc}"
                    return
                sent.append(m.id)

        await asyncio.to_thread(send_all)
        if sent:
            await session.execute(_DELETE, {"ids": sent})
        if failed is not None:
            delay = min(2 ** attempts[failed.id], 300)
            log.warning("outbox send failed", extra={"message_id": str(failed.message_id), "error": error})
            await session.execute(_BACKOFF, {"id": failed.id, "error": error[:1000], "delay": delay})
        return len(sent)


async def relay_all(db: Database, sender: Sender, *, batch: int = 100) -> int:
    """Relay until nothing is due (or a send fails)."""
    total = 0
    while True:
        n = await relay_once(db, sender, batch=batch)
        total += n
        if n < batch:
            return total
