"""A chat turn's stream as clients see it, against both provider styles (OpenAI and Anthropic fakes,
a loopback uvicorn server): one tab drops its connection mid-answer and resumes with Last-Event-ID
while a second user with access watches the whole run (nothing lost or repeated, the same frames as
a replay); ``/messages/stream`` answers with the run's SSE directly; a provider failing mid-answer
ends the stream with ``run.failed`` and the message keeps the streamed text; deltas keep flowing
while the database cannot take the turn's checkpoint."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from api.services import Services
from infra.chat import progress as chat_progress
from infra.eventstore.postgres import APPEND_LOCK
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.integration import test_chat_turns as turns_tests
from tests.integration.test_access import User
from tests.integration.test_chat_turns import (
    C,
    check_stream,
    conversation_of,
    events_of,
    messages,
    model_of,
    post,
    status_of,
)
from tests.integration.test_runs import parse_sse, read_frames

openai_fake = turns_tests.openai_fake
anthropic_fake = turns_tests.anthropic_fake
services = turns_tests.services
app = turns_tests.app
http = turns_tests.http
ada = turns_tests.ada
bob = turns_tests.bob


def framed(frames: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    return [(int(f["id"]), f["event"], f["data"]) for f in frames if "id" in f]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_dropped_tab_resumes_without_loss_while_another_user_watches(
    http: httpx.AsyncClient,
    ada: User,
    bob: User,
    openai_fake: FakeOpenAIServer,
    anthropic_fake: FakeAnthropicServer,
    kind: str,
) -> None:
    fake: Any = openai_fake if kind == "openai" else anthropic_fake
    model = await model_of(http, ada, fake.base_url, "slow", kind=kind)
    cid = await conversation_of(http, ada, model, title="Streams")
    grant = {"grantee_type": "user", "grantee_id": bob.id, "role": "viewer"}
    assert (await http.post(f"{C}/{cid}/acl", json=grant, headers=ada.headers)).status_code == 201
    run_id = (await post(http, ada, cid, "Talk slowly"))["run"]["id"]
    url = f"/api/v1/runs/{run_id}/events"
    watcher = asyncio.create_task(read_frames(http, url, bob.headers))  # the viewer, start to end

    head = framed(await read_frames(http, url, ada.headers, stop_after=8))  # then the tab drops
    resumed_at = head[-1][0]
    middle = framed(await read_frames(http, url, {**ada.headers, "Last-Event-ID": str(resumed_at)}, stop_after=8))
    assert middle[0][0] == resumed_at + 1
    assert (await http.post(f"/api/v1/runs/{run_id}/cancel", headers=ada.headers)).status_code == 202
    tail = framed(await read_frames(http, f"{url}?after={middle[-1][0]}", ada.headers))

    seen_by_ada = head + middle + tail
    seen_by_bob = framed(await asyncio.wait_for(watcher, 60))
    assert seen_by_ada == seen_by_bob
    assert [seq for seq, _, _ in seen_by_ada] == list(range(1, len(seen_by_ada) + 1))
    replay = await read_frames(http, url, ada.headers)
    assert framed(replay) == seen_by_ada
    streamed = check_stream(replay, "run.cancelled")
    assert len(streamed) > 0
    assert (await messages(http, ada, cid))[1]["content"] == streamed  # the cancelled turn keeps it all


async def test_messages_stream_answers_with_the_runs_sse_directly(
    http: httpx.AsyncClient, ada: User, anthropic_fake: FakeAnthropicServer
) -> None:
    model = await model_of(http, ada, anthropic_fake.base_url, "text", kind="anthropic")
    cid = await conversation_of(http, ada, model)
    frames: list[dict[str, Any]] = []
    async with http.stream("POST", f"{C}/{cid}/messages/stream", json={"content": "hi"}, headers=ada.headers) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        run_id = r.headers["x-run-id"]
        frames = [f for f in parse_sse((await r.aread()).decode()) if "id" in f]
    assert check_stream(frames, "run.completed") == "Hello, world!"
    assert all(f["json"]["run_id"] == run_id for f in frames)
    # The same frames as GET /runs/{id}/events.
    again = await events_of(http, ada, run_id)
    assert [f["data"] for f in again] == [f["data"] for f in frames]
    assert [m["content"] for m in await messages(http, ada, cid)] == ["hi", "Hello, world!"]


@pytest.mark.parametrize(("kind", "scenario"), [("openai", "midstream_error"), ("anthropic", "stream_error")])
async def test_a_provider_failing_mid_answer_fails_the_turn_keeping_the_streamed_text(
    http: httpx.AsyncClient,
    ada: User,
    openai_fake: FakeOpenAIServer,
    anthropic_fake: FakeAnthropicServer,
    kind: str,
    scenario: str,
) -> None:
    fake: Any = openai_fake if kind == "openai" else anthropic_fake
    model = await model_of(http, ada, fake.base_url, scenario, kind=kind)
    cid = await conversation_of(http, ada, model, title="Mid-stream")
    frames = await events_of(http, ada, (await post(http, ada, cid, "hello?"))["run"]["id"])
    assert check_stream(frames, "run.failed") == "Hel"
    code = frames[-1]["json"]["problem"]["code"]
    assert code.startswith("provider_")
    stored = (await messages(http, ada, cid))[1]
    assert (stored["status"], stored["content"], stored["error"]["code"]) == ("failed", "Hel", code)
    assert await status_of(http, ada, cid) == "active"


async def test_deltas_keep_flowing_while_the_checkpoint_waits_for_the_database(
    http: httpx.AsyncClient,
    ada: User,
    openai_fake: FakeOpenAIServer,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The partial text is written beside the stream: a checkpoint stuck behind another transaction
    (here one holding the event store's append lock) does not hold up the deltas, and the turn still
    ends with everything streamed."""
    monkeypatch.setattr(chat_progress, "CHECKPOINT_EVERY_S", 0.05)
    model = await model_of(http, ada, openai_fake.base_url, "slow")
    cid = await conversation_of(http, ada, model, title="Busy database")
    run_id = (await post(http, ada, cid, "Talk slowly"))["run"]["id"]
    url = f"/api/v1/runs/{run_id}/events"
    head = framed(await read_frames(http, url, ada.headers, stop_after=3))
    async with services.db.engine.connect() as conn, conn.begin():
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": APPEND_LOCK})
        kept = (await messages(http, ada, cid))[1]["content"]
        after = head[-1][0]
        # A delta every 50 ms: 12 more frames span several checkpoint periods, none can be written.
        more = framed(await asyncio.wait_for(read_frames(http, f"{url}?after={after}", ada.headers, stop_after=12), 5))
        assert [seq for seq, _, _ in more] == list(range(after + 1, after + 13))
        assert all(kind == "message.delta" for _, kind, _ in more)
        assert (await messages(http, ada, cid))[1]["content"] == kept  # nothing checkpointed meanwhile
    assert (await http.post(f"/api/v1/runs/{run_id}/cancel", headers=ada.headers)).status_code == 202
    frames = await read_frames(http, url, ada.headers)
    assert (await messages(http, ada, cid))[1]["content"] == check_stream(frames, "run.cancelled")
