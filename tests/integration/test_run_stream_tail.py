"""The shared live tail of run streams (infra.runs.stream): many readers over a few Redis
connections, readers coming and going, a key followed while the tail is blocked, a dropped
connection, a key that is no longer a stream; runs written by the same ``RunStreams`` (this
process: delivered from the writes, no read) and by another one (another process: the shared
``XREAD``), and a run whose writer changes. Real Valkey; every reader must see seq 1..N once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from unittest.mock import ANY

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ResponseError

from domain.runs.events import MessageDelta, RunCompleted
from domain.shared.ids import new_id
from infra.runs import tail
from infra.runs.stream import Frame, RunStreams, stream_key
from infra.settings import Settings


@pytest.fixture
async def named(settings: Settings, redis: Redis) -> AsyncIterator[tuple[Redis, str]]:
    """A client of its own with at most 20 connections (waiting for one when all are busy), named
    so ``CLIENT LIST`` can count them."""
    assert settings.redis.url
    name = f"tail-{uuid.uuid4().hex[:12]}"
    pool = BlockingConnectionPool.from_url(settings.redis.url, client_name=name, max_connections=20, timeout=5)
    client = Redis(connection_pool=pool)
    yield client, name
    await client.aclose()


async def connections(redis: Redis, name: str) -> list[dict[str, Any]]:
    return [c for c in await redis.client_list() if c.get("name") == name]


class Reader:
    """``RunStreams.read_batches`` drained in a task; ``frames`` fill as they come."""

    def __init__(self, streams: RunStreams, run_id: uuid.UUID, after: int = 0, idle_s: float = 10.0) -> None:
        self.frames: list[Frame] = []
        self.idle = 0
        self.gen = streams.read_batches(run_id, after, idle_s=idle_s)
        self.task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        async for batch in self.gen:
            if batch is None:
                self.idle += 1
            else:
                self.frames.extend(batch)

    @property
    def seqs(self) -> list[int]:
        return [f.seq for f in self.frames]


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def publish(streams: RunStreams, run_id: uuid.UUID, n: int, *, end: bool = False) -> None:
    for _ in range(n):
        await streams.publish(run_id, MessageDelta(message_id=run_id, text="x"))
    if end:
        await streams.publish(run_id, RunCompleted())


async def finished(*readers: Reader) -> None:
    done: Awaitable[Any] = asyncio.gather(*(r.task for r in readers))
    await asyncio.wait_for(done, timeout=10)


@pytest.mark.parametrize("writer", ["elsewhere", "here"])
async def test_many_readers_share_a_few_connections(redis: Redis, named: tuple[Redis, str], writer: str) -> None:
    client, name = named
    streams = RunStreams(client, 60)
    writes = RunStreams(client, 60) if writer == "elsewhere" else streams
    runs = [new_id() for _ in range(40)]
    for run_id in runs[:20]:  # half the runs have started when their readers come
        await publish(writes, run_id, 1)
    readers = [Reader(streams, run_id) for run_id in runs for _ in range(5)]  # 200 live readers
    for run_id in runs[20:]:
        await publish(writes, run_id, 1)
    await until(lambda: all(r.seqs == [1] for r in readers))
    await asyncio.sleep(0.1)
    # 200 readers waiting for new frames: one XREAD when another process writes the runs, none
    # when this one does, never one connection each (the pool has 20).
    live = await connections(redis, name)
    assert len(live) <= 20
    blocked = [c for c in live if "b" in c["flags"]]  # waiting in a blocking command
    assert [c["cmd"] for c in blocked] == (["xread"] if writer == "elsewhere" else [])
    for run_id in runs:
        await publish(writes, run_id, 3, end=True)
    await finished(*readers)
    assert all(r.seqs == [1, 2, 3, 4, 5] for r in readers)
    assert all(r.frames[-1].type == "run.completed" for r in readers)


@pytest.mark.parametrize("writer", ["elsewhere", "here"])
async def test_a_reader_leaving_does_not_disturb_the_others(named: tuple[Redis, str], writer: str) -> None:
    reading = RunStreams(named[0], 60)
    writing = RunStreams(named[0], 60) if writer == "elsewhere" else reading
    run_id, other = new_id(), new_id()
    leaver, stayer, elsewhere = Reader(reading, run_id), Reader(reading, run_id), Reader(reading, other)
    await publish(writing, run_id, 2)
    await publish(writing, other, 1)
    await until(lambda: leaver.seqs == [1, 2] and stayer.seqs == [1, 2] and elsewhere.seqs == [1])
    leaver.task.cancel()
    await asyncio.gather(leaver.task, return_exceptions=True)
    await leaver.gen.aclose()
    await publish(writing, run_id, 2)
    late = Reader(reading, run_id, after=3)  # joins at a position, after the leaver left
    await publish(writing, run_id, 1, end=True)
    await publish(writing, other, 1, end=True)
    await finished(stayer, late, elsewhere)
    assert leaver.seqs == [1, 2]
    assert stayer.seqs == [1, 2, 3, 4, 5, 6]
    assert late.seqs == [4, 5, 6]
    assert elsewhere.seqs == [1, 2, 3]


async def test_a_run_followed_while_the_tail_is_blocked_is_read_at_once(
    named: tuple[Redis, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tail, "TAIL_BLOCK_MS", 4_000)
    streams = RunStreams(named[0], 60)
    writer = RunStreams(named[0], 60)  # another process writes the runs
    first, second = new_id(), new_id()
    waiting = Reader(streams, first)
    await publish(writer, first, 1)
    await until(lambda: waiting.seqs == [1])
    await asyncio.sleep(0.2)  # the tail is now blocked in XREAD on ``first`` only (for up to 4 s)
    joined = Reader(streams, second)
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await publish(writer, second, 1)
    await until(lambda: joined.seqs == [1], timeout=2.0)
    assert time.monotonic() - started < 1.0  # woken, not after the block timed out
    await publish(writer, first, 0, end=True)
    await publish(writer, second, 0, end=True)
    await finished(waiting, joined)
    assert (waiting.seqs, joined.seqs) == ([1, 2], [1, 2])


async def test_idle_readers_get_none_then_the_next_frame(named: tuple[Redis, str]) -> None:
    streams = RunStreams(named[0], 60)
    run_id = new_id()
    reader = Reader(streams, run_id, idle_s=0.1)
    await until(lambda: reader.idle >= 2)
    await publish(streams, run_id, 1, end=True)
    await finished(reader)
    assert reader.seqs == [1, 2]


async def test_a_silent_run_outlasts_the_socket_timeout(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    assert settings.redis.url
    client = Redis.from_url(settings.redis.url, socket_timeout=1)
    try:
        streams = RunStreams(client, 60)
        writer = RunStreams(client, 60)  # another process writes the runs
        run_id = new_id()
        reader = Reader(streams, run_id, idle_s=10)
        await asyncio.sleep(2.5)  # silent for longer than the socket timeout: the tail's reads stay under it
        await publish(writer, run_id, 1, end=True)
        await finished(reader)
        assert reader.seqs == [1, 2]
        assert reader.idle == 0
        assert not [r for r in caplog.records if r.name == "infra.runs.tail"]  # no timeout, no retry
    finally:
        await client.aclose()


async def test_the_tail_survives_a_dropped_connection(redis: Redis, named: tuple[Redis, str]) -> None:
    client, name = named
    streams = RunStreams(client, 60)
    writer = RunStreams(client, 60)  # another process writes the runs
    runs = [new_id(), new_id()]
    readers = [Reader(streams, run_id) for run_id in runs]
    for run_id in runs:
        await publish(writer, run_id, 2)
    await until(lambda: all(r.seqs == [1, 2] for r in readers))
    await asyncio.sleep(0.1)
    blocked = [c for c in await connections(redis, name) if c["cmd"] == "xread"]
    assert len(blocked) == 1
    assert await redis.client_kill_filter(_id=blocked[0]["id"]) == 1
    for run_id in runs:
        await publish(writer, run_id, 3, end=True)
    await finished(*readers)
    assert all(r.seqs == [1, 2, 3, 4, 5, 6] for r in readers)


async def test_a_key_that_is_no_longer_a_stream_fails_only_its_readers(redis: Redis, named: tuple[Redis, str]) -> None:
    streams = RunStreams(named[0], 60)
    writer = RunStreams(named[0], 60)  # another process writes the runs
    broken, fine = new_id(), new_id()
    doomed, healthy = Reader(streams, broken), Reader(streams, fine)
    await publish(writer, fine, 1)
    await until(lambda: healthy.seqs == [1])
    await redis.set(stream_key(broken), "not a stream")
    third = new_id()
    waker = Reader(streams, third)  # a new key wakes the tail: its next XREAD meets the string
    with pytest.raises(ResponseError):
        await asyncio.wait_for(doomed.task, timeout=5)
    await publish(writer, fine, 1, end=True)
    await publish(writer, third, 0, end=True)
    await finished(healthy, waker)
    assert healthy.seqs == [1, 2, 3]
    assert waker.seqs == [1]


async def test_a_reader_joining_a_run_written_here_mid_stream_misses_nothing(named: tuple[Redis, str]) -> None:
    streams = RunStreams(named[0], 60)
    run_id = new_id()
    await publish(streams, run_id, 3)
    late = Reader(streams, run_id, after=1)  # replays 2 and 3 from Redis, then takes the writes
    writing = asyncio.create_task(publish(streams, run_id, 50, end=True))  # while it joins
    early = Reader(streams, run_id)
    await writing
    await finished(late, early)
    assert late.seqs == list(range(2, 55))
    assert early.seqs == list(range(1, 55))


async def test_a_reader_behind_what_was_written_here_is_caught_up_from_redis(named: tuple[Redis, str]) -> None:
    """A follower whose position is older than the last write of this process (it joined while
    writes were being confirmed) is read from Redis until it has caught up, then served by the writes."""
    streams = RunStreams(named[0], 60)
    run_id = new_id()
    await publish(streams, run_id, 3)
    follower = tail.Follower(stream_key(run_id), 1)
    await streams._tailer.follow(follower)
    assert (await asyncio.wait_for(follower.queue.get(), timeout=5)) == [
        Frame(2, "message.delta", ANY),
        Frame(3, "message.delta", ANY),
    ]
    await publish(streams, run_id, 1)
    assert [f.seq for f in await asyncio.wait_for(follower.queue.get(), timeout=5)] == [4]
    await until(lambda: streams._tailer._task is None or streams._tailer._task.done(), timeout=5)
    streams._tailer.leave(follower)


async def test_readers_of_a_run_whose_writer_moved_get_the_new_writers_frames(named: tuple[Redis, str]) -> None:
    """This process wrote the run and stops (its lease was lost: ``forget``); another one ends it:
    this process's readers get those frames from Redis, in order, once."""
    here = RunStreams(named[0], 60)
    elsewhere = RunStreams(named[0], 60)
    run_id = new_id()
    readers = [Reader(here, run_id) for _ in range(3)]
    await publish(here, run_id, 2)
    await until(lambda: all(r.seqs == [1, 2] for r in readers))
    here.forget(run_id)
    await publish(elsewhere, run_id, 2, end=True)
    await finished(*readers)
    assert all(r.seqs == [1, 2, 3, 4, 5] for r in readers)


async def test_a_refused_write_sends_the_readers_back_to_redis(named: tuple[Redis, str]) -> None:
    """Another process wrote seq 3 while this one believed it was next: this process's write is
    refused (Redis wants ids to grow), and its readers get what is in Redis instead."""
    here = RunStreams(named[0], 60)
    elsewhere = RunStreams(named[0], 60)
    run_id = new_id()
    reader = Reader(here, run_id)
    await publish(here, run_id, 2)
    await until(lambda: reader.seqs == [1, 2])
    await publish(elsewhere, run_id, 1)
    with pytest.raises(ResponseError):
        await publish(here, run_id, 1)
    await publish(here, run_id, 1, end=True)  # re-reads the last seq: 4, then the end
    await finished(reader)
    assert reader.seqs == [1, 2, 3, 4, 5]


async def test_a_reader_that_fell_behind_gets_what_piled_up_in_one_batch(named: tuple[Redis, str]) -> None:
    """``read_batches`` (what the SSE route writes from): frames that arrived while the reader was
    busy come together, in order, and the terminal frame ends the batches."""
    streams = RunStreams(named[0], 60)
    run_id = new_id()
    await publish(streams, run_id, 2)
    batches = streams.read_batches(run_id, after=1, idle_s=10)
    assert [f.seq for f in await asyncio.wait_for(anext(batches), 5) or []] == [2]  # the replay
    waiting = asyncio.create_task(anext(batches))
    await publish(streams, run_id, 1)
    assert [f.seq for f in await asyncio.wait_for(waiting, 5) or []] == [3]
    await publish(streams, run_id, 3, end=True)  # while the reader is not reading
    assert [f.seq for f in await asyncio.wait_for(anext(batches), 5) or []] == [4, 5, 6, 7]
    with pytest.raises(StopAsyncIteration):
        await anext(batches)
