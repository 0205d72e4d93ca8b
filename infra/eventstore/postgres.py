"""The Postgres event store, checkpoints and unit of work.

Positions are assigned in commit order. Every appending transaction first takes one
transaction-scoped advisory lock (``APPEND_LOCK``), draws its positions from
``events_position_seq`` while holding it, and releases it only when it commits or rolls back.
Postgres makes a commit visible before it releases the transaction's locks, so by the time the
next appender can draw a position, every smaller position is either visible or rolled back. A
reader that has seen position P therefore never later discovers an event below P: catch-up
projections can checkpoint a single number without skipping an event committed late. The price
is that appends (not reads) are serialised from the first append of a transaction to its commit,
so commands keep their work after ``append`` short. Gaps (from rollbacks) are normal.

Optimistic concurrency: the insert only happens when the stream's current version equals the
expected one (checked under the lock, so it is exact); ``(stream_id, version)`` is the primary
key as a second line of defence.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from domain.shared.errors import ConcurrencyConflict, Conflict, Invalid
from domain.shared.events import EventMetadata, NewEvent, RecordedEvent
from domain.shared.eventstore import Snapshot
from infra.db.engine import Database
from infra.eventstore.codec import EventCodec

APPEND_LOCK = 0x4C53_4556  # "LSEV": the one advisory lock key every appender takes.

NUDGE_CHANNEL = "liteskill:events"
"""Redis pub/sub channel told (best effort, after commit) that new events exist."""

_META_DECODER = msgspec.json.Decoder(EventMetadata)
_ENCODER = msgspec.json.Encoder()

# Hot paths talk to asyncpg directly on the session's own connection, inside its transaction
# (see ``PostgresEventStore._driver``): SQLAlchemy's per-row result processing doubled the cost of
# loading an aggregate. Everything else goes through SQLAlchemy.
_LOCK = "SELECT pg_advisory_xact_lock($1)"
_INSERT = """
    INSERT INTO events (stream_id, version, position, event_id, type_id, data, metadata, tenant_id)
    SELECT $1, $2 + t.ord, nextval('events_position_seq'), t.event_id, t.type_id,
           t.data::jsonb, t.metadata::jsonb, t.tenant_id
    FROM (
        SELECT * FROM unnest($3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[])
            WITH ORDINALITY AS u(event_id, type_id, data, metadata, tenant_id, ord)
        ORDER BY ord
    ) AS t
    WHERE (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1) = $2
    RETURNING version, position, recorded_at
"""
_COLUMNS = "event_id, stream_id, version, position, type_id, data::text, metadata::text, recorded_at"
_READ_STREAM = f"SELECT {_COLUMNS} FROM events WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3"
_READ_ALL = f"SELECT {_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2"
_VERSION = "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1"
_HEAD = "SELECT coalesce(max(position), 0) FROM events"
_LOAD_SNAPSHOT = "SELECT version, schema, state::text FROM snapshots WHERE stream_id = $1"
_SAVE_SNAPSHOT = text(
    """
    INSERT INTO snapshots (stream_id, version, schema, state)
    VALUES (:stream_id, :version, :schema, CAST(:state AS jsonb))
    ON CONFLICT (stream_id) DO UPDATE
        SET version = excluded.version, schema = excluded.schema, state = excluded.state, recorded_at = now()
        WHERE snapshots.version < excluded.version OR snapshots.schema <> excluded.schema
    """
)
_CHECKPOINT_ENSURE = text("INSERT INTO projection_checkpoints (name) VALUES (:name) ON CONFLICT (name) DO NOTHING")
_CHECKPOINT_LOCK = text("SELECT position FROM projection_checkpoints WHERE name = :name FOR UPDATE")
_CHECKPOINT_SAVE = text("UPDATE projection_checkpoints SET position = :position, updated_at = now() WHERE name = :name")

MAX_BATCH = 10_000


class PostgresEventStore:
    """The event store inside one SQLAlchemy session's transaction (it never commits)."""

    def __init__(self, session: AsyncSession | AsyncConnection, codec: EventCodec | None = None) -> None:
        self.session = session
        self.codec = codec or EventCodec()
        self._locked = False
        self._raw: Any = None
        self._adapted: Any = None
        self.appended = 0
        """Events appended through this store (lets the unit of work nudge readers after commit)."""

    async def driver(self) -> asyncpg.Connection:
        """The asyncpg connection under the session, with the session's transaction begun on it.

        SQLAlchemy's asyncpg adapter sends BEGIN lazily, before its first statement; a statement
        sent straight to the driver before that would run outside the transaction, so begin it
        here the same way the adapter would.
        """
        if self._raw is None:
            conn = self.session if isinstance(self.session, AsyncConnection) else await self.session.connection()
            fairy = await conn.get_raw_connection()
            adapted: Any = fairy.dbapi_connection
            if adapted._transaction is None:
                await adapted._start_transaction()
            self._raw = fairy.driver_connection
            self._adapted = adapted
        elif self._adapted._transaction is None:  # pragma: no cover - the session ended under us
            raise RuntimeError("the session's transaction has ended")
        return self._raw

    async def append(self, stream_id: str, expected_version: int, events: Sequence[NewEvent]) -> int:
        await self.append_recorded(stream_id, expected_version, events)
        return expected_version + len(events)

    async def append_recorded(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> list[RecordedEvent]:
        """``append``, answering with the events as recorded (versions, positions, times), so a
        caller that projects them needs no read-back."""
        if expected_version < 0:
            raise Invalid("expected_version must be >= 0", code="invalid_expected_version")
        if not events:
            return []
        if len(events) > MAX_BATCH:
            raise Invalid(f"at most {MAX_BATCH} events per append", code="too_many_events")
        encode, type_of = self.codec.encode, self.codec.type_id
        types = [type_of(e.payload) for e in events]
        args = (
            stream_id,
            expected_version,
            [e.event_id for e in events],
            types,
            [encode(e.payload).decode() for e in events],
            [_ENCODER.encode(e.metadata).decode() for e in events],
            [e.metadata.tenant_id for e in events],
        )
        conn = await self.driver()
        if not self._locked:
            await conn.execute(_LOCK, APPEND_LOCK)
            self._locked = True
        try:
            rows = await conn.fetch(_INSERT, *args)
        except asyncpg.UniqueViolationError as exc:  # the transaction is aborted now: no further queries
            if exc.constraint_name == "uq_events_event_id":
                raise Conflict("an event with this id is already recorded", code="duplicate_event") from exc
            raise ConcurrencyConflict(stream_id, expected_version, None) from exc
        if len(rows) != len(events):
            raise ConcurrencyConflict(stream_id, expected_version, await self.stream_version(stream_id))
        self.appended += len(events)
        rows = sorted(rows, key=lambda r: r[0])
        return [
            RecordedEvent(
                event_id=e.event_id,
                stream_id=stream_id,
                version=r[0],
                position=r[1],
                type_id=type_id,
                payload=e.payload,
                metadata=e.metadata,
                recorded_at=r[2],
            )
            for e, type_id, r in zip(events, types, rows, strict=True)
        ]

    def _decode(self, rows: Sequence[Any]) -> list[RecordedEvent]:
        decode = self.codec.decode
        return [
            RecordedEvent(
                event_id=r[0],
                stream_id=r[1],
                version=r[2],
                position=r[3],
                type_id=r[4],
                payload=decode(r[4], r[5]),
                metadata=_META_DECODER.decode(r[6]),
                recorded_at=r[7],
            )
            for r in rows
        ]

    async def read_stream(
        self, stream_id: str, *, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        conn = await self.driver()
        return self._decode(await conn.fetch(_READ_STREAM, stream_id, max(from_version, 1), limit))

    async def read_all(self, *, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        conn = await self.driver()
        return self._decode(await conn.fetch(_READ_ALL, after_position, limit))

    async def stream_version(self, stream_id: str) -> int:
        return int(await (await self.driver()).fetchval(_VERSION, stream_id))

    async def head_position(self) -> int:
        return int(await (await self.driver()).fetchval(_HEAD))

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        row = await (await self.driver()).fetchrow(_LOAD_SNAPSHOT, stream_id)
        if row is None:
            return None
        return Snapshot(stream_id=stream_id, version=row[0], schema=row[1], state=row[2].encode())

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        # A savepoint: a failed snapshot write must not poison the command's transaction.
        async with self.session.begin_nested():
            await self.session.execute(
                _SAVE_SNAPSHOT,
                {
                    "stream_id": snapshot.stream_id,
                    "version": snapshot.version,
                    "schema": snapshot.schema,
                    "state": snapshot.state.decode(),
                },
            )


class PostgresCheckpoints:
    def __init__(self, session: AsyncSession | AsyncConnection) -> None:
        self.session = session

    async def lock(self, name: str) -> int:
        await self.session.execute(_CHECKPOINT_ENSURE, {"name": name})
        return int((await self.session.execute(_CHECKPOINT_LOCK, {"name": name})).scalar_one())

    async def save(self, name: str, position: int) -> None:
        await self.session.execute(_CHECKPOINT_SAVE, {"name": name, "position": position})


class PostgresTransaction:
    """One unit of work: a connection in a transaction plus the event store, checkpoints and
    outbox sharing it. ``session`` is a SQLAlchemy Core ``AsyncConnection``, not an ORM session:
    units of work run Core statements only, and skipping the ORM session's bookkeeping is a fifth
    of the cost of a one-event command."""

    def __init__(self, session: AsyncConnection, codec: EventCodec) -> None:
        from infra.worker.outbox import Outbox

        self.session = session
        self._events = PostgresEventStore(session, codec)
        self._checkpoints = PostgresCheckpoints(session)
        self.outbox = Outbox(session)

    @property
    def events(self) -> PostgresEventStore:
        return self._events

    @property
    def checkpoints(self) -> PostgresCheckpoints:
        return self._checkpoints


class PostgresTransactionFactory:
    """Opens units of work on ``db``; after a commit that appended events or enqueued jobs it
    nudges listeners through Redis (best effort: pollers catch up anyway)."""

    def __init__(self, db: Database, redis: Any | None = None, codec: EventCodec | None = None) -> None:
        self.db = db
        self.redis = redis
        self.codec = codec or EventCodec()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        async with self.db.engine.begin() as conn:
            tx = PostgresTransaction(conn, self.codec)
            yield tx
        await self.after_commit(tx)

    async def after_commit(self, tx: PostgresTransaction) -> None:
        if self.redis is None:
            return
        from infra.worker.outbox import OUTBOX_CHANNEL

        try:
            if tx.events.appended:
                await self.redis.publish(NUDGE_CHANNEL, b"1")
            if tx.outbox.enqueued:
                await self.redis.publish(OUTBOX_CHANNEL, b"1")
        except Exception:
            import logging

            logging.getLogger(__name__).debug("nudge failed", exc_info=True)
