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

import msgspec
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import Text

from domain.shared.errors import ConcurrencyConflict, Invalid
from domain.shared.events import EventMetadata, NewEvent, RecordedEvent
from domain.shared.eventstore import Snapshot
from infra.db.engine import Database, WriteSession
from infra.eventstore.codec import EventCodec

APPEND_LOCK = 0x4C53_4556  # "LSEV": the one advisory lock key every appender takes.

NUDGE_CHANNEL = "liteskill:events"
"""Redis pub/sub channel told (best effort, after commit) that new events exist."""

_META_DECODER = msgspec.json.Decoder(EventMetadata)
_ENCODER = msgspec.json.Encoder()

_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
_INSERT = text(
    """
    INSERT INTO events (stream_id, version, position, event_id, type_id, data, metadata, tenant_id)
    SELECT :stream_id, :expected + t.ord, nextval('events_position_seq'), t.event_id, t.type_id,
           t.data::jsonb, t.metadata::jsonb, t.tenant_id
    FROM (
        SELECT * FROM unnest(:event_ids, :type_ids, :datas, :metas, :tenants)
            WITH ORDINALITY AS u(event_id, type_id, data, metadata, tenant_id, ord)
        ORDER BY ord
    ) AS t
    WHERE (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = :stream_id) = :expected
    RETURNING version
    """
).bindparams(
    bindparam("event_ids", type_=ARRAY(UUID(as_uuid=True))),
    bindparam("type_ids", type_=ARRAY(Text)),
    bindparam("datas", type_=ARRAY(Text)),
    bindparam("metas", type_=ARRAY(Text)),
    bindparam("tenants", type_=ARRAY(Text)),
)
_COLUMNS = "event_id, stream_id, version, position, type_id, data::text, metadata::text, recorded_at"
_READ_STREAM = text(
    f"SELECT {_COLUMNS} FROM events WHERE stream_id = :stream_id AND version >= :from_version "
    "ORDER BY version LIMIT :limit"
)
_READ_ALL = text(f"SELECT {_COLUMNS} FROM events WHERE position > :after ORDER BY position LIMIT :limit")
_VERSION = text("SELECT coalesce(max(version), 0) FROM events WHERE stream_id = :stream_id")
_HEAD = text("SELECT coalesce(max(position), 0) FROM events")
_LOAD_SNAPSHOT = text("SELECT version, schema, state::text FROM snapshots WHERE stream_id = :stream_id")
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

    def __init__(self, session: AsyncSession, codec: EventCodec | None = None) -> None:
        self.session = session
        self.codec = codec or EventCodec()
        self._locked = False
        self.appended = 0
        """Events appended through this store (lets the unit of work nudge readers after commit)."""

    async def append(self, stream_id: str, expected_version: int, events: Sequence[NewEvent]) -> int:
        if expected_version < 0:
            raise Invalid("expected_version must be >= 0", code="invalid_expected_version")
        if not events:
            return expected_version
        if len(events) > MAX_BATCH:
            raise Invalid(f"at most {MAX_BATCH} events per append", code="too_many_events")
        encode, type_of = self.codec.encode, self.codec.type_id
        params: dict[str, Any] = {
            "stream_id": stream_id,
            "expected": expected_version,
            "event_ids": [e.event_id for e in events],
            "type_ids": [type_of(e.payload) for e in events],
            "datas": [encode(e.payload).decode() for e in events],
            "metas": [_ENCODER.encode(e.metadata).decode() for e in events],
            "tenants": [e.metadata.tenant_id for e in events],
        }
        if not self._locked:
            await self.session.execute(_LOCK, {"key": APPEND_LOCK})
            self._locked = True
        try:
            result = await self.session.execute(_INSERT, params)
        except IntegrityError as exc:  # a writer that bypassed the lock, or a reused event id
            actual = await self.stream_version(stream_id)
            raise ConcurrencyConflict(stream_id, expected_version, actual) from exc
        versions = result.scalars().all()
        if len(versions) != len(events):
            raise ConcurrencyConflict(stream_id, expected_version, await self.stream_version(stream_id))
        self.appended += len(events)
        return expected_version + len(events)

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
        params = {"stream_id": stream_id, "from_version": max(from_version, 1), "limit": limit}
        return self._decode((await self.session.execute(_READ_STREAM, params)).all())

    async def read_all(self, *, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        result = await self.session.execute(_READ_ALL, {"after": after_position, "limit": limit})
        return self._decode(result.all())

    async def stream_version(self, stream_id: str) -> int:
        return int((await self.session.execute(_VERSION, {"stream_id": stream_id})).scalar_one())

    async def head_position(self) -> int:
        return int((await self.session.execute(_HEAD)).scalar_one())

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        row = (await self.session.execute(_LOAD_SNAPSHOT, {"stream_id": stream_id})).first()
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
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock(self, name: str) -> int:
        await self.session.execute(_CHECKPOINT_ENSURE, {"name": name})
        return int((await self.session.execute(_CHECKPOINT_LOCK, {"name": name})).scalar_one())

    async def save(self, name: str, position: int) -> None:
        await self.session.execute(_CHECKPOINT_SAVE, {"name": name, "position": position})


class PostgresTransaction:
    """One unit of work: the session plus the event store, checkpoints and outbox sharing it."""

    def __init__(self, session: WriteSession, codec: EventCodec) -> None:
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
        async with self.db.write() as session:
            tx = PostgresTransaction(session, self.codec)
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
