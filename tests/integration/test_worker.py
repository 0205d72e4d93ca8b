"""Outbox, relay and worker on the real database, Valkey and Dramatiq Redis broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import text

from domain.shared.events import Event, EventMetadata, NewEvent, event_type
from infra.db.engine import Database
from infra.eventstore.postgres import PostgresTransaction, PostgresTransactionFactory
from infra.settings import Settings
from infra.worker.broker import DramatiqSender, build_broker
from infra.worker.jobs import job
from infra.worker.outbox import OutboxMessage, relay_all
from infra.worker.runtime import BackgroundRuntime


@event_type("test.touched.v1")
class Touched(Event, frozen=True, kw_only=True):
    key: str


@job("test.touch", queue="test", max_retries=3)
async def touch(tx: PostgresTransaction, *, key: str) -> None:
    """Append one event per run: duplicates would show as extra events."""
    version = await tx.events.stream_version(f"touch-{key}")
    await tx.events.append(f"touch-{key}", version, [NewEvent(payload=Touched(key=key), metadata=EventMetadata())])


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


async def count(db: Database, sql: str, **params: Any) -> int:
    async with db.read() as s:
        return int((await s.execute(text(sql), params)).scalar_one())


async def touches(db: Database, key: str) -> int:
    return await count(db, "SELECT count(*) FROM events WHERE stream_id = :s", s=f"touch-{key}")


@pytest.fixture
async def runtime(settings: Settings, db: Database, redis: Any) -> AsyncIterator[BackgroundRuntime]:
    rt = BackgroundRuntime(settings)
    await asyncio.to_thread(rt.start)
    yield rt
    await asyncio.to_thread(rt.stop)


async def test_a_job_is_enqueued_only_if_its_transaction_commits(db: Database) -> None:
    factory = PostgresTransactionFactory(db)

    async def failing_command() -> None:
        async with factory.transaction() as tx:
            await tx.outbox.enqueue("test.touch", key="never")
            raise RuntimeError("the command failed")

    with pytest.raises(RuntimeError):
        await failing_command()
    assert await count(db, "SELECT count(*) FROM outbox") == 0
    async with factory.transaction() as tx:
        await tx.outbox.enqueue("test.touch", key="yes")
    assert await count(db, "SELECT count(*) FROM outbox WHERE kwargs->>'key' = 'yes'") == 1


async def test_unknown_jobs_are_refused_at_enqueue(db: Database) -> None:
    async with PostgresTransactionFactory(db).transaction() as tx:
        with pytest.raises(LookupError):
            await tx.outbox.enqueue("no.such_job")


async def test_committed_jobs_run_once_on_the_worker(db: Database, redis: Any, runtime: BackgroundRuntime) -> None:
    factory = PostgresTransactionFactory(db, redis)
    keys = [uuid.uuid4().hex for _ in range(5)]
    for key in keys:
        async with factory.transaction() as tx:
            await tx.outbox.enqueue("test.touch", key=key)
    for key in keys:
        await eventually(lambda key=key: _has(db, key))
    await eventually(lambda: _empty_outbox(db))
    assert [await touches(db, k) for k in keys] == [1] * len(keys)


async def _has(db: Database, key: str) -> bool:
    return await touches(db, key) > 0


async def _empty_outbox(db: Database) -> bool:
    return await count(db, "SELECT count(*) FROM outbox WHERE actor = 'test.touch'") == 0


async def test_work_committed_while_no_relay_ran_is_sent_later(db: Database, settings: Settings, redis: Any) -> None:
    """A crash right after commit (before any send) loses nothing: the row waits in the outbox."""
    async with PostgresTransactionFactory(db).transaction() as tx:
        await tx.outbox.enqueue("test.touch", key="late")
    rt = BackgroundRuntime(settings)
    await asyncio.to_thread(rt.start)
    try:
        await eventually(lambda: _has(db, "late"))
    finally:
        await asyncio.to_thread(rt.stop)
    assert await touches(db, "late") == 1


class SentButUnacknowledged(DramatiqSender):
    """The broker receives the message but the relay hears an error (a lost acknowledgement):
    the row stays and is sent again later with the same message id."""

    def __init__(self, broker: Any) -> None:
        super().__init__(broker)
        self.sent: list[OutboxMessage] = []

    def send(self, message: OutboxMessage) -> None:
        super().send(message)
        self.sent.append(message)
        raise TimeoutError("no acknowledgement")


async def test_a_message_delivered_twice_runs_once(
    db: Database, settings: Settings, redis: Any, runtime: BackgroundRuntime
) -> None:
    async with PostgresTransactionFactory(db).transaction() as tx:
        message_id = await tx.outbox.enqueue("test.touch", key="twice", delay_s=3600)  # hidden from the runtime
    async with db.write() as s:
        await s.execute(text("UPDATE outbox SET available_at = now()"))
    flaky = SentButUnacknowledged(build_broker(settings))
    # the runtime's relay may race us for the row; either way it is delivered at least once
    await relay_all(db, flaky)
    async with db.write() as s:  # make the retried row due again at once and relay it for real
        await s.execute(text("UPDATE outbox SET available_at = now()"))
    await eventually(lambda: _empty_outbox(db))
    await eventually(lambda: _processed(db, message_id))
    await asyncio.sleep(0.5)  # give a duplicate delivery time to (not) run
    assert await touches(db, "twice") == 1
    assert await count(db, "SELECT count(*) FROM processed_messages WHERE message_id = :m", m=message_id) == 1


async def _processed(db: Database, message_id: uuid.UUID) -> bool:
    return await count(db, "SELECT count(*) FROM processed_messages WHERE message_id = :m", m=message_id) == 1


async def test_projections_follow_new_events_live(db: Database, redis: Any, runtime: BackgroundRuntime) -> None:
    factory = PostgresTransactionFactory(db, redis)
    async with factory.transaction() as tx:
        await tx.events.append(
            "touch-audit", 0, [NewEvent(payload=Touched(key="a"), metadata=EventMetadata(actor="user:1"))]
        )

    async def audited() -> bool:
        return await count(db, "SELECT count(*) FROM audit_log WHERE stream_id = 'touch-audit'") == 1

    await eventually(audited)
    async with db.read() as s:
        row = (await s.execute(text("SELECT action, entity_type, entity_id, actor FROM audit_log"))).one()
    assert tuple(row) == ("test.touched", "touch", "audit", "user:1")


async def test_projections_rebuild_command_yields_the_same_audit_log(db: Database, settings: Settings) -> None:
    from infra.projections import all_projections
    from infra.projections.rebuild import rebuild_all
    from infra.projections.runner import catch_up

    factory = PostgresTransactionFactory(db)
    for i in range(30):
        async with factory.transaction() as tx:
            stream = f"touch-{i % 4}"
            version = await tx.events.stream_version(stream)
            meta = EventMetadata(actor=f"user:{i % 3}", request_id=f"r{i}", tenant_id="t")
            await tx.events.append(stream, version, [NewEvent(payload=Touched(key=str(i)), metadata=meta)])
    for projection in all_projections():
        await catch_up(factory, projection)
    query = "SELECT * FROM audit_log ORDER BY position"

    async def snapshot() -> list[tuple[Any, ...]]:
        async with db.read() as s:
            return [tuple(r) for r in (await s.execute(text(query))).all()]

    before = await snapshot()
    assert len(before) == 30
    async with db.write() as s:  # damage the read model; the rebuild must repair it
        await s.execute(text("DELETE FROM audit_log WHERE position % 2 = 0"))
        await s.execute(text("UPDATE audit_log SET actor = 'tampered'"))
    counts = await rebuild_all(settings, names=["audit_log"])
    assert counts == {"audit_log": 30}
    assert await snapshot() == before
    with pytest.raises(SystemExit, match="unknown projections: nope"):
        await rebuild_all(settings, names=["nope"])
