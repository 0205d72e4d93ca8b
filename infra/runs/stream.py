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
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, Callable
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
_WRITE_BATCH = 1_000
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
    """The shared live tail of one ``RunStreams``: delivers frames to the followers of this process.

    Frames of runs this process writes (``local`` keys) are handed over as their writes are
    confirmed (``written``): no Redis read at all. Every other key is read by a task that exists
    while such keys are followed (and up to ``TAIL_BLOCK_MS`` after), with one blocking ``XREAD``;
    it also reads a local key while one of its followers is behind what was written before it
    joined (or before the key became local), until it has caught up.

    A follower gets frames in order from just after its cursor, never one twice and never past a
    gap: one that joined with an older position than the read in flight skips that read's answer
    and is served by the next one, which starts from the oldest cursor among a key's followers.
    Connection errors are retried with backoff (followers keep waiting); any other error is raised
    in every follower.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.followers: dict[str, set[_Follower]] = {}
        self.local: dict[str, int] = {}  # key written by this process -> the last seq confirmed written
        self.wake_key = f"liteskill:run-tail:{uuid.uuid4()}"
        self._wake_cursor = "0-0"
        self._in_flight: dict[str, int] = {}  # key -> the cursor the blocked XREAD asked from
        self._task: asyncio.Task[None] | None = None
        self._waking: set[asyncio.Task[None]] = set()
        kwargs = redis.connection_pool.connection_kwargs
        socket_timeout = kwargs.get("socket_timeout", kwargs.get("orig_socket_timeout"))
        self.block_ms = TAIL_BLOCK_MS
        if socket_timeout:  # a blocked read must answer before the client gives up on the socket
            self.block_ms = max(1, min(TAIL_BLOCK_MS, int(float(socket_timeout) * 800)))

    async def follow(self, follower: _Follower) -> None:
        self.followers.setdefault(follower.key, set()).add(follower)
        written = self.local.get(follower.key)
        if written is None or follower.cursor < written:
            await self._read_from(follower.key, follower.cursor)

    def leave(self, follower: _Follower) -> None:
        followers = self.followers.get(follower.key)
        if followers is not None:
            followers.discard(follower)
            if not followers:
                del self.followers[follower.key]

    # --- keys this process writes ---

    def writing(self, key: str, last: int) -> None:
        """This process writes ``key`` from now on; ``last``: the seq written before."""
        self.local.setdefault(key, last)

    def written(self, key: str, frames: list[Frame]) -> None:
        """``frames`` of a local key are in Redis: give them to its followers that are up to date."""
        if key in self.local:
            self.local[key] = frames[-1].seq
        if frames[-1].terminal:
            self.local.pop(key, None)
        behind: int | None = None
        for follower in list(self.followers.get(key, ())):
            fresh = [frame for frame in frames if frame.seq > follower.cursor]
            if not fresh:
                continue
            if fresh[0].seq != follower.cursor + 1:
                behind = follower.cursor if behind is None else min(behind, follower.cursor)
                continue  # earlier frames are missing: the read serves it
            self._give(follower, fresh)
        if behind is not None:
            self._read_soon(key, behind)

    def stop_writing(self, key: str) -> None:
        """Another process may write ``key`` now: its followers are served by the read again."""
        if self.local.pop(key, None) is not None and key in self.followers:
            self._read_soon(key, min(f.cursor for f in self.followers[key]))

    # --- the read ---

    def _wanted(self) -> dict[str, int]:
        """The keys the read must cover, each from the oldest cursor among its followers."""
        wanted: dict[str, int] = {}
        for key, followers in self.followers.items():
            cursor = min(f.cursor for f in followers)
            written = self.local.get(key)
            if written is None or cursor < written:
                wanted[key] = cursor
        return wanted

    async def _read_from(self, key: str, cursor: int) -> None:
        """Make the read cover ``key`` from ``cursor``: start it, or wake it when the read in
        flight does not (an ``XADD`` to the wake stream the blocked ``XREAD`` also watches)."""
        if self._task is None or self._task.done():
            self._in_flight = {}
            self._task = asyncio.get_running_loop().create_task(self._run(), name="run-stream-tailer")
            return  # its first read includes this key
        sent = self._in_flight.get(key)
        if sent is not None and sent <= cursor:
            return  # the read in flight already covers this position
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(self.wake_key, {"w": "1"}, maxlen=1, approximate=False)
            pipe.expire(self.wake_key, WAKE_TTL_S)
            await pipe.execute()

    def _read_soon(self, key: str, cursor: int) -> None:
        task = asyncio.get_running_loop().create_task(self._wake_safely(key, cursor))
        self._waking.add(task)
        task.add_done_callback(self._waking.discard)

    async def _wake_safely(self, key: str, cursor: int) -> None:
        try:
            await self._read_from(key, cursor)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:  # the read's next turn covers it
            log.warning("run stream tail: wake failed: %r", exc)

    async def _run(self) -> None:
        retry_s = 0.05
        try:
            while sent := self._wanted():
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
                if fresh:
                    self._give(follower, fresh)

    def _give(self, follower: _Follower, fresh: list[Frame]) -> None:
        for i, frame in enumerate(fresh):
            if frame.terminal:
                del fresh[i + 1 :]
                break
        follower.cursor = fresh[-1].seq
        follower.queue.put_nowait(fresh)
        if fresh[-1].terminal:
            self.leave(follower)


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
        self._tailer = _Tailer(redis)
        self._writer = _GroupWriter(redis, retention_s, self._tailer.written)

    async def last_seq(self, run_id: uuid.UUID) -> int:
        entries: Any = await self.redis.xrevrange(stream_key(run_id), count=1)
        return _seq_of(entries[0][0]) if entries else 0

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
        batches = self.read_batches(run_id, after, finished=finished, idle_s=idle_s)
        try:
            async for batch in batches:
                if batch is None:
                    yield None
                    continue
                for frame in batch:
                    yield frame
        finally:
            await batches.aclose()

    async def read_batches(
        self, run_id: uuid.UUID, after: int = 0, *, finished: bool = False, idle_s: float = 15.0
    ) -> AsyncGenerator[list[Frame] | None, None]:
        """``read``, a batch at a time: the frames that are there when the reader comes back for
        more (a reader that fell behind sends them in one write)."""
        key = stream_key(run_id)
        cursor = after
        while True:  # replay
            batch: Any = await self.redis.xrange(key, min=f"({cursor}-1", count=_REPLAY_BATCH)
            frames = [_frame(entry_id, fields) for entry_id, fields in batch]
            for i, frame in enumerate(frames):
                if frame.terminal:
                    yield frames[: i + 1]
                    return
            if frames:
                cursor = frames[-1].seq
                yield frames
            if len(batch) < _REPLAY_BATCH:
                break
        if finished:
            return  # the terminal frame was at or before ``after``
        follower = _Follower(key, cursor)
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
