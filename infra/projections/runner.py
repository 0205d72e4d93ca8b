"""Catch-up projections: read models fed from the global event order.

A projector reads committed events after its checkpoint in position order, applies them, and saves
the new checkpoint in the *same* transaction as the rows it wrote, so a crash can never leave a
read model ahead of or behind its checkpoint. Handlers are idempotent (upserts keyed by position or
entity) as a second line of defence. ``rebuild`` resets a read model and replays from position 0
inside one transaction, so readers see the old model until the new one is complete.

Live updates: after a commit that appended events, writers publish on ``liteskill:events``; the
runner wakes on that nudge or after ``poll_s`` at the latest. Nudges are an optimisation only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

from domain.shared.events import RecordedEvent
from domain.shared.eventstore import Transaction, TransactionFactory
from infra.nudges import wake_on

log = logging.getLogger(__name__)

TxT = TypeVar("TxT", bound=Transaction)
TxT_contra = TypeVar("TxT_contra", bound=Transaction, contravariant=True)


class Projection(Protocol[TxT_contra]):
    name: str

    async def apply(self, tx: TxT_contra, events: Sequence[RecordedEvent]) -> None:
        """Apply events in position order; must be idempotent."""
        ...

    async def reset(self, tx: TxT_contra) -> None:
        """Delete the read model's rows (before a rebuild)."""
        ...


async def project_batch(factory: TransactionFactory[TxT], projection: Projection[TxT], *, batch: int = 500) -> int:
    """Project at most ``batch`` events in one transaction; return how many."""
    async with factory.transaction() as tx:
        position = await tx.checkpoints.lock(projection.name)
        events = await tx.events.read_all(after_position=position, limit=batch)
        if not events:
            return 0
        await projection.apply(tx, events)
        await tx.checkpoints.save(projection.name, events[-1].position)
    return len(events)


async def catch_up(factory: TransactionFactory[TxT], projection: Projection[TxT], *, batch: int = 500) -> int:
    """Project until the read model has every committed event; return how many were applied."""
    total = 0
    while True:
        n = await project_batch(factory, projection, batch=batch)
        total += n
        if n < batch:
            return total


async def rebuild(factory: TransactionFactory[TxT], projection: Projection[TxT], *, batch: int = 2000) -> int:
    """Reset and replay ``projection`` from position 0 in one transaction; return events replayed."""
    async with factory.transaction() as tx:
        await tx.checkpoints.lock(projection.name)
        await projection.reset(tx)
        position = total = 0
        while True:
            events = await tx.events.read_all(after_position=position, limit=batch)
            if not events:
                break
            await projection.apply(tx, events)
            position = events[-1].position
            total += len(events)
        await tx.checkpoints.save(projection.name, position)
    return total


class ProjectionRunner(Generic[TxT]):
    """Keeps projections caught up until stopped: on each nudge, and every ``poll_s`` at the latest."""

    def __init__(
        self,
        factory: TransactionFactory[TxT],
        projections: Sequence[Projection[TxT]],
        *,
        redis: Any | None = None,
        channel: str = "liteskill:events",
        poll_s: float = 1.0,
        batch: int = 500,
    ) -> None:
        self.factory = factory
        self.projections = list(projections)
        self.redis = redis
        self.channel = channel
        self.poll_s = poll_s
        self.batch = batch
        self._wake = asyncio.Event()

    def nudge(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        listener = (
            asyncio.create_task(wake_on(self.redis, self.channel, self._wake, retry_s=self.poll_s))
            if self.redis is not None
            else None
        )
        try:
            while not stop.is_set():
                self._wake.clear()
                for projection in self.projections:
                    try:
                        await catch_up(self.factory, projection, batch=self.batch)
                    except Exception:
                        log.exception("projection failed; retrying", extra={"projection": projection.name})
                with contextlib.suppress(TimeoutError):
                    waiters = [asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())]
                    try:
                        await asyncio.wait(waiters, timeout=self.poll_s, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for w in waiters:
                            w.cancel()
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
