"""A run's ordered event log in a Redis stream: publish with gap-free ``seq``, replay, then tail.

Key ``liteskill:run:<id>:events``; entry id ``<seq>-1``, so resuming "after N" is ``XRANGE (N-1``
and Redis itself refuses an out-of-order or duplicate seq. One writer per run (the process holding
its lease) keeps the counter in memory. After the terminal event the key expires after the
retention period; a position that is no longer retained raises ``StreamExpired``. Live deltas
never touch PostgreSQL.

Readers replay with their own ``XRANGE``; the live tail is shared: one task per ``RunStreams``
(so per process) issues one ``XREAD BLOCK`` over every key being followed and fans the frames out
to per-reader queues, so idle subscribers hold no Redis connection of their own. A reader that
joins while that read is blocked wakes it through a per-process wake stream (an ``XADD`` the
blocked ``XREAD`` also watches, so a wake sent before the read reaches Redis is not lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from domain.runs.events import TERMINAL_TYPES, RunEvent, is_terminal, type_of
from domain.shared.errors import DomainError

log = logging.getLogger(__name__)

_ENCODER = msgspec.json.Encoder()
_REPLAY_BATCH = 500
TAIL_BLOCK_MS = 2_000
"""Longest single ``XREAD BLOCK`` of the shared tailer: under redis-py's default 5 s socket timeout
(and under a smaller one set on the client); the tailer exits at most this long after its last
reader left."""
WAKE_TTL_S = 300
RETRY_MAX_S = 2.0


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


class _Follower:
    """One reader's live position on one key: ``cursor`` is the seq of the last frame it was given."""

    __slots__ = ("cursor", "key", "queue")

    def __init__(self, key: str, cursor: int) -> None:
        self.key = key
        self.cursor = cursor
        self.queue: asyncio.Queue[list[Frame] | BaseException] = asyncio.Queue()


class _Tailer:
    """The shared live tail of one ``RunStreams``: a task that exists while someone follows a key
    (and up to ``TAIL_BLOCK_MS`` after), reading every followed key with one blocking ``XREAD``.

    A follower gets frames in order from just after its cursor, never one twice: one that joined
    with an older position than the read in flight skips that read's answer and is served by the
    next one, which starts from the oldest cursor among a key's followers. Connection errors are
    retried with backoff (followers keep waiting); any other error is raised in every follower.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.followers: dict[str, set[_Follower]] = {}
        self.wake_key = f"liteskill:run-tail:{uuid.uuid4()}"
        self._wake_cursor = "0-0"
        self._in_flight: dict[str, int] = {}  # key -> the cursor the blocked XREAD asked from
        self._task: asyncio.Task[None] | None = None
        kwargs = redis.connection_pool.connection_kwargs
        socket_timeout = kwargs.get("socket_timeout", kwargs.get("orig_socket_timeout"))
        self.block_ms = TAIL_BLOCK_MS
        if socket_timeout:  # a blocked read must answer before the client gives up on the socket
            self.block_ms = max(1, min(TAIL_BLOCK_MS, int(float(socket_timeout) * 800)))

    async def follow(self, follower: _Follower) -> None:
        self.followers.setdefault(follower.key, set()).add(follower)
        if self._task is None or self._task.done():
            self._in_flight = {}
            self._task = asyncio.get_running_loop().create_task(self._run(), name="run-stream-tailer")
            return  # its first read includes this key
        sent = self._in_flight.get(follower.key)
        if sent is not None and sent <= follower.cursor:
            return  # the read in flight already covers this position
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(self.wake_key, {"w": "1"}, maxlen=1, approximate=False)
            pipe.expire(self.wake_key, WAKE_TTL_S)
            await pipe.execute()

    def leave(self, follower: _Follower) -> None:
        followers = self.followers.get(follower.key)
        if followers is not None:
            followers.discard(follower)
            if not followers:
                del self.followers[follower.key]

    async def _run(self) -> None:
        retry_s = 0.05
        try:
            while self.followers:
                sent = {key: min(f.cursor for f in fs) for key, fs in self.followers.items()}
                streams: dict[Any, Any] = {key: f"{cursor}-1" for key, cursor in sent.items()}
                streams[self.wake_key] = self._wake_cursor
                self._in_flight = sent
                try:
                    answer: Any = await self.redis.xread(streams, count=_REPLAY_BATCH, block=self.block_ms)
                except (RedisConnectionError, RedisTimeoutError, OSError, ResponseError) as exc:
                    self._in_flight = {}
                    if isinstance(exc, ResponseError):
                        with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
                            await self._fail_broken_keys(exc, list(sent))
                    if not self.followers:
                        return
                    log.warning("run stream tail: %r; retrying in %.2f s", exc, retry_s)
                    await asyncio.sleep(retry_s)
                    retry_s = min(retry_s * 2, RETRY_MAX_S)
                    continue
                self._in_flight = {}
                retry_s = 0.05
                self._deliver(answer or [], sent)
        except Exception as exc:  # noqa: BLE001 - not a connection problem: every follower hears of it
            for followers in self.followers.values():
                for follower in followers:
                    follower.queue.put_nowait(exc)
            self.followers.clear()

    async def _fail_broken_keys(self, exc: ResponseError, keys: list[str]) -> None:
        """An error answer (a key that is no longer a stream, say) ends the followers of the keys at
        fault with that error; the others wait for the retry (a stream deleted while the read was
        blocked, ``UNBLOCKED``, leaves nothing at fault)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.type(key)
            kinds: list[Any] = await pipe.execute()
        for key, kind in zip(keys, kinds, strict=True):
            if kind not in (b"stream", b"none", "stream", "none"):
                for follower in self.followers.pop(key, ()):
                    follower.queue.put_nowait(exc)

    def _deliver(self, answer: Any, sent: dict[str, int]) -> None:
        for raw_key, entries in answer:
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            if key == self.wake_key:
                last = entries[-1][0]
                self._wake_cursor = last.decode() if isinstance(last, bytes) else last
                continue
            frames = [_frame(entry_id, fields) for entry_id, fields in entries]
            for follower in list(self.followers.get(key, ())):
                if follower.cursor < sent.get(key, 0):
                    continue  # joined after this read was sent, further back: the next read serves it
                fresh = [frame for frame in frames if frame.seq > follower.cursor]
                for i, frame in enumerate(fresh):
                    if frame.terminal:
                        del fresh[i + 1 :]
                        break
                if fresh:
                    follower.cursor = fresh[-1].seq
                    follower.queue.put_nowait(fresh)
                    if fresh[-1].terminal:
                        self.leave(follower)


class RunStreams:
    """Writer and reader of run streams. ``retention_s``: how long a finished run stays replayable."""

    def __init__(self, redis: Redis, retention_s: int) -> None:
        self.redis = redis
        self.retention_s = retention_s
        self._last: dict[uuid.UUID, int] = {}
        self._tailer = _Tailer(redis)

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
        follower = _Follower(key, int(cursor.split("-", 1)[0]))
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
                for frame in item:
                    yield frame
                    if frame.terminal:
                        return
        finally:
            self._tailer.leave(follower)
