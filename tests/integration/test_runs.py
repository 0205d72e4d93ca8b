"""Runs and their event streams: gap-free seq, resume, replay, expiry, and who may see or cancel a
run (how runs end: test_run_endings.py). SSE over a real uvicorn server on
loopback (the in-process client buffers a streaming response), on the test's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import uvicorn
from litestar import Litestar
from redis.asyncio import Redis
from sqlalchemy import insert

from api.app import create_app
from api.runs import controller as run_controller
from api.services import Services
from domain.runs.events import MessageDelta, MessageStarted, Usage
from domain.shared.ids import new_id
from infra.db.engine import Database
from infra.db.tables.access import acl_grants
from infra.identity.passwords import PasswordHasher
from infra.runs.rows import Run, create_run, load_run
from infra.runs.runner import RunContext, RunRunner
from infra.runs.stream import RunStreams, StreamExpired, stream_key
from infra.settings import Settings
from tests.integration.test_access import User, user
from tests.integration.test_http_platform import assert_problem

URL = "/api/v1/runs"


@pytest.fixture
def app(settings: Settings, services: Services) -> Litestar:
    services.passwords = PasswordHasher(memory_kib=1024, time_cost=1)  # cheap hashing, as test_access
    return create_app(settings, services=services)


@pytest.fixture
async def ada(client: httpx.AsyncClient, db: Database) -> User:
    return await user(client, "ada@example.com")


@pytest.fixture
async def bob(client: httpx.AsyncClient, ada: User) -> User:
    return await user(client, "bob@example.com")


@pytest.fixture(autouse=True)
async def runners(services: Services) -> AsyncIterator[list[RunRunner]]:
    """Runners a test starts (each stands for a process); all closed at the end, the app's too."""
    made: list[RunRunner] = []
    yield made
    for r in made:
        await r.aclose()
    if services.runner is not None:
        await services.runner.aclose()


def other_process(
    services: Services, made: list[RunRunner], *, lease_s: float = 30.0, retention_s: int = 3600
) -> RunRunner:
    r = RunRunner(services.db, RunStreams(services.redis, retention_s), lease_s=lease_s)
    r.listen()
    made.append(r)
    return r


async def new_run(db: Database, owner: User, *, conversation_id: uuid.UUID | None = None) -> uuid.UUID:
    async with db.write() as session:
        run = await create_run(
            session,
            tenant_id=uuid.UUID(owner.tenant_id),
            kind="chat" if conversation_id else "agent",
            conversation_id=conversation_id,
            created_by=uuid.UUID(owner.id),
        )
        return run.id


async def run_row(db: Database, run_id: uuid.UUID) -> Run:
    async with db.read() as session:
        run = await load_run(session, run_id)
    assert run is not None
    return run


def talker(n: int, *, delay: float = 0.0) -> Callable[[RunContext], Awaitable[None]]:
    """Work that streams ``n`` deltas of one message."""

    async def work(ctx: RunContext) -> None:
        mid = new_id()
        await ctx.publish(MessageStarted(message_id=mid))
        for i in range(n):
            await ctx.publish(MessageDelta(message_id=mid, text=f"t{i} "))
            if delay:
                await asyncio.sleep(delay)
        await ctx.publish(Usage(input_tokens=3, output_tokens=n, cost=0.5))
        ctx.usage = {"input_tokens": 3, "output_tokens": n}

    return work


def parse_sse(raw: str) -> list[dict[str, Any]]:
    """Frames of a complete SSE body; comments come back as ``{"comment": ...}``."""
    out: list[dict[str, Any]] = []
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        frame: dict[str, Any] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                out.append({"comment": line[1:].strip()})
                continue
            name, _, value = line.partition(": ")
            frame[name] = value
        if frame:
            frame["json"] = json.loads(frame["data"])
            out.append(frame)
    return out


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [int(f["id"]) for f in frames if "id" in f]


@contextlib.asynccontextmanager
async def served(app_: Litestar) -> AsyncIterator[str]:
    """The app on a loopback uvicorn server in this event loop (the adapters are bound to it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(app_, lifespan="off", log_level="critical", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield origin
    finally:
        server.should_exit = True
        server.force_exit = True
        await asyncio.wait_for(task, 10)


async def read_frames(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], *, stop_after: int | None = None
) -> list[dict[str, Any]]:
    """Read an SSE response until it closes (or ``stop_after`` frames, then disconnect)."""
    frames: list[dict[str, Any]] = []
    async with http.stream("GET", url, headers=headers) as resp:
        assert resp.status_code == 200, await resp.aread()
        assert resp.headers["content-type"].startswith("text/event-stream")
        buffer = ""
        async for chunk in resp.aiter_text():
            buffer += chunk
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                frames.extend(parse_sse(block + "\n\n"))
                if stop_after is not None and len([f for f in frames if "id" in f]) >= stop_after:
                    return frames
    return frames


# -- the stream ------------------------------------------------------------------------------
async def test_seq_starts_at_one_without_gaps_and_a_finished_run_replays_then_closes(
    client: httpx.AsyncClient, services: Services, ada: User, runners: list[RunRunner]
) -> None:
    run_id = await new_run(services.db, ada)
    status = await other_process(services, runners).start(run_id, talker(5))
    assert status == "completed"

    resp = await client.get(f"{URL}/{run_id}/events", headers=ada.headers)
    assert resp.status_code == 200, resp.text
    frames = parse_sse(resp.text)
    assert seqs(frames) == list(range(1, 10))
    types = [f["event"] for f in frames]
    assert types[0] == "run.started"
    assert types[-1] == "run.completed"
    assert types.count("run.completed") == 1
    for f in frames:  # every frame's JSON repeats the envelope
        assert f["json"]["type"] == f["event"]
        assert f["json"]["seq"] == int(f["id"])
        assert f["json"]["run_id"] == str(run_id)
        assert f["json"]["created_at"]
    assert frames[2]["json"]["text"] == "t0 "
    assert "message_id" in frames[2]["json"]
    assert frames[-2]["json"] == {**frames[-2]["json"], "input_tokens": 3, "output_tokens": 5, "cost": 0.5}

    run = (await client.get(f"{URL}/{run_id}", headers=ada.headers)).json()
    assert run["object"] == "run"
    assert run["status"] == "completed"
    assert run["kind"] == "agent"
    assert run["last_seq"] == 9
    assert run["usage"] == {"input_tokens": 3, "output_tokens": 5}
    assert run["started_at"]
    assert run["finished_at"]
    assert run["duration_ms"] >= 0
    assert run["error"] is None


async def test_resume_with_last_event_id_or_after_gives_no_duplicate_and_no_gap(
    client: httpx.AsyncClient, services: Services, ada: User, runners: list[RunRunner]
) -> None:
    run_id = await new_run(services.db, ada)
    await other_process(services, runners).start(run_id, talker(6))
    by_header = await client.get(f"{URL}/{run_id}/events", headers={**ada.headers, "Last-Event-ID": "4"})
    by_query = await client.get(f"{URL}/{run_id}/events?after=4", headers=ada.headers)
    assert seqs(parse_sse(by_header.text)) == list(range(5, 11))
    assert by_query.text == by_header.text
    # Resuming after the terminal event: nothing more, and the response ends.
    done = await client.get(f"{URL}/{run_id}/events", headers={**ada.headers, "Last-Event-ID": "10"})
    assert done.status_code == 200
    assert seqs(parse_sse(done.text)) == []


async def test_live_resume_after_a_real_disconnect_loses_and_repeats_nothing(
    app: Litestar, services: Services, ada: User, runners: list[RunRunner]
) -> None:
    run_id = await new_run(services.db, ada)
    task = other_process(services, runners).start(run_id, talker(40, delay=0.02))
    async with served(app) as origin, httpx.AsyncClient(base_url=origin, timeout=10) as http:
        url = f"{URL}/{run_id}/events"
        first = await read_frames(http, url, ada.headers, stop_after=5)  # then the client disconnects
        last = seqs(first)[-1]
        rest = await read_frames(http, url, {**ada.headers, "Last-Event-ID": str(last)})
    assert await task == "completed"
    got = seqs(first) + seqs(rest)
    assert got == list(range(1, len(got) + 1))
    assert rest[-1]["event"] == "run.completed"


async def test_two_concurrent_subscribers_get_identical_frames_and_leaving_does_not_affect_the_run(
    app: Litestar, services: Services, ada: User, runners: list[RunRunner]
) -> None:
    run_id = await new_run(services.db, ada)
    runner = other_process(services, runners)
    async with served(app) as origin, httpx.AsyncClient(base_url=origin, timeout=10) as http:
        url = f"{URL}/{run_id}/events"
        one = asyncio.create_task(read_frames(http, url, ada.headers))
        two = asyncio.create_task(read_frames(http, url, ada.headers))
        leaver = asyncio.create_task(read_frames(http, url, ada.headers, stop_after=2))
        await asyncio.sleep(0.2)  # all three are tailing before the run starts
        task = runner.start(run_id, talker(30, delay=0.01))
        a, b, left = await asyncio.gather(one, two, leaver)
    assert await task == "completed"
    assert [f["data"] for f in a] == [f["data"] for f in b]
    assert seqs(a) == list(range(1, 35))
    assert a[-1]["event"] == "run.completed"
    assert len(seqs(left)) == 2
    assert (await run_row(services.db, run_id)).status == "completed"


async def test_a_quiet_stream_sends_pings(
    app: Litestar, services: Services, ada: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_controller, "PING_INTERVAL_S", 0.1)
    run_id = await new_run(services.db, ada)  # queued: nothing published yet
    async with (
        served(app) as origin,
        httpx.AsyncClient(base_url=origin, timeout=10) as http,
        http.stream("GET", f"{URL}/{run_id}/events", headers=ada.headers) as resp,
    ):
        assert resp.status_code == 200
        chunk = await anext(resp.aiter_text())
    assert chunk.startswith(": ping\n\n")


async def test_a_finished_run_past_retention_is_410_stream_expired(
    client: httpx.AsyncClient, services: Services, ada: User, runners: list[RunRunner]
) -> None:
    run_id = await new_run(services.db, ada)
    runner = other_process(services, runners, retention_s=1)
    await runner.start(run_id, talker(1))
    assert await services.redis.ttl(stream_key(run_id)) in (0, 1)
    deadline = time.monotonic() + 5
    while await services.redis.exists(stream_key(run_id)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    resp = await client.get(f"{URL}/{run_id}/events", headers=ada.headers)
    assert_problem(resp, 410, "stream_expired")
    assert_problem(await client.get(f"{URL}/{run_id}/events?after=2", headers=ada.headers), 410, "stream_expired")
    with pytest.raises(StreamExpired):
        await runner.streams.check(run_id, 0, finished=True)
    # The run itself is still there to re-read.
    assert (await client.get(f"{URL}/{run_id}", headers=ada.headers)).json()["status"] == "completed"


async def test_a_position_before_the_retained_start_is_410(services: Services, redis: Redis) -> None:
    streams = RunStreams(redis, 60)
    run_id = new_id()
    for _ in range(4):
        await streams.publish(run_id, MessageDelta(message_id=run_id, text="x"))
    await redis.xtrim(stream_key(run_id), minid="3-1", approximate=False)
    with pytest.raises(StreamExpired):
        await streams.check(run_id, 1)
    await streams.check(run_id, 2)  # 3 and 4 are still there
    assert await streams.last_seq(run_id) == 4


# -- who may see and cancel ------------------------------------------------------------------
async def test_runs_are_invisible_to_others_and_bad_input_is_a_4xx_problem(
    client: httpx.AsyncClient, services: Services, ada: User, bob: User
) -> None:
    run_id = await new_run(services.db, ada)
    for method, path in (("GET", ""), ("GET", "/events"), ("POST", "/cancel")):
        assert_problem(await client.request(method, f"{URL}/{run_id}{path}", headers=bob.headers), 404, "run_not_found")
        missing = await client.request(method, f"{URL}/{new_id()}{path}", headers=ada.headers)
        assert_problem(missing, 404, "run_not_found")
        bad = await client.request(method, f"{URL}/not-a-uuid{path}", headers=ada.headers)
        assert 400 <= bad.status_code < 500
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert_problem(await client.request(method, f"{URL}/{run_id}{path}"), 401, "unauthenticated")
    for query in ("?after=-1", "?after=x", "?after=99999999999999999999999"):
        resp = await client.get(f"{URL}/{run_id}/events{query}", headers=ada.headers)
        assert resp.status_code == 400, resp.text
    for header in ("abc", "-1", "1.5", "9" * 30, "9" * 5000, "\u00b2".encode("latin-1")):
        resp = await client.get(f"{URL}/{run_id}/events", headers={**ada.headers, "Last-Event-ID": header})
        assert_problem(resp, 400, "invalid_last_event_id")
    assert (await client.get(f"{URL}/{run_id}", headers=ada.headers)).json()["status"] == "queued"


async def test_conversation_runs_follow_the_conversation_acl(
    client: httpx.AsyncClient, services: Services, ada: User, bob: User, db: Database
) -> None:
    conversation_id = new_id()
    run_id = await new_run(db, ada, conversation_id=conversation_id)
    # The creator alone sees nothing without a role on the conversation.
    assert_problem(await client.get(f"{URL}/{run_id}", headers=ada.headers), 404, "run_not_found")

    async def grant(who: User, role: str) -> None:
        async with db.write() as session:
            await session.execute(
                insert(acl_grants).values(
                    id=new_id(),
                    tenant_id=uuid.UUID(who.tenant_id),
                    entity_type="conversation",
                    entity_id=conversation_id,
                    grantee_type="user",
                    grantee_id=uuid.UUID(who.id),
                    role=role,
                )
            )

    await grant(ada, "owner")
    await grant(bob, "viewer")
    assert (await client.get(f"{URL}/{run_id}", headers=bob.headers)).status_code == 200
    assert_problem(await client.post(f"{URL}/{run_id}/cancel", headers=bob.headers), 403, "forbidden")
    assert (await run_row(db, run_id)).cancel_requested_at is None
    assert (await client.post(f"{URL}/{run_id}/cancel", headers=ada.headers)).status_code == 202
