"""The live tail of run streams in one process (the reading side of ``infra.runs.stream``): frames
of the runs this process writes go to their followers from the confirmed writes; every other
followed key is read by one task with one blocking ``XREAD``, woken through a per-process wake
stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from domain.runs.events import TERMINAL_TYPES

log = logging.getLogger(__name__)

REPLAY_BATCH = 500
"""Most frames one read (``XRANGE``, ``XREAD``) asks for."""
TAIL_BLOCK_MS = 2_000
"""Longest single ``XREAD BLOCK`` of the shared tailer: under redis-py's default 5 s socket timeout
(and under a smaller one set on the client); the tailer exits at most this long after its last
reader left."""
WAKE_TTL_S = 300
RETRY_MAX_S = 2.0


@dataclass(frozen=True, slots=True)
class Frame:
    """One published event: its seq, its type and its one-line JSON (envelope included)."""

    seq: int
    type: str
    data: bytes

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES


def seq_of(entry_id: Any) -> int:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.split("-", 1)[0])


def frame_of(entry_id: Any, fields: Any) -> Frame:
    return Frame(seq=seq_of(entry_id), type=fields[b"type"].decode(), data=fields[b"data"])


class Follower:
    """One reader's live position on one key: ``cursor`` is the seq of the last frame it was given."""

    __slots__ = ("cursor", "key", "queue")

    def __init__(self, key: str, cursor: int) -> None:
        self.key = key
        self.cursor = cursor
        self.queue: asyncio.Queue[list[Frame] | BaseException] = asyncio.Queue()


class Tailer:
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
        self.followers: dict[str, set[Follower]] = {}
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

    async def follow(self, follower: Follower) -> None:
        self.followers.setdefault(follower.key, set()).add(follower)
        written = self.local.get(follower.key)
        if written is None or follower.cursor < written:
            await self._read_from(follower.key, follower.cursor)

    def leave(self, follower: Follower) -> None:
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
                    answer: Any = await self.redis.xread(streams, count=REPLAY_BATCH, block=self.block_ms)
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
            frames = [frame_of(entry_id, fields) for entry_id, fields in entries]
            for follower in list(self.followers.get(key, ())):
                if follower.cursor < sent.get(key, 0):
                    continue  # joined after this read was sent, further back: the next read serves it
                fresh = [frame for frame in frames if frame.seq > follower.cursor]
                if fresh:
                    self._give(follower, fresh)

    def _give(self, follower: Follower, fresh: list[Frame]) -> None:
        for i, frame in enumerate(fresh):
            if frame.terminal:
                del fresh[i + 1 :]
                break
        follower.cursor = fresh[-1].seq
        follower.queue.put_nowait(fresh)
        if fresh[-1].terminal:
            self.leave(follower)
