"""Decide/evolve aggregates: fold a stream (from its latest snapshot) into state, and run a command
as load -> decide -> append inside one transaction, reloading and retrying on a concurrency conflict.

Snapshots are an optimisation only: a snapshot that cannot be read, decoded or saved is logged and
ignored, never allowed to fail a command.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from domain.shared.errors import ConcurrencyConflict
from domain.shared.events import Event, EventMetadata, NewEvent
from domain.shared.eventstore import EventStore, Snapshot, Transaction, TransactionFactory

log = logging.getLogger(__name__)

S = TypeVar("S")

MAX_ATTEMPTS = 3
"""Total attempts of a command (the first one plus two retries after conflicts)."""


@dataclass(frozen=True, slots=True)
class Aggregate(Generic[S]):
    """How a stream folds into state. ``state_type`` must be msgspec-encodable for snapshots;
    bump ``schema`` whenever the state's shape changes so old snapshots are ignored."""

    name: str
    state_type: type[S]
    initial: Callable[[], S]
    evolve: Callable[[S, Event], S]
    schema: str = "1"

    @property
    def snapshot_schema(self) -> str:
        return f"{self.name}:{self.schema}"

    def fold(self, state: S, events: Iterable[Event]) -> S:
        for event in events:
            state = self.evolve(state, event)
        return state


@dataclass(frozen=True, slots=True)
class Loaded(Generic[S]):
    state: S
    version: int
    snapshot_version: int
    """Version of the snapshot the state started from (0: replayed from the first event)."""


@dataclass(frozen=True, slots=True)
class Outcome(Generic[S]):
    """What a command did: the state and version after it, the events it appended, attempts used."""

    state: S
    version: int
    events: tuple[NewEvent, ...]
    attempts: int


Decide = Callable[[S], Sequence[Event]]
"""A command's rule: given the current state, the events to append (empty: nothing to do)."""


def _decode_snapshot(snapshot: Snapshot | None, aggregate: Aggregate[S]) -> tuple[S, int] | None:
    if snapshot is None:
        return None
    if snapshot.schema != aggregate.snapshot_schema:
        log.info(
            "ignoring snapshot of another schema", extra={"stream_id": snapshot.stream_id, "schema": snapshot.schema}
        )
        return None
    try:
        state = msgspec.json.decode(snapshot.state, type=aggregate.state_type)
    except (msgspec.DecodeError, msgspec.ValidationError, TypeError):
        log.warning(
            "snapshot could not be decoded; replaying the stream",
            extra={"stream_id": snapshot.stream_id},
            exc_info=True,
        )
        return None
    return state, snapshot.version


async def load(store: EventStore, stream_id: str, aggregate: Aggregate[S]) -> Loaded[S]:
    """The aggregate's current state: the latest usable snapshot plus the events after it."""
    decoded = _decode_snapshot(await store.load_snapshot(stream_id), aggregate)
    state, version = decoded if decoded is not None else (aggregate.initial(), 0)
    snapshot_version = version
    for recorded in await store.read_stream(stream_id, from_version=version + 1):
        state = aggregate.evolve(state, recorded.payload)
        version = recorded.version
    return Loaded(state=state, version=version, snapshot_version=snapshot_version)


async def save_snapshot_quietly(
    store: EventStore, stream_id: str, aggregate: Aggregate[Any], version: int, state: object
) -> bool:
    """Try to store a snapshot; on any failure log it and return False (the command goes on)."""
    try:
        encoded = msgspec.json.encode(state)
        await store.save_snapshot(
            Snapshot(stream_id=stream_id, version=version, schema=aggregate.snapshot_schema, state=encoded)
        )
    except Exception:
        log.warning("snapshot not saved", extra={"stream_id": stream_id, "version": version}, exc_info=True)
        return False
    return True


async def execute(
    factory: TransactionFactory[Transaction],
    stream_id: str,
    aggregate: Aggregate[S],
    decide: Decide[S],
    metadata: EventMetadata | None = None,
    *,
    snapshot_every: int = 100,
    max_attempts: int = MAX_ATTEMPTS,
) -> Outcome[S]:
    """Load, decide and append in one transaction per attempt. On ``ConcurrencyConflict`` reload and
    decide again, at most ``max_attempts`` attempts in total, then re-raise. Other errors propagate
    at once (the transaction rolls back). A snapshot is saved when ``snapshot_every`` events have
    accumulated since the last one."""
    meta = metadata if metadata is not None else EventMetadata()
    for attempt in range(1, max_attempts + 1):
        try:
            async with factory.transaction() as tx:
                loaded = await load(tx.events, stream_id, aggregate)
                payloads = tuple(decide(loaded.state))
                if not payloads:
                    return Outcome(state=loaded.state, version=loaded.version, events=(), attempts=attempt)
                new = tuple(NewEvent(payload=p, metadata=meta) for p in payloads)
                version = await tx.events.append(stream_id, loaded.version, new)
                state = aggregate.fold(loaded.state, payloads)
                if version - loaded.snapshot_version >= snapshot_every:
                    await save_snapshot_quietly(tx.events, stream_id, aggregate, version, state)
            return Outcome(state=state, version=version, events=new, attempts=attempt)
        except ConcurrencyConflict:
            if attempt >= max_attempts:
                raise
            log.info("concurrency conflict; retrying", extra={"stream_id": stream_id, "attempt": attempt})
    raise AssertionError("unreachable")  # pragma: no cover
