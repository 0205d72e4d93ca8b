"""Projection contract, on every event store: a catch-up read model equals a fold of its streams
after random concurrent commands, and a rebuild from position 0 yields the same rows."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
import pytest
from sqlalchemy import text

from domain.shared.aggregate import execute
from domain.shared.errors import ConcurrencyConflict
from domain.shared.events import Event, RecordedEvent
from infra.eventstore.memory import MemoryTransactionFactory, MemoryUnitOfWork
from infra.eventstore.postgres import PostgresTransaction
from infra.projections.runner import catch_up, rebuild
from tests.contract import test_eventstore as store_tests

# The store fixture (memory and Postgres) and the counter aggregate of the event store contract.
factory = store_tests.factory
COUNTER = store_tests.COUNTER
Counter = store_tests.Counter
Incremented = store_tests.Incremented
Reset = store_tests.Reset
_evolve = store_tests._evolve


# -- projections -----------------------------------------------------------------------------


class MemoryTotals:
    name = "totals"

    async def apply(self, tx: MemoryUnitOfWork, events: Sequence[RecordedEvent]) -> None:
        table = tx.table("totals")
        for e in events:
            state = Counter(**table.get(e.stream_id, {}))
            table[e.stream_id] = msgspec.structs.asdict(_evolve(state, e.payload))

    async def reset(self, tx: MemoryUnitOfWork) -> None:
        tx.table("totals").clear()

    async def rows(self, factory: Any) -> dict[str, Counter]:
        async with factory.transaction() as tx:
            return {k: Counter(**v) for k, v in tx.table("totals").items()}


class PostgresTotals:
    name = "totals"

    async def apply(self, tx: PostgresTransaction, events: Sequence[RecordedEvent]) -> None:
        for e in events:
            row = (
                await tx.session.execute(
                    text("SELECT total, changes FROM test_totals WHERE stream_id = :s"), {"s": e.stream_id}
                )
            ).first()
            state = _evolve(Counter(*row) if row else Counter(), e.payload)
            await tx.session.execute(
                text(
                    "INSERT INTO test_totals VALUES (:s, :t, :c) ON CONFLICT (stream_id) "
                    "DO UPDATE SET total = excluded.total, changes = excluded.changes"
                ),
                {"s": e.stream_id, "t": state.total, "c": state.changes},
            )

    async def reset(self, tx: PostgresTransaction) -> None:
        await tx.session.execute(text("DELETE FROM test_totals"))

    async def rows(self, factory: Any) -> dict[str, Counter]:
        async with factory.db.read() as s:
            result = await s.execute(text("SELECT stream_id, total, changes FROM test_totals"))
            return {r[0]: Counter(r[1], r[2]) for r in result}


@pytest.fixture
async def totals(factory: Any) -> AsyncIterator[Any]:
    if isinstance(factory, MemoryTransactionFactory):
        yield MemoryTotals()
        return
    async with factory.db.write() as s:
        await s.execute(
            text(
                "CREATE TABLE IF NOT EXISTS test_totals "
                "(stream_id text PRIMARY KEY, total bigint NOT NULL, changes int NOT NULL)"
            )
        )
        await s.execute(text("TRUNCATE test_totals"))
    yield PostgresTotals()


async def test_projection_equals_a_fold_after_concurrent_operations_and_rebuild(factory: Any, totals: Any) -> None:
    rng = random.Random(7)
    streams = [f"p-{i}" for i in range(6)]
    done = asyncio.Event()

    async def operator(seed: int) -> None:
        r = random.Random(seed)
        for _ in range(15):
            stream = r.choice(streams)

            def decide(state: Counter, r: random.Random = r) -> list[Event]:
                if r.random() < 0.1:
                    return [Reset()]
                return [Incremented(by=r.randint(1, 9)) for _ in range(r.randint(1, 3))]

            # ConcurrencyConflict after three attempts: the command failed cleanly, nothing half-written
            with contextlib.suppress(ConcurrencyConflict):
                await execute(factory, stream, COUNTER, decide, snapshot_every=4)

    async def projector() -> None:
        while not done.is_set():
            await catch_up(factory, totals, batch=7)
            await asyncio.sleep(0)

    projectors = [asyncio.create_task(projector()) for _ in range(2)]
    await asyncio.gather(*(operator(rng.randint(0, 10**6)) for _ in range(8)))
    done.set()
    await asyncio.gather(*projectors)
    await catch_up(factory, totals, batch=7)

    expected: dict[str, Counter] = {}
    async with factory.transaction() as tx:
        for stream in streams:
            events = await tx.events.read_stream(stream)
            if events:
                expected[stream] = COUNTER.fold(Counter(), [e.payload for e in events])
    assert expected  # something happened
    assert await totals.rows(factory) == expected

    replayed = await rebuild(factory, totals, batch=5)
    async with factory.transaction() as tx:
        assert replayed == len(await tx.events.read_all(limit=100_000))
    assert await totals.rows(factory) == expected
    assert await catch_up(factory, totals) == 0  # the checkpoint is at the head after a rebuild
