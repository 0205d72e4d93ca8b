"""Assistant turns over HTTP against the fake providers (OpenAI and Anthropic wire protocols) on a
real loopback uvicorn server: post a message, read the run's SSE to its end, the stored messages,
busy/archived/no-model rejections, cancel keeping the partial text, provider failures, usage, the
direct ``/messages/stream`` answer, checkpoints, the reaper's hook and the context window."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar
from redis.asyncio import Redis
from sqlalchemy import update

from api.app import create_app
from api.services import Services
from domain.chat import turns
from domain.shared.events import EventMetadata
from domain.shared.ids import new_id
from infra.chat import commands
from infra.chat import progress as chat_progress
from infra.db.engine import Database
from infra.db.tables.runs import runs
from infra.identity.passwords import PasswordHasher
from infra.runs.reaper import reap
from infra.runs.rows import create_run, load_run
from infra.settings import Settings
from tests.fakes.anthropic_server import FakeAnthropicServer, running_anthropic_server
from tests.fakes.openai_server import FakeOpenAIServer, running_openai_server
from tests.integration.test_access import User, user
from tests.integration.test_http_platform import assert_problem
from tests.integration.test_runs import read_frames, seqs, served

C = "/api/v1/conversations"


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAIServer]:
    with running_openai_server() as server:
        yield server


@pytest.fixture(scope="module")
def anthropic_fake() -> Iterator[FakeAnthropicServer]:
    with running_anthropic_server() as server:
        yield server


@pytest.fixture
async def services(settings: Settings, db: Database, redis: Redis) -> AsyncIterator[Services]:
    # LITESKILL_OUTBOUND_ALLOW=127.0.0.1 (the fakes are on loopback), LITESKILL_LLM_MAX_RETRIES=0.
    llm = msgspec.structs.replace(settings.llm, outbound_allow=("127.0.0.1",), llm_max_retries=0)
    svc = Services(
        settings=msgspec.structs.replace(settings, llm=llm),
        db=db,
        redis=redis,
        passwords=PasswordHasher(memory_kib=1024, time_cost=1),
    )
    yield svc
    if svc.runner is not None:
        await svc.runner.aclose()
    await svc.usage().aclose()


@pytest.fixture
def app(services: Services) -> Litestar:
    return create_app(services.settings, services=services)


@pytest.fixture
async def http(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app served by uvicorn on loopback (streams are real, not buffered)."""
    async with served(app) as origin, httpx.AsyncClient(base_url=origin, timeout=30) as client:
        yield client


@pytest.fixture
async def ada(client: httpx.AsyncClient, db: Database) -> User:
    return await user(client, "ada@example.com")


@pytest.fixture
async def bob(client: httpx.AsyncClient, ada: User) -> User:
    return await user(client, "bob@example.com")


async def model_of(
    http: httpx.AsyncClient, who: User, base_url: str, scenario: str, kind: str = "openai", tools: bool = False
) -> str:
    """A model of ``scenario`` on a new provider of ``kind`` (``tools``: it declares tool use)."""
    label = f"{scenario}-{kind}-tools" if tools else f"{scenario}-{kind}"
    body: dict[str, Any] = {"name": f"p-{label}", "kind": kind, "base_url": base_url, "api_key": "sk-test"}
    provider = await http.post("/api/v1/providers", json=body, headers=who.headers)
    assert provider.status_code == 201, provider.text
    model = await http.post(
        "/api/v1/models",
        json={
            "provider_id": provider.json()["id"],
            "name": label,
            "upstream_id": f"scenario:{scenario}",
            "kind": "chat",
            "capabilities": {"tools": tools},
            "pricing": {"currency": "USD", "input": "3", "output": "15"},
        },
        headers=who.headers,
    )
    assert model.status_code == 201, model.text
    return str(model.json()["id"])


async def conversation_of(http: httpx.AsyncClient, who: User, model_id: str | None, **extra: Any) -> str:
    body = {"model_id": model_id, **extra} if model_id else extra
    resp = await http.post(C, json=body, headers=who.headers)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


async def post(http: httpx.AsyncClient, who: User, cid: str, content: str, **headers: str) -> dict[str, Any]:
    resp = await http.post(f"{C}/{cid}/messages", json={"content": content}, headers={**who.headers, **headers})
    assert resp.status_code == 202, resp.text
    body: dict[str, Any] = resp.json()
    assert resp.headers["location"] == f"/api/v1/runs/{body['run']['id']}"
    return body


async def events_of(http: httpx.AsyncClient, who: User, run_id: str) -> list[dict[str, Any]]:
    return [f for f in await read_frames(http, f"/api/v1/runs/{run_id}/events", who.headers) if "id" in f]


async def messages(http: httpx.AsyncClient, who: User, cid: str) -> list[dict[str, Any]]:
    resp = await http.get(f"{C}/{cid}/messages", headers=who.headers)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["data"])


async def status_of(http: httpx.AsyncClient, who: User, cid: str) -> str:
    return str((await http.get(f"{C}/{cid}", headers=who.headers)).json()["status"])


def check_stream(frames: list[dict[str, Any]], terminal: str) -> str:
    """Seq 1.. without gaps, exactly one terminal event (the last); the deltas' text."""
    assert seqs(frames) == list(range(1, len(frames) + 1))
    types = [f["event"] for f in frames]
    assert types[0] == "run.started"
    assert [t for t in types if t.startswith("run.") and t != "run.started"] == [terminal]
    assert types[-1] == terminal
    return "".join(f["json"]["text"] for f in frames if f["event"] == "message.delta")


async def test_a_turn_streams_the_answer_and_stores_both_messages(
    http: httpx.AsyncClient, services: Services, ada: User, openai_fake: FakeOpenAIServer
) -> None:
    openai_fake.reset()
    model = await model_of(http, ada, openai_fake.base_url, "text")
    # Titled, so the turn makes no title call (test_chat_titles covers those).
    cid = await conversation_of(http, ada, model, system_prompt="Be brief.", title="Greeting")
    posted = await post(http, ada, cid, "Say hello")
    assert posted["message"]["role"] == "user"
    assert posted["message"]["content"] == "Say hello"
    assert posted["run"]["kind"] == "chat"
    assert posted["run"]["conversation_id"] == cid
    run_id = posted["run"]["id"]

    frames = await events_of(http, ada, run_id)
    assert check_stream(frames, "run.completed") == "Hello, world!"
    types = [f["event"] for f in frames]
    assert types[:2] == ["run.started", "message.started"]
    assert types[-3:] == ["usage", "message.completed", "run.completed"]
    assistant_id = frames[1]["json"]["message_id"]
    assert {f["json"]["message_id"] for f in frames if f["event"].startswith("message.")} == {assistant_id}
    usage = next(f["json"] for f in frames if f["event"] == "usage")
    assert (usage["input_tokens"], usage["output_tokens"]) == (12, 4)
    assert usage["cost"] == pytest.approx((12 * 3 + 4 * 15) / 1e6)

    stored = await messages(http, ada, cid)
    assert [(m["role"], m["content"], m["status"]) for m in stored] == [
        ("user", "Say hello", "completed"),
        ("assistant", "Hello, world!", "completed"),
    ]
    assert stored[1]["id"] == assistant_id
    assert stored[1]["run_id"] == run_id
    assert stored[1]["usage"]["input_tokens"] == 12
    assert await status_of(http, ada, cid) == "active"
    run = (await http.get(f"/api/v1/runs/{run_id}", headers=ada.headers)).json()
    assert run["status"] == "completed"
    assert run["usage"]["output_tokens"] == 4
    # The provider saw the system prompt and the question.
    sent = openai_fake.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user"]

    # A second turn carries the first one as history.
    second = await post(http, ada, cid, "Again")
    assert check_stream(await events_of(http, ada, second["run"]["id"]), "run.completed") == "Hello, world!"
    sent = openai_fake.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert len(await messages(http, ada, cid)) == 4

    # Usage is recorded, one call per turn, for this conversation's purpose.
    await services.usage().flush()
    summary = await http.get("/api/v1/usage", params={"group_by": "purpose"}, headers=ada.headers)
    assert summary.status_code == 200, summary.text
    assert summary.json()["totals"]["calls"] == 2
    assert [g["purpose"] for g in summary.json()["data"]] == ["chat"]
    assert summary.json()["totals"]["input_tokens"] == 24


async def test_busy_while_running_and_cancel_keeps_the_partial_text(
    http: httpx.AsyncClient, ada: User, openai_fake: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat_progress, "CHECKPOINT_EVERY_S", 0.1)
    model = await model_of(http, ada, openai_fake.base_url, "slow")
    cid = await conversation_of(http, ada, model)
    posted = await post(http, ada, cid, "Talk slowly")
    run_id = posted["run"]["id"]
    assert await status_of(http, ada, cid) == "running"
    assert_problem(
        await http.post(f"{C}/{cid}/messages", json={"content": "more"}, headers=ada.headers), 409, "conversation_busy"
    )
    # The partial text is checkpointed into the conversation while the turn runs.
    for _ in range(100):
        stored = await messages(http, ada, cid)
        if len(stored) == 2 and stored[1]["content"]:
            break
        await asyncio.sleep(0.05)
    assert stored[1]["status"] == "streaming"
    assert stored[1]["content"].startswith("tick")

    head = await read_frames(http, f"/api/v1/runs/{run_id}/events", ada.headers, stop_after=8)
    assert [f["event"] for f in head if "id" in f][-1] == "message.delta"
    cancel = await http.post(f"/api/v1/runs/{run_id}/cancel", headers=ada.headers)
    assert cancel.status_code == 202, cancel.text
    frames = await events_of(http, ada, run_id)
    streamed = check_stream(frames, "run.cancelled")
    assert streamed.startswith("ticktick")

    stored = await messages(http, ada, cid)
    assert stored[1]["status"] == "interrupted"
    assert stored[1]["content"] == streamed
    assert await status_of(http, ada, cid) == "active"
    run = (await http.get(f"/api/v1/runs/{run_id}", headers=ada.headers)).json()
    assert run["status"] == "cancelled"


async def test_a_provider_429_fails_the_turn_and_the_conversation_stays_usable(
    http: httpx.AsyncClient, ada: User, openai_fake: FakeOpenAIServer
) -> None:
    limited = await model_of(http, ada, openai_fake.base_url, "rate_limited")
    cid = await conversation_of(http, ada, limited, title="Rate limits")
    run_id = (await post(http, ada, cid, "hello?"))["run"]["id"]
    frames = await events_of(http, ada, run_id)
    assert check_stream(frames, "run.failed") == ""
    failed = frames[-1]["json"]["problem"]
    assert (failed["code"], failed["status"]) == ("provider_rate_limited", 429)
    stored = await messages(http, ada, cid)
    assert [(m["role"], m["status"]) for m in stored] == [("user", "completed"), ("assistant", "failed")]
    assert stored[1]["error"]["code"] == "provider_rate_limited"
    assert await status_of(http, ada, cid) == "active"
    run = (await http.get(f"/api/v1/runs/{run_id}", headers=ada.headers)).json()
    assert (run["status"], run["error"]["code"]) == ("failed", "provider_rate_limited")

    # Usable again: switch to a working model and ask; the failed turn is left out of the context.
    working = await model_of(http, ada, openai_fake.base_url, "text")
    patched = await http.patch(f"{C}/{cid}", json={"model_id": working}, headers=ada.headers)
    assert patched.status_code == 200, patched.text
    openai_fake.reset()
    again = await post(http, ada, cid, "and now?")
    assert check_stream(await events_of(http, ada, again["run"]["id"]), "run.completed") == "Hello, world!"
    assert [m["content"] for m in openai_fake.requests[-1]["messages"]] == ["and now?"]


async def test_rejections_are_synchronous_problems(
    http: httpx.AsyncClient, client: httpx.AsyncClient, ada: User, bob: User, openai_fake: FakeOpenAIServer
) -> None:
    no_model = await conversation_of(http, ada, None)
    assert_problem(
        await http.post(f"{C}/{no_model}/messages", json={"content": "hi"}, headers=ada.headers), 422, "model_not_set"
    )
    assert await messages(http, ada, no_model) == []
    assert (await http.get(f"{C}/{no_model}", headers=ada.headers)).json()["status"] == "created"

    model = await model_of(http, ada, openai_fake.base_url, "text")
    cid = await conversation_of(http, ada, model)
    url = f"{C}/{cid}/messages"
    for bad in ({}, {"content": ""}, {"content": 5}, {"content": "x", "extra": 1}, {"content": "x" * 200_001}):
        resp = await http.post(url, json=bad, headers=ada.headers)
        assert 400 <= resp.status_code < 500, (bad, resp.text)
    broken = await http.post(url, content=b"{", headers={**ada.headers, "Content-Type": "application/json"})
    assert broken.status_code == 400, broken.text
    resp = await http.post(f"{C}/not-a-uuid/messages", json={"content": "x"}, headers=ada.headers)
    assert 400 <= resp.status_code < 500
    assert_problem(
        await http.post(f"{C}/{uuid.uuid4()}/messages", json={"content": "x"}, headers=ada.headers),
        404,
        "conversation_not_found",
    )
    # Invisible to bob; a viewer may read but not post.
    assert_problem(await http.post(url, json={"content": "x"}, headers=bob.headers), 404, "conversation_not_found")
    assert_problem(
        await http.post(f"{url}/stream", json={"content": "x"}, headers=bob.headers), 404, "conversation_not_found"
    )
    grant = {"grantee_type": "user", "grantee_id": bob.id, "role": "viewer"}
    assert (await http.post(f"{C}/{cid}/acl", json=grant, headers=ada.headers)).status_code == 201
    assert_problem(await http.post(url, json={"content": "x"}, headers=bob.headers), 403, "forbidden")
    assert await messages(http, ada, cid) == []

    # Archived: 409, nothing stored.
    assert (await http.post(f"{C}/{cid}/archive", headers=ada.headers)).status_code == 200
    assert_problem(await http.post(url, json={"content": "x"}, headers=ada.headers), 409, "conversation_archived")
    assert_problem(
        await http.post(f"{url}/stream", json={"content": "x"}, headers=ada.headers), 409, "conversation_archived"
    )
    assert await messages(http, ada, cid) == []

    # A disabled model is refused before anything runs.
    assert (await http.post(f"{C}/{cid}/restore", headers=ada.headers)).status_code == 200
    assert (
        await http.patch(f"/api/v1/models/{model}", json={"enabled": False}, headers=ada.headers)
    ).status_code == 200
    assert_problem(await http.post(url, json={"content": "x"}, headers=ada.headers), 422, "model_disabled")
    assert await messages(http, ada, cid) == []


async def test_the_idempotency_key_replays_the_first_turn(
    http: httpx.AsyncClient, db: Database, ada: User, openai_fake: FakeOpenAIServer
) -> None:
    model = await model_of(http, ada, openai_fake.base_url, "text")
    cid = await conversation_of(http, ada, model)
    first = await post(http, ada, cid, "once", **{"Idempotency-Key": "turn-1"})
    await events_of(http, ada, first["run"]["id"])
    again = await http.post(
        f"{C}/{cid}/messages", json={"content": "once"}, headers={**ada.headers, "Idempotency-Key": "turn-1"}
    )
    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["run"]["id"] == first["run"]["id"]
    assert len(await messages(http, ada, cid)) == 2
    other = await http.post(
        f"{C}/{cid}/messages", json={"content": "twice"}, headers={**ada.headers, "Idempotency-Key": "turn-1"}
    )
    assert_problem(other, 422, "idempotency_key_reused")


async def test_the_reaper_marks_an_orphaned_turn_interrupted_with_its_last_checkpoint(
    services: Services, db: Database, http: httpx.AsyncClient, ada: User
) -> None:
    cid = await conversation_of(http, ada, None)
    conversation_id = uuid.UUID(cid)
    meta = EventMetadata(actor="system")
    assistant = new_id()
    async with db.write() as session:
        run_id = (
            await create_run(
                session,
                tenant_id=uuid.UUID(ada.tenant_id),
                kind="chat",
                conversation_id=conversation_id,
                created_by=uuid.UUID(ada.id),
            )
        ).id
        loaded = await commands.load_conversation(session, conversation_id)
        events = turns.post_message(
            loaded.state, message_id=new_id(), content="q", run_id=run_id, assistant_message_id=assistant
        )
        await commands.append(session, conversation_id, loaded, events, meta)
        loaded = await commands.load_conversation(session, conversation_id)
        checkpointed = turns.checkpoint(loaded.state, message_id=assistant, content="half an ans")
        await commands.append(session, conversation_id, loaded, checkpointed, meta)
        # Its process died: the lease ran out.
        await session.execute(
            update(runs)
            .where(runs.c.id == run_id)
            .values(status="running", lease_owner="gone", lease_expires_at=datetime.now(UTC) - timedelta(seconds=5))
        )
    assert await status_of(http, ada, cid) == "running"
    assert await reap(db, services.run_streams()) == [run_id]
    stored = await messages(http, ada, cid)
    assert (stored[1]["status"], stored[1]["content"]) == ("interrupted", "half an ans")
    assert await status_of(http, ada, cid) == "active"
    async with db.read() as session:
        run = await load_run(session, run_id)
    assert run is not None
    assert run.status == "interrupted"
    frames = await events_of(http, ada, str(run_id))
    assert frames[-1]["json"]["problem"]["code"] == "run_interrupted"
