"""A chat turn whose server crashes mid-answer, over a real ``liteskill serve`` process: SIGKILL
while the client follows the run's events, start the server again on the same data, and the
reaper ends the run ``interrupted`` (one ``run.failed``/``run_interrupted`` frame after the ones
already streamed), the answer keeps its last checkpointed text, the conversation is usable again
and the client's token still works."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from redis import Redis

from tests import services as svc
from tests.e2e.test_serve import Server
from tests.fakes.openai_server import FakeOpenAIServer, running_openai_server
from tests.integration.test_runs import parse_sse

T = TypeVar("T")

TERMINAL = {"run.completed", "run.failed", "run.cancelled"}
TICKS_BEFORE_CRASH = 70
"""``scenario:slow`` streams "tick" every 50 ms: past 70 ticks (3.5 s) the turn has checkpointed
its text once (infra.chat.progress.CHECKPOINT_EVERY_S = 3)."""


@pytest.fixture
def fresh_database_url(database_url: str) -> Iterator[str]:
    """A database of its own, cloned from the session's migrated template, on the session's server."""
    pg = svc.start_postgres()
    name = f"e2e_restart_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    yield svc.worker_database(pg, svc.template_database(pg), name)
    pg.psql(f'DROP DATABASE IF EXISTS "liteskill_test_{name}" WITH (FORCE)')


@pytest.fixture
def fresh_redis_url(redis_url: str) -> Iterator[str]:
    """A Redis database of its own on the worker's Valkey (the other tests flush database 0)."""
    url = redis_url.rsplit("/", 1)[0] + "/7"
    client = Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def openai_fake() -> Iterator[FakeOpenAIServer]:
    with running_openai_server() as server:
        yield server


def until(probe: Callable[[], T | None], what: str, timeout: float = 90) -> T:
    """Poll ``probe`` until it returns something (generous bound; never a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got is not None:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


def frames_of(raw: str) -> list[dict[str, Any]]:
    return [f for f in parse_sse(raw) if "id" in f]


def follow_until_crash(http: httpx.Client, url: str, crash: Callable[[], None]) -> list[dict[str, Any]]:
    """Follow the run's SSE; past ``TICKS_BEFORE_CRASH`` deltas call ``crash`` and keep reading
    what was already sent until the dead server's connection ends."""
    frames: list[dict[str, Any]] = []
    crashed = False
    buffer = ""
    try:
        with http.stream("GET", url) as resp:
            assert resp.status_code == 200, resp.read()
            for chunk in resp.iter_text():
                buffer += chunk
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    frames.extend(frames_of(block + "\n\n"))
                ticks = sum(1 for f in frames if f["event"] == "message.delta")
                if not crashed and ticks > TICKS_BEFORE_CRASH:
                    crash()
                    crashed = True
    except httpx.TransportError:
        pass  # the server died mid-response
    assert crashed, f"the stream ended before the crash: {[f['event'] for f in frames][-5:]}"
    return frames


def test_a_server_crash_mid_turn_interrupts_the_run_and_keeps_the_partial_text(
    tmp_path: Path, fresh_database_url: str, fresh_redis_url: str, openai_fake: FakeOpenAIServer
) -> None:
    data_dir = tmp_path / "data"
    env = {
        "LITESKILL_DATABASE_URL": fresh_database_url,
        "LITESKILL_REDIS_URL": fresh_redis_url,
        "LITESKILL_OUTBOUND_ALLOW": "127.0.0.1/32",
        "LITESKILL_RUN_LEASE_S": "2",
        "LITESKILL_LLM_MAX_RETRIES": "0",
    }
    first = Server(data_dir, env)
    http = httpx.Client(base_url=first.base, timeout=30)
    try:
        first.wait_ready()
        account = {"email": "crash@example.com", "password": "correct horse battery staple"}
        registered = http.post("/auth/register", json=account)
        assert registered.status_code == 201, registered.text
        token = f"Bearer {registered.json()['access_token']}"
        http.headers["Authorization"] = token
        provider = http.post(
            "/providers",
            json={"name": "fake", "kind": "openai_compatible", "base_url": openai_fake.base_url, "api_key": "sk-x"},
        )
        assert provider.status_code == 201, provider.text
        slow = http.post(
            "/models",
            json={"provider_id": provider.json()["id"], "name": "slow", "upstream_id": "scenario:slow", "kind": "chat"},
        )
        assert slow.status_code == 201, slow.text
        conversation = http.post("/conversations", json={"model_id": slow.json()["id"], "title": "Crash"})
        assert conversation.status_code == 201, conversation.text
        cid = conversation.json()["id"]
        posted = http.post(f"/conversations/{cid}/messages", json={"content": "Talk slowly"})
        assert posted.status_code == 202, posted.text
        run_id = posted.json()["run"]["id"]

        def crash() -> None:
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(timeout=60)

        seen = follow_until_crash(http, f"/runs/{run_id}/events", crash)
    finally:
        http.close()
        if first.proc.poll() is None:
            first.proc.kill()
            first.proc.wait(timeout=60)
    assert first.proc.returncode == -signal.SIGKILL
    types = [f["event"] for f in seen]
    assert types[:2] == ["run.started", "message.started"]
    assert not TERMINAL & set(types)
    deltas = [f["json"]["text"] for f in seen if f["event"] == "message.delta"]
    streamed = "".join(deltas)
    assert len(deltas) > TICKS_BEFORE_CRASH

    again = Server(data_dir, env)
    try:
        again.wait_ready()
        # The session survives the restart: the token from before the crash still works.
        http = httpx.Client(base_url=again.base, timeout=30, headers={"Authorization": token})

        def interrupted() -> dict[str, Any] | None:
            resp = http.get(f"/runs/{run_id}")
            assert resp.status_code == 200, resp.text
            run: dict[str, Any] = resp.json()
            return run if run["status"] != "running" else None

        run = until(interrupted, "the reaper to end the crashed run")
        assert run["status"] == "interrupted"
        assert run["error"]["code"] == "run_interrupted"

        # The replay: the frames streamed before the crash, maybe a few more deltas the client
        # never read, then exactly one terminal frame; seq 1.. without gaps or duplicates.
        with http.stream("GET", f"/runs/{run_id}/events") as resp:
            assert resp.status_code == 200
            replay = frames_of(resp.read().decode())
        assert [int(f["id"]) for f in replay] == list(range(1, len(replay) + 1))
        assert [f["data"] for f in replay[: len(seen)]] == [f["data"] for f in seen]
        assert [f["event"] for f in replay if f["event"] in TERMINAL] == ["run.failed"]
        assert replay[-1]["event"] == "run.failed"
        assert replay[-1]["json"]["problem"]["code"] == "run_interrupted"
        assert {f["event"] for f in replay[len(seen) : -1]} <= {"message.delta"}

        # The answer keeps its last checkpoint: whole deltas, a prefix of what the client saw.
        listed = http.get(f"/conversations/{cid}/messages")
        assert listed.status_code == 200, listed.text
        stored = listed.json()["data"]
        assert [(m["role"], m["status"]) for m in stored] == [("user", "completed"), ("assistant", "interrupted")]
        kept = stored[1]["content"]
        assert kept, "no checkpointed text survived the crash"
        assert streamed.startswith(kept)
        assert kept in {"".join(deltas[:n]) for n in range(1, len(deltas) + 1)}
        assert (stored[1]["id"], stored[1]["run_id"]) == (seen[1]["json"]["message_id"], run_id)

        # The conversation is usable again: a turn on another model completes.
        assert http.get(f"/conversations/{cid}").json()["status"] == "active"
        text_model = http.post(
            "/models",
            json={"provider_id": provider.json()["id"], "name": "text", "upstream_id": "scenario:text", "kind": "chat"},
        )
        assert text_model.status_code == 201, text_model.text
        patched = http.patch(f"/conversations/{cid}", json={"model_id": text_model.json()["id"]})
        assert patched.status_code == 200, patched.text
        second = http.post(f"/conversations/{cid}/messages", json={"content": "Once more"})
        assert second.status_code == 202, second.text
        with http.stream("GET", f"/runs/{second.json()['run']['id']}/events") as resp:
            assert resp.status_code == 200
            frames = frames_of(resp.read().decode())
        assert frames[-1]["event"] == "run.completed"
        stored = http.get(f"/conversations/{cid}/messages").json()["data"]
        assert [(m["role"], m["content"], m["status"]) for m in stored[2:]] == [
            ("user", "Once more", "completed"),
            ("assistant", "Hello, world!", "completed"),
        ]
        assert http.get(f"/conversations/{cid}").json()["status"] == "active"
    finally:
        http.close()
        assert again.stop() == 0, again.log.read_text()[-4000:]
