"""A run's ordered event log in a Redis stream: publish with gap-free ``seq``, replay, then tail.

Key ``liteskill:run:<id>:events``; entry id ``<seq>-1``, so resuming "after N" is ``XRANGE (N-1``
and Redis itself refuses an out-of-order or duplicate seq. One writer per run (the process holding
its lease) keeps the counter in memory. After the terminal event the key expires after the
retention period; a position that is no longer retained raises ``StreamExpired``. Live deltas
never touch PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from redis.asyncio import Redis

from domain.runs.events import TERMINAL_TYPES, RunEvent, is_terminal, type_of
from domain.shared.errors import DomainError

_ENCODER = msgspec.json.Encoder()
_REPLAY_BATCH = 500


class StreamExpired(DomainError):
    """This run's events are no longer retained: re-read the run and its messages."""

    code = "stream_expired"


def stream_key(run_id: uuid.UUID) -> str:
    return f"liteskill:run:{run_id}:events"


@dataclass(frozen=True, slots=True)
class Frame:
    """One published event: its seq, its type and its one-line JSON (envelope included)."""

    seq: int
    type: str
    data: bytes

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES


def _seq_of(entry_id: Any) -> int:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.split("-", 1)[0])


def _frame(entry_id: Any, fields: Any) -> Frame:
    return Frame(seq=_seq_of(entry_id), type=fields[b"type"].decode(), data=fields[b"data"])


class RunStreams:
    """Writer and reader of run streams. ``retention_s``: how long a finished run stays replayable."""

    def __init__(self, redis: Redis, retention_s: int) -> None:
        self.redis = redis
        self.retention_s = retention_s
        self._last: dict[uuid.UUID, int] = {}

    async def last_seq(self, run_id: uuid.UUID) -> int:
        entries: Any = await self.redis.xrevrange(stream_key(run_id), count=1)
        return _seq_of(entries[0][0]) if entries else 0

    async def publish(self, run_id: uuid.UUID, event: RunEvent) -> int:
        """Append ``event`` with the next seq and return it; a terminal event starts retention."""
        last = self._last.get(run_id)
        if last is None:
            last = await self.last_seq(run_id)
        seq = last + 1
        stamped = msgspec.structs.replace(event, seq=seq, run_id=run_id, created_at=datetime.now(UTC))
        key = stream_key(run_id)
        fields: dict[str, bytes | str] = {"type": type_of(event), "data": _ENCODER.encode(stamped)}
        if is_terminal(event):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xadd(key, fields, id=f"{seq}-1")  # type: ignore[arg-type]
                pipe.expire(key, self.retention_s)
                await pipe.execute()
            self._last.pop(run_id, None)
        else:
            await self.redis.xadd(key, fields, id=f"{seq}-1")  # type: ignore[arg-type]
            self._last[run_id] = seq
        return seq

    def forget(self, run_id: uuid.UUID) -> None:
        """Drop the writer's counter (the run ended without a terminal event from this process)."""
        self._last.pop(run_id, None)

    async def check(self, run_id: uuid.UUID, after: int = 0, *, finished: bool = False) -> None:
        """Raise ``StreamExpired`` if the frames after ``after`` are no longer retained. A missing
        stream of an unfinished run only means nothing was published yet (retention starts at the end)."""
        first: Any = await self.redis.xrange(stream_key(run_id), count=1)
        if not first:
            if finished:
                raise StreamExpired()
        elif _seq_of(first[0][0]) > after + 1:
            raise StreamExpired()  # trimmed past the requested position

    async def read(
        self, run_id: uuid.UUID, after: int = 0, *, finished: bool = False, idle_s: float = 15.0
    ) -> AsyncGenerator[Frame | None, None]:
        """Every frame with ``seq > after`` (replay), then live ones until the terminal frame.

        Yields ``None`` after ``idle_s`` without a frame (the caller may send a keep-alive).
        ``finished``: the run is known to be over (its terminal frame was published), so reading
        stops after the replay. Call ``check`` first to report an expired position.
        """
        key = stream_key(run_id)
        cursor = f"{after}-1"
        while True:  # replay
            batch: Any = await self.redis.xrange(key, min=f"({cursor}", count=_REPLAY_BATCH)
            for entry_id, fields in batch:
                frame = _frame(entry_id, fields)
                cursor = f"{frame.seq}-1"
                yield frame
                if frame.terminal:
                    return
            if len(batch) < _REPLAY_BATCH:
                break
        if finished:
            return  # the terminal frame was at or before ``after``
        block_ms = max(1, int(idle_s * 1000))
        while True:  # tail
            answer: Any = await self.redis.xread({key: cursor}, count=_REPLAY_BATCH, block=block_ms)
            if not answer:
                yield None
                continue
            for _key, entries in answer:
                for entry_id, fields in entries:
                    frame = _frame(entry_id, fields)
                    cursor = f"{frame.seq}-1"
                    yield frame
                    if frame.terminal:
                        return
