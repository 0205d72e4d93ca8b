"""Event store ports: the store bound to one unit of work, snapshots, checkpoints, and the transaction factory.

Implementations live in ``infra.eventstore`` (Postgres and in-memory); both pass one contract suite.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol, TypeVar

import msgspec

from domain.shared.events import NewEvent, RecordedEvent


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """An aggregate's folded state at ``version``; ``schema`` names the state's shape so a changed
    shape is ignored instead of mis-decoded. ``state`` is the state encoded as JSON."""

    stream_id: str
    version: int
    schema: str
    state: bytes


class EventStore(Protocol):
    """The event store as seen from inside one transaction: writes become visible at commit."""

    async def append(self, stream_id: str, expected_version: int, events: Sequence[NewEvent]) -> int:
        """Append ``events`` after ``expected_version`` (0: the stream must not exist yet) and return
        the stream's new version. A stale expected version raises ``ConcurrencyConflict``."""
        ...

    async def read_stream(
        self, stream_id: str, *, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        """Events of one stream in version order, starting at ``from_version``."""
        ...

    async def read_all(self, *, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Committed events of every stream in position order, strictly after ``after_position``."""
        ...

    async def stream_version(self, stream_id: str) -> int:
        """The stream's current version (0 if it does not exist)."""
        ...

    async def load_snapshot(self, stream_id: str) -> Snapshot | None: ...

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store ``snapshot`` unless a newer one exists. May fail; callers must tolerate that."""
        ...


class Checkpoints(Protocol):
    """Projection checkpoints, written in the same transaction as the projection's rows."""

    async def lock(self, name: str) -> int:
        """The checkpoint of ``name`` (0 if new), locked until the transaction ends so only one
        runner advances a projection at a time."""
        ...

    async def save(self, name: str, position: int) -> None: ...


class Transaction(Protocol):
    """One unit of work: an event store and checkpoints sharing a single transaction."""

    @property
    def events(self) -> EventStore: ...

    @property
    def checkpoints(self) -> Checkpoints: ...


TxT_co = TypeVar("TxT_co", bound=Transaction, covariant=True)


class TransactionFactory(Protocol[TxT_co]):
    """Opens units of work: ``async with factory.transaction() as tx``. The block commits when it
    exits normally and rolls back when it raises."""

    def transaction(self) -> AbstractAsyncContextManager[TxT_co]: ...
