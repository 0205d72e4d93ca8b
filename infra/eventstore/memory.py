"""The in-memory event store: the same contract as Postgres, for unit tests of the domain and for
checking the contract suite itself.

It mirrors the Postgres behaviour on purpose: one append lock held from a transaction's first
append until it ends (positions in commit order, gaps on rollback), payloads encoded and decoded
through the codec (an unregistered event fails here too), snapshot writes that may fail without
affecting the transaction, checkpoint locks held until the transaction ends, and read-model
"tables" that a transaction changes atomically.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec

from domain.shared.clock import utcnow
from domain.shared.errors import ConcurrencyConflict, Invalid
from domain.shared.events import EventMetadata, NewEvent, RecordedEvent
from domain.shared.eventstore import Snapshot
from infra.eventstore.codec import EventCodec
from infra.eventstore.postgres import MAX_BATCH

_META = msgspec.json.Decoder(EventMetadata)


@dataclass(slots=True)
class _Stored:
    event_id: Any
    stream_id: str
    version: int
    position: int
    type_id: str
    data: bytes
    metadata: bytes
    recorded_at: Any


@dataclass
class MemoryBackend:
    """Committed state shared by every transaction of one in-memory store."""

    codec: EventCodec = field(default_factory=EventCodec)
    log: list[_Stored] = field(default_factory=list)
    streams: dict[str, list[_Stored]] = field(default_factory=dict)
    event_ids: set[Any] = field(default_factory=set)
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    checkpoints: dict[str, int] = field(default_factory=dict)
    tables: dict[str, dict[Any, Any]] = field(default_factory=dict)
    last_position: int = 0
    append_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    checkpoint_locks: dict[str, asyncio.Lock] = field(default_factory=dict)


class MemoryEventStore:
    def __init__(self, tx: MemoryTransaction) -> None:
        self._tx = tx
        self._b = tx.backend
        self.appended = 0

    def _stream(self, stream_id: str) -> list[_Stored]:
        return [*self._b.streams.get(stream_id, ()), *(s for s in self._tx.pending if s.stream_id == stream_id)]

    async def append(self, stream_id: str, expected_version: int, events: Sequence[NewEvent]) -> int:
        if expected_version < 0:
            raise Invalid("expected_version must be >= 0", code="invalid_expected_version")
        if not events:
            return expected_version
        if len(events) > MAX_BATCH:
            raise Invalid(f"at most {MAX_BATCH} events per append", code="too_many_events")
        encoded = [(self._b.codec.type_id(e.payload), self._b.codec.encode(e.payload)) for e in events]
        await self._tx.take_append_lock()
        actual = len(self._stream(stream_id))
        pending_ids = {s.event_id for s in self._tx.pending}
        if actual != expected_version or any(
            e.event_id in self._b.event_ids or e.event_id in pending_ids for e in events
        ):
            raise ConcurrencyConflict(stream_id, expected_version, actual)
        now = utcnow()
        for i, (event, (type_id, data)) in enumerate(zip(events, encoded, strict=True), start=1):
            self._b.last_position += 1
            self._tx.pending.append(
                _Stored(
                    event_id=event.event_id,
                    stream_id=stream_id,
                    version=expected_version + i,
                    position=self._b.last_position,
                    type_id=type_id,
                    data=data,
                    metadata=msgspec.json.encode(event.metadata),
                    recorded_at=now,
                )
            )
        self.appended += len(events)
        return expected_version + len(events)

    def _decode(self, items: Sequence[_Stored]) -> list[RecordedEvent]:
        return [
            RecordedEvent(
                event_id=s.event_id,
                stream_id=s.stream_id,
                version=s.version,
                position=s.position,
                type_id=s.type_id,
                payload=self._b.codec.decode(s.type_id, s.data),
                metadata=_META.decode(s.metadata),
                recorded_at=s.recorded_at,
            )
            for s in items
        ]

    async def read_stream(
        self, stream_id: str, *, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        items = [s for s in self._stream(stream_id) if s.version >= from_version]
        return self._decode(items if limit is None else items[:limit])

    async def read_all(self, *, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        items = [s for s in [*self._b.log, *self._tx.pending] if s.position > after_position]
        items.sort(key=lambda s: s.position)
        return self._decode(items[:limit])

    async def stream_version(self, stream_id: str) -> int:
        return len(self._stream(stream_id))

    async def head_position(self) -> int:
        return max((s.position for s in [*self._b.log, *self._tx.pending]), default=0)

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        return self._tx.snapshots.get(stream_id, self._b.snapshots.get(stream_id))

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        msgspec.json.decode(snapshot.state)  # Postgres stores jsonb: invalid JSON fails there too
        current = await self.load_snapshot(snapshot.stream_id)
        if current is None or current.version < snapshot.version or current.schema != snapshot.schema:
            self._tx.snapshots[snapshot.stream_id] = snapshot


class MemoryCheckpoints:
    def __init__(self, tx: MemoryTransaction) -> None:
        self._tx = tx

    async def lock(self, name: str) -> int:
        await self._tx.take_checkpoint_lock(name)
        return self._tx.checkpoints.get(name, self._tx.backend.checkpoints.get(name, 0))

    async def save(self, name: str, position: int) -> None:
        if name not in self._tx.held_checkpoints:
            raise RuntimeError(f"checkpoint {name!r} saved without lock()")
        self._tx.checkpoints[name] = position


class MemoryTransaction:
    def __init__(self, backend: MemoryBackend) -> None:
        self.backend = backend
        self.pending: list[_Stored] = []
        self.snapshots: dict[str, Snapshot] = {}
        self.checkpoints: dict[str, int] = {}
        self.held_checkpoints: set[str] = set()
        self.tables: dict[str, dict[Any, Any]] = {}
        self._holds_append = False
        self._events = MemoryEventStore(self)
        self._checkpoints = MemoryCheckpoints(self)

    @property
    def events(self) -> MemoryEventStore:
        return self._events

    @property
    def checkpoints_port(self) -> MemoryCheckpoints:
        return self._checkpoints

    def table(self, name: str) -> dict[Any, Any]:
        """A read-model table, changed atomically with this transaction."""
        if name not in self.tables:
            self.tables[name] = copy.deepcopy(self.backend.tables.get(name, {}))
        return self.tables[name]

    async def take_append_lock(self) -> None:
        if not self._holds_append:
            await self.backend.append_lock.acquire()
            self._holds_append = True

    async def take_checkpoint_lock(self, name: str) -> None:
        if name in self.held_checkpoints:
            return
        lock = self.backend.checkpoint_locks.setdefault(name, asyncio.Lock())
        await lock.acquire()
        self.held_checkpoints.add(name)

    def commit(self) -> None:
        b = self.backend
        for s in self.pending:
            b.log.append(s)
            b.streams.setdefault(s.stream_id, []).append(s)
            b.event_ids.add(s.event_id)
        b.snapshots.update(self.snapshots)
        b.checkpoints.update(self.checkpoints)
        b.tables.update(self.tables)

    def release(self) -> None:
        if self._holds_append:
            self.backend.append_lock.release()
            self._holds_append = False
        for name in self.held_checkpoints:
            self.backend.checkpoint_locks[name].release()
        self.held_checkpoints.clear()


class MemoryTransactionFactory:
    def __init__(self, backend: MemoryBackend | None = None) -> None:
        self.backend = backend or MemoryBackend()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryUnitOfWork]:
        tx = MemoryTransaction(self.backend)
        try:
            yield MemoryUnitOfWork(tx)
            tx.commit()
        finally:
            tx.release()


class MemoryUnitOfWork:
    """What ``transaction()`` yields: the ports of one memory transaction."""

    def __init__(self, tx: MemoryTransaction) -> None:
        self.tx = tx

    @property
    def events(self) -> MemoryEventStore:
        return self.tx.events

    @property
    def checkpoints(self) -> MemoryCheckpoints:
        return self.tx.checkpoints_port

    def table(self, name: str) -> dict[Any, Any]:
        return self.tx.table(name)
