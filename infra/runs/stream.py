"""A run's ordered event log in a Redis stream: publish with gap-free ``seq``, replay, then tail.

Key ``liteskill:run:<id>:events``; entry id ``<seq>-1``, so resuming "after N" is ``XRANGE (N-1``
and Redis itself refuses an out-of-order or duplicate seq. One writer per run (the process holding
its lease) keeps the counter in memory. After the terminal event the key expires after the
retention period; a position that is no longer retained raises ``StreamExpired``. Live deltas
never touch PostgreSQL.

Writes are group-committed: the ``XADD``s of all of a process's runs that come while one round
trip is in flight share the next pipeline. Readers replay with their own ``XRANGE``; the live
tail is shared per ``RunStreams`` (so per process): frames of runs this process writes go to its
readers straight from the confirmed writes, and one task issues one ``XREAD BLOCK`` over every
other key being followed, fanning the frames out to per-reader queues, so idle subscribers hold
no Redis connection of their own. A reader that joins while that read is blocked wakes it through
a per-process wake stream (an ``XADD`` the blocked ``XREAD`` also watches, so a wake sent before
the read reaches Redis is not lost).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from redis.asyncio import Redis

from domain.runs.events import RunEvent, is_terminal, type_of
from domain.shared.errors import DomainError
from infra.runs.tail import REPLAY_BATCH, Follower, Frame, Tailer, frame_of, seq_of

__all__ = ["Frame", "RunStreams", "StreamExpired", "stream_key"]

_ENCODER = msgspec.json.Encoder()
_WRITE_BATCH = 1_000


class StreamExpired(DomainError):
    """This run's events are no longer retained: re-read the run and its messages."""

    code = "stream_expired"


def stream_key(run_id: uuid.UUID) -> str:
    return f"liteskill:run:{run_id}:events"


@dataclass(slots=True)
class _Write:
    key: str
    frame: Frame
    done: asyncio.Future[None]


class _GroupWriter:
    """Group commit of ``XADD``s: the writes of every run of this process that arrive while one
    round trip is in flight go to Redis together in the next one (one pipeline), so a process
    streaming many runs at once pays one round trip per batch, not per delta. A write that finds
    nothing in flight is sent at once: the first delta waits for no one."""

    def __init__(self, redis: Redis, retention_s: int, written: Callable[[str, list[Frame]], None]) -> None:
        self.redis = redis
        self.retention_s = retention_s
        self._written = written
        self._queue: list[_Write] = []
        self._task: asyncio.Task[None] | None = None

    def write(self, key: str, frame: Frame) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.append(_Write(key, frame, done))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._flush(), name="run-stream-writer")
        return done

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:_WRITE_BATCH], self._queue[_WRITE_BATCH:]
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for w in batch:
                        fields = {"type": w.frame.type, "data": w.frame.data}
                        pipe.xadd(w.key, fields, id=f"{w.frame.seq}-1")  # type: ignore[arg-type]
                        if w.frame.terminal:  # retention starts with the terminal event
                            pipe.expire(w.key, self.retention_s)
                    results: list[Any] = await pipe.execute(raise_on_error=False)
            except asyncio.CancelledError:
                for w in batch + self._queue:
                    w.done.cancel()
                self._queue = []
                raise
            except Exception as exc:  # noqa: BLE001 - the connection failed: every write of the batch hears of it
                for w in batch:
                    if not w.done.done():
                        w.done.set_exception(exc)
                continue
            answers = iter(results)
            confirmed: dict[str, list[Frame]] = {}
            for w in batch:
                answer = next(answers)
                if w.frame.terminal:
                    next(answers)
                if isinstance(answer, Exception):
                    if not w.done.done():
                        w.done.set_exception(answer)
                    continue
                confirmed.setdefault(w.key, []).append(w.frame)
                if not w.done.done():  # else its publisher was cancelled
                    w.done.set_result(None)
            for key, frames in confirmed.items():
                self._written(key, frames)


class RunStreams:
    """Writer and reader of run streams. ``retention_s``: how long a finished run stays replayable."""

    def __init__(self, redis: Redis, retention_s: int) -> None:
        self.redis = redis
        self.retention_s = retention_s
        self._last: dict[uuid.UUID, int] = {}
        self._tailer = Tailer(redis)
        self._writer = _GroupWriter(redis, retention_s, self._tailer.written)

    async def last_seq(self, run_id: uuid.UUID) -> int:
        entries: Any = await self.redis.xrevrange(stream_key(run_id), count=1)
        return seq_of(entries[0][0]) if entries else 0

    async def publish(self, run_id: uuid.UUID, event: RunEvent) -> int:
        """Append ``event`` with the next seq and return it; a terminal event starts retention.

        The seq is taken when the call is made, so concurrent publishes of one run keep their call
        order; a failed write makes the next publish re-read the last seq from Redis."""
        last = self._last.get(run_id)
        if last is None:
            last = await self.last_seq(run_id)
            last = self._last.get(run_id, last)  # a concurrent publish may have taken one meanwhile
        seq = last + 1
        if is_terminal(event):
            self._last.pop(run_id, None)
        else:
            self._last[run_id] = seq
        stamped = msgspec.structs.replace(event, seq=seq, run_id=run_id, created_at=datetime.now(UTC))
        key = stream_key(run_id)
        self._tailer.writing(key, last)
        try:
            await self._writer.write(key, Frame(seq, type_of(event), _ENCODER.encode(stamped)))
        except Exception:
            self._last.pop(run_id, None)
            self._tailer.stop_writing(key)  # its readers go back to reading Redis
            raise
        return seq

    def forget(self, run_id: uuid.UUID) -> None:
        """Drop the writer's counter (the run ended without a terminal event from this process)."""
        self._last.pop(run_id, None)
        self._tailer.stop_writing(stream_key(run_id))

    async def check(self, run_id: uuid.UUID, after: int = 0, *, finished: bool = False) -> None:
        """Raise ``StreamExpired`` if the frames after ``after`` are no longer retained. A missing
        stream of an unfinished run only means nothing was published yet (retention starts at the end)."""
        first: Any = await self.redis.xrange(stream_key(run_id), count=1)
        if not first:
            if finished:
                raise StreamExpired()
        elif seq_of(first[0][0]) > after + 1:
            raise StreamExpired()  # trimmed past the requested position

    async def read_batches(
        self, run_id: uuid.UUID, after: int = 0, *, finished: bool = False, idle_s: float = 15.0
    ) -> AsyncGenerator[list[Frame] | None, None]:
        """Every frame with ``seq > after`` (replay), then live ones until the terminal frame, a batch
        at a time: the frames that are there when the reader comes back for more (a reader that fell
        behind sends them in one write).

        Yields ``None`` after ``idle_s`` without a frame (the caller may send a keep-alive).
        ``finished``: the run is known to be over (its terminal frame was published), so reading
        stops after the replay. Call ``check`` first to report an expired position.
        """
        key = stream_key(run_id)
        cursor = after
        while True:  # replay
            batch: Any = await self.redis.xrange(key, min=f"({cursor}-1", count=REPLAY_BATCH)
            frames = [frame_of(entry_id, fields) for entry_id, fields in batch]
            for i, frame in enumerate(frames):
                if frame.terminal:
                    yield frames[: i + 1]
                    return
            if frames:
                cursor = frames[-1].seq
                yield frames
            if len(batch) < REPLAY_BATCH:
                break
        if finished:
            return  # the terminal frame was at or before ``after``
        follower = Follower(key, cursor)
        try:
            await self._tailer.follow(follower)
            while True:  # tail
                if follower.queue.empty():
                    try:
                        async with asyncio.timeout(idle_s):
                            item = await follower.queue.get()
                    except TimeoutError:
                        yield None
                        continue
                else:
                    item = follower.queue.get_nowait()
                if isinstance(item, BaseException):
                    raise item
                while not follower.queue.empty() and not item[-1].terminal:
                    more = follower.queue.get_nowait()
                    if isinstance(more, BaseException):
                        yield item
                        raise more
                    item = item + more
                yield item
                if item[-1].terminal:
                    return
        finally:
            self._tailer.leave(follower)
