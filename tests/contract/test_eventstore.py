"""One contract suite for every event store implementation (in-memory and Postgres)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from domain.shared.aggregate import Aggregate, execute, load
from domain.shared.errors import ConcurrencyConflict
from domain.shared.events import Event, EventMetadata, NewEvent, event_type
from domain.shared.eventstore import Snapshot
from infra.db.engine import Database
from infra.eventstore.codec import UnknownEventType
from infra.eventstore.memory import MemoryTransactionFactory
from infra.eventstore.postgres import PostgresTransactionFactory


@event_type("test.counter_incremented.v1")
class Incremented(Event, frozen=True, kw_only=True):
    by: int


@event_type("test.counter_reset.v1")
class Reset(Event, frozen=True, kw_only=True):
    pass


class NotRegistered(Event, frozen=True, kw_only=True):
    x: int = 0


class Counter(msgspec.Struct):
    total: int = 0
    changes: int = 0


def _evolve(state: Counter, event: Event) -> Counter:
    if isinstance(event, Incremented):
        return Counter(total=state.total + event.by, changes=state.changes + 1)
    if isinstance(event, Reset):
        return Counter(total=0, changes=state.changes + 1)
    return state


COUNTER = Aggregate(name="counter", state_type=Counter, initial=Counter, evolve=_evolve)


def inc(by: int = 1, **meta: Any) -> NewEvent:
    return NewEvent(payload=Incremented(by=by), metadata=EventMetadata(**meta))


@pytest.fixture(params=["memory", "postgres"])
def factory(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return MemoryTransactionFactory()
    db: Database = request.getfixturevalue("db")
    return PostgresTransactionFactory(db)


async def test_append_and_read_a_stream(factory: Any) -> None:
    async with factory.transaction() as tx:
        assert await tx.events.stream_version("c-1") == 0
        assert await tx.events.append("c-1", 0, [inc(1), inc(2)]) == 2
        assert await tx.events.append("c-1", 2, [inc(3)]) == 3
        # a transaction reads its own writes
        assert [e.version for e in await tx.events.read_stream("c-1")] == [1, 2, 3]
    async with factory.transaction() as tx:
        events = await tx.events.read_stream("c-1", from_version=2)
        assert [(e.version, e.payload) for e in events] == [(2, Incremented(by=2)), (3, Incremented(by=3))]
        assert all(e.stream_id == "c-1" and e.type_id == "test.counter_incremented.v1" for e in events)
        assert [e.version for e in await tx.events.read_stream("c-1", limit=1)] == [1]
        assert await tx.events.read_stream("missing") == []
        assert await tx.events.stream_version("c-1") == 3


async def test_metadata_and_event_ids_round_trip(factory: Any) -> None:
    new = inc(5, tenant_id="t1", actor="user:u1", request_id="r1", causation_id="c1", correlation_id="k1")
    async with factory.transaction() as tx:
        await tx.events.append("c-2", 0, [new])
    async with factory.transaction() as tx:
        (got,) = await tx.events.read_stream("c-2")
    assert got.event_id == new.event_id
    assert got.metadata == new.metadata
    assert got.recorded_at.tzinfo is not None


@pytest.mark.parametrize(("setup", "expected"), [(0, 1), (2, 1), (2, 3), (0, 5)])
async def test_a_stale_or_future_expected_version_is_a_conflict(factory: Any, setup: int, expected: int) -> None:
    if setup:
        async with factory.transaction() as tx:
            await tx.events.append("c-3", 0, [inc() for _ in range(setup)])
    with pytest.raises(ConcurrencyConflict) as info:
        async with factory.transaction() as tx:
            await tx.events.append("c-3", expected, [inc()])
    assert info.value.actual == setup
    async with factory.transaction() as tx:
        assert await tx.events.stream_version("c-3") == setup


async def test_a_rolled_back_transaction_leaves_nothing(factory: Any) -> None:
    async def fail() -> None:
        async with factory.transaction() as tx:
            await tx.events.append("c-4", 0, [inc()])
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await fail()
    async with factory.transaction() as tx:
        assert await tx.events.read_stream("c-4") == []
        assert await tx.events.read_all() == []
        await tx.events.append("c-4", 0, [inc()])  # the version is free again


async def test_an_unregistered_event_type_is_refused(factory: Any) -> None:
    with pytest.raises(UnknownEventType):
        async with factory.transaction() as tx:
            await tx.events.append("c-5", 0, [NewEvent(payload=NotRegistered())])


async def test_read_all_is_in_position_order_from_a_position(factory: Any) -> None:
    async with factory.transaction() as tx:
        await tx.events.append("a", 0, [inc(1)])
        await tx.events.append("b", 0, [inc(2), inc(3)])
    async with factory.transaction() as tx:
        await tx.events.append("a", 1, [inc(4)])
    async with factory.transaction() as tx:
        everything = await tx.events.read_all()
        positions = [e.position for e in everything]
        assert positions == sorted(positions)
        assert len(set(positions)) == 4
        assert [e.payload.by for e in everything] == [1, 2, 3, 4]  # type: ignore[attr-defined]
        tail = await tx.events.read_all(after_position=positions[1], limit=1)
        assert [e.position for e in tail] == [positions[2]]


async def test_many_concurrent_writers_on_one_stream(factory: Any) -> None:
    """Every writer reads the version, then appends: conflicts are detected, nothing is lost or
    duplicated, and versions stay contiguous."""
    writers, rounds = 12, 4
    succeeded: list[tuple[int, Any]] = []
    conflicts = 0

    async def writer(n: int) -> None:
        nonlocal conflicts
        for r in range(rounds):
            new = inc(n * 100 + r)
            while True:
                try:
                    async with factory.transaction() as tx:
                        version = await tx.events.stream_version("hot")
                        await asyncio.sleep(0)  # let others read the same version
                        await tx.events.append("hot", version, [new])
                    succeeded.append((n, new.event_id))
                    break
                except ConcurrencyConflict:
                    conflicts += 1

    await asyncio.gather(*(writer(n) for n in range(writers)))
    async with factory.transaction() as tx:
        stream = await tx.events.read_stream("hot")
    assert [e.version for e in stream] == list(range(1, writers * rounds + 1))
    assert sorted(str(e.event_id) for e in stream) == sorted(str(i) for _, i in succeeded)
    assert len({e.position for e in stream}) == len(stream)
    assert conflicts > 0  # the writers really raced


async def test_a_reader_never_skips_an_event_committed_late(factory: Any) -> None:
    """A transaction that appended first but commits last must not get a position below one a
    reader has already passed."""
    first_appended = asyncio.Event()
    release_first = asyncio.Event()

    async def slow_writer() -> None:
        async with factory.transaction() as tx:
            await tx.events.append("slow", 0, [inc(1)])
            first_appended.set()
            await release_first.wait()

    slow = asyncio.create_task(slow_writer())
    await first_appended.wait()

    async def fast_writer() -> None:
        async with factory.transaction() as tx:
            await tx.events.append("fast", 0, [inc(2)])

    fast = asyncio.create_task(fast_writer())
    await asyncio.sleep(0.05)
    async with factory.transaction() as tx:
        seen_before = await tx.events.read_all()
    assert seen_before == []  # nothing is visible before the first commit
    release_first.set()
    await asyncio.gather(slow, fast)
    async with factory.transaction() as tx:
        everything = await tx.events.read_all()
    assert [e.stream_id for e in everything] == ["slow", "fast"]
    assert everything[0].position < everything[1].position


class Interfering:
    """A transaction factory whose transactions see a competing write commit between the
    command's load and its append (``times`` times)."""

    def __init__(self, factory: Any, times: int) -> None:
        self.factory = factory
        self.times = times

    def transaction(self) -> Any:
        outer = self

        class Events:
            def __init__(self, events: Any) -> None:
                self._events = events

            def __getattr__(self, name: str) -> Any:
                return getattr(self._events, name)

            async def append(self, stream_id: str, expected: int, events: Any) -> int:
                if outer.times > 0:
                    outer.times -= 1
                    async with outer.factory.transaction() as other:
                        await other.events.append(stream_id, await other.events.stream_version(stream_id), [inc(10)])
                return int(await self._events.append(stream_id, expected, events))

        class Tx:
            def __init__(self, tx: Any) -> None:
                self.events = Events(tx.events)
                self.checkpoints = tx.checkpoints

        class Cm:
            async def __aenter__(self) -> Tx:
                self._cm = outer.factory.transaction()
                return Tx(await self._cm.__aenter__())

            async def __aexit__(self, *exc: Any) -> Any:
                return await self._cm.__aexit__(*exc)

        return Cm()


async def test_execute_reloads_and_retries_after_a_conflict(factory: Any) -> None:
    seen: list[int] = []

    def decide(state: Counter) -> list[Event]:
        seen.append(state.total)
        return [Incremented(by=state.total + 1)]

    outcome = await execute(Interfering(factory, times=1), "cmd", COUNTER, decide)
    assert outcome.attempts == 2
    assert seen == [0, 10]  # the second attempt decided on the reloaded state
    assert outcome.state == Counter(total=21, changes=2)
    async with factory.transaction() as tx:
        assert [e.payload for e in await tx.events.read_stream("cmd")] == [Incremented(by=10), Incremented(by=11)]


async def test_execute_gives_up_after_three_attempts(factory: Any) -> None:
    calls = 0

    def decide(state: Counter) -> list[Event]:
        nonlocal calls
        calls += 1
        return [Incremented(by=1)]

    with pytest.raises(ConcurrencyConflict):
        await execute(Interfering(factory, times=99), "busy", COUNTER, decide)
    assert calls == 3
    async with factory.transaction() as tx:  # only the three competing writes landed
        assert [e.payload for e in await tx.events.read_stream("busy")] == [Incremented(by=10)] * 3


async def test_snapshots_are_used_and_never_fail_a_command(factory: Any) -> None:
    for _ in range(12):
        await execute(factory, "snap", COUNTER, lambda s: [Incremented(by=1)], snapshot_every=5)
    async with factory.transaction() as tx:
        snapshot = await tx.events.load_snapshot("snap")
        assert snapshot is not None
        assert snapshot.version == 10
        loaded = await load(tx.events, "snap", COUNTER)
    assert loaded.snapshot_version == 10
    assert loaded.state == Counter(total=12, changes=12)
    assert loaded.version == 12

    # A snapshot of another schema is ignored, not mis-read.
    async with factory.transaction() as tx:
        await tx.events.save_snapshot(Snapshot(stream_id="snap", version=12, schema="counter:0", state=b'{"x":1}'))
    async with factory.transaction() as tx:
        loaded = await load(tx.events, "snap", COUNTER)
    assert loaded.snapshot_version == 0
    assert loaded.state == Counter(total=12, changes=12)

    # A snapshot write that fails inside a command's transaction does not stop it committing.
    async with factory.transaction() as tx:
        await tx.events.append("snap", 12, [inc(1)])
        with pytest.raises(Exception):  # noqa: B017, PT011 - each backend raises its own error
            await tx.events.save_snapshot(Snapshot(stream_id="snap", version=13, schema="counter:1", state=b"{bad"))
        await tx.events.append("snap", 13, [inc(1)])
    async with factory.transaction() as tx:
        loaded = await load(tx.events, "snap", COUNTER)
    assert loaded.version == 14
    assert loaded.state.total == 14


async def test_postgres_append_answers_with_the_events_as_read_back(db: Database) -> None:
    """What ``append_recorded`` answers (and the chat commands project without a read-back) is
    exactly what reading the stream gives: versions, positions, times, payloads, metadata."""
    async with PostgresTransactionFactory(db).transaction() as tx:
        await tx.events.append("recorded-1", 0, [inc(1)])
        recorded = await tx.events.append_recorded("recorded-1", 1, [inc(2, tenant_id="t1", actor="user:u1"), inc(3)])
        assert [e.version for e in recorded] == [2, 3]
        assert recorded == await tx.events.read_stream("recorded-1", from_version=2)
        with pytest.raises(ConcurrencyConflict):
            await tx.events.append_recorded("recorded-1", 1, [inc(4)])
