"""The usage ledger end to end: metered chat streams (through the OpenAI fake), embeddings and
reranking leave one ``usage_records`` row per call, whatever the ending (completed, failed,
cancelled), and GET /api/v1/usage sums them by day, user, model and purpose, with users seeing
their own calls, admins their tenant, and nobody another tenant."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update

from domain.llm.messages import ChatRequest, UserMessage
from domain.llm.pricing import Pricing
from domain.llm.stream import ProviderError, StreamEvent, TextDelta
from domain.llm.usage import Purpose, UsageContext
from infra.db.engine import Database
from infra.db.tables.llm import usage_records
from infra.llm.metering import MeteredChatModel, MeteredEmbeddingModel, MeteredReranker, UsageSink
from infra.llm.openai_chat import OpenAIChatModel, openai_chat_model
from infra.llm.openai_embeddings import openai_embedding_model
from infra.llm.rerank import HttpReranker
from infra.llm.streaming import StreamPolicy
from tests.fakes.chat_scenarios import expected
from tests.fakes.openai_server import FakeOpenAIServer, running_openai_server
from tests.integration.test_access import User, app, user  # noqa: F401  (app: cheap password hashing)
from tests.integration.test_admin import patch_user
from tests.integration.test_auth import bearer
from tests.integration.test_http_platform import assert_problem
from tests.integration.test_scopes import key_with
from tests.integration.test_tenancy import tenant_admin

URL = "/api/v1/usage"
NO_RETRY = StreamPolicy(max_retries=0, idle_timeout_s=5.0)
PRICED = Pricing(currency="USD", input=Decimal("3"), output=Decimal("15"), cached_input=Decimal("0.3"))
GPT = uuid.uuid4()
EMB = uuid.uuid4()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAIServer]:
    with running_openai_server() as server:
        yield server


@pytest.fixture
async def chat(fake: FakeOpenAIServer) -> AsyncIterator[OpenAIChatModel]:
    fake.reset()
    model = openai_chat_model(api_key="sk-test", base_url=fake.base_url, policy=NO_RETRY)
    yield model
    await model.aclose()


@pytest.fixture
async def sink(db: Database) -> AsyncIterator[UsageSink]:
    s = UsageSink(db)
    yield s
    await s.aclose()


@pytest.fixture
async def ada(client: httpx.AsyncClient, db: Database) -> User:
    return await user(client, "ada@example.com")


@pytest.fixture
async def bob(client: httpx.AsyncClient, ada: User) -> User:
    return await user(client, "bob@example.com")


@pytest.fixture
async def zed(client: httpx.AsyncClient, ada: User) -> User:
    return await tenant_admin(client, ada, "elsewhere", "zed@example.com")


def context(
    who: User,
    *,
    purpose: Purpose = "chat",
    model_id: uuid.UUID = GPT,
    model_name: str = "gpt",
    pricing: Pricing | None = PRICED,
    **extra: Any,
) -> UsageContext:
    return UsageContext(
        tenant_id=uuid.UUID(who.tenant_id),
        user_id=uuid.UUID(who.id),
        model_id=model_id,
        model_name=model_name,
        purpose=purpose,
        pricing=pricing,
        **extra,
    )


def ask(name: str) -> ChatRequest:
    return ChatRequest(model=f"scenario:{name}", messages=[UserMessage.text("hi")])


async def run(model: MeteredChatModel, scenario: str) -> list[StreamEvent]:
    return [event async for event in model.stream(ask(scenario))]


async def rows(db: Database) -> list[Any]:
    async with db.read() as session:
        return list((await session.execute(select(usage_records).order_by(usage_records.c.id))).all())


async def test_each_stream_leaves_one_row_whatever_its_ending(
    chat: OpenAIChatModel, sink: UsageSink, db: Database, ada: User
) -> None:
    conversation, run_id, key = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    ctx = context(ada, conversation_id=conversation, run_id=run_id, api_key_id=key, provider_id=uuid.uuid4())
    metered = MeteredChatModel(chat, sink, ctx)
    # Events pass through unchanged.
    assert await run(metered, "text") == expected("text")
    assert await run(metered, "cached") == expected("cached")
    assert await run(metered, "rate_limited") == expected("rate_limited")
    stream = metered.stream(ask("slow"))
    got = [await anext(stream), await anext(stream)]
    assert got == [TextDelta("tick"), TextDelta("tick")]
    await stream.aclose()  # type: ignore[attr-defined]
    await sink.flush()

    text_row, cached_row, failed_row, cancelled_row = await rows(db)
    assert (text_row.status, text_row.error_kind) == ("completed", None)
    assert (text_row.input_tokens, text_row.output_tokens, text_row.cached_input_tokens) == (12, 4, 0)
    assert text_row.cost == Decimal("0.000096")  # (12 x 3 + 4 x 15) / 1e6
    assert text_row.currency == "USD"
    assert (text_row.tenant_id, text_row.user_id) == (uuid.UUID(ada.tenant_id), uuid.UUID(ada.id))
    assert (text_row.conversation_id, text_row.run_id, text_row.api_key_id) == (conversation, run_id, key)
    assert (text_row.model_id, text_row.model_name, text_row.purpose) == (GPT, "gpt", "chat")
    assert text_row.provider_id == ctx.provider_id
    assert text_row.ttft_ms is not None
    assert text_row.latency_ms is not None
    assert 0 <= text_row.ttft_ms <= text_row.latency_ms
    # 20 fresh x 3 + 80 cached x 0.3 + 1 x 15
    assert cached_row.cost == Decimal("0.000099")
    assert (cached_row.input_tokens, cached_row.cached_input_tokens) == (100, 80)
    assert (failed_row.status, failed_row.error_kind, failed_row.input_tokens, failed_row.ttft_ms) == (
        "failed",
        "rate_limited",
        0,
        None,
    )
    assert failed_row.cost == Decimal(0)
    assert (cancelled_row.status, cancelled_row.error_kind) == ("cancelled", None)
    assert cancelled_row.ttft_ms is not None
    assert cancelled_row.latency_ms >= 50  # the second delta came 50 ms after the first


async def test_a_cancelled_consumer_task_still_records_and_closes_upstream(
    chat: OpenAIChatModel, fake: FakeOpenAIServer, sink: UsageSink, db: Database, ada: User
) -> None:
    metered = MeteredChatModel(chat, sink, context(ada, pricing=None))
    seen: list[StreamEvent] = []

    async def consume() -> None:
        async for event in metered.stream(ask("slow")):
            seen.append(event)

    task = asyncio.create_task(consume())
    while len(seen) < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await sink.flush()
    (row,) = await rows(db)
    assert (row.status, row.cost, row.currency) == ("cancelled", None, None)
    assert row.ttft_ms is not None
    for _ in range(100):  # the fake notices the closed connection shortly after
        if fake.disconnects:
            break
        await asyncio.sleep(0.02)
    assert [model for model, _ in fake.disconnects] == ["scenario:slow"]


async def test_embeddings_and_reranking_are_metered(
    fake: FakeOpenAIServer, sink: UsageSink, db: Database, ada: User
) -> None:
    embeddings = openai_embedding_model(model="emb", api_key="sk", base_url=fake.base_url, max_retries=0)
    reranker = HttpReranker(model="rr", base_url=fake.base_url)
    failing = HttpReranker(model="rr", base_url=fake.origin + "/nowhere")
    try:
        embedder = MeteredEmbeddingModel(embeddings, sink, context(ada, purpose="embedding", model_id=EMB))
        done = await embedder.embed(["one", "two"])
        assert len(done.vectors) == 2
        ranked = await MeteredReranker(reranker, sink, context(ada, purpose="rerank")).rerank("q", ["a", "b"])
        assert len(ranked.results) == 2
        with pytest.raises(ProviderError):
            await MeteredReranker(failing, sink, context(ada, purpose="rerank")).rerank("q", ["a"])
    finally:
        await embeddings.aclose()
        await reranker.aclose()
        await failing.aclose()
    await sink.flush()
    emb, rr, bad = await rows(db)
    assert (emb.purpose, emb.status, emb.input_tokens, emb.model_id) == (
        "embedding",
        "completed",
        done.usage.input_tokens,
        EMB,
    )
    assert emb.input_tokens > 0
    assert emb.ttft_ms is None
    assert emb.latency_ms is not None
    assert (rr.purpose, rr.status, rr.input_tokens) == ("rerank", "completed", ranked.usage.input_tokens)
    assert (bad.purpose, bad.status, bad.error_kind) == ("rerank", "failed", "not_found")


# -- GET /api/v1/usage --------------------------------------------------------------------------


@pytest.fixture
async def ledger(
    chat: OpenAIChatModel, sink: UsageSink, db: Database, ada: User, bob: User, zed: User
) -> dict[str, User]:
    """Ada (admin): 2 text chats today and 1 rate-limited chat yesterday, 1 title call on a second
    model; Bob (user): 1 text chat and 1 cancelled chat; Zed (another tenant): 1 text chat."""
    await run(MeteredChatModel(chat, sink, context(ada)), "text")
    await run(MeteredChatModel(chat, sink, context(ada)), "text")
    await run(MeteredChatModel(chat, sink, context(ada)), "rate_limited")
    other = context(ada, purpose="title", model_id=EMB, model_name="mini", pricing=None)
    await run(MeteredChatModel(chat, sink, other), "cached")
    await run(MeteredChatModel(chat, sink, context(bob)), "text")
    stream = MeteredChatModel(chat, sink, context(bob)).stream(ask("slow"))
    await anext(stream)
    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    await run(MeteredChatModel(chat, sink, context(zed)), "text")
    await sink.flush()
    async with db.write() as session:  # the failed call happened yesterday
        await session.execute(
            update(usage_records)
            .where(usage_records.c.status == "failed")
            .values(created_at=usage_records.c.created_at - text("interval '1 day'"))
        )
    return {"ada": ada, "bob": bob, "zed": zed}


async def usage(client: httpx.AsyncClient, who: User, **params: str) -> dict[str, Any]:
    resp = await client.get(URL, params=params, headers=who.headers)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    assert body["object"] == "usage_summary"
    return body


def numbers(item: dict[str, Any]) -> tuple[Any, ...]:
    return (
        item["input_tokens"],
        item["output_tokens"],
        item["cached_input_tokens"],
        item["cost"],
        item["calls"],
        item["failed"],
    )


async def test_admins_sum_the_tenant_by_day(client: httpx.AsyncClient, ledger: dict[str, User]) -> None:
    body = await usage(client, ledger["ada"])
    assert body["group_by"] == ["day"]
    assert body["currency"] == "USD"
    yesterday, today = body["data"]
    assert set(today) == {"day", "input_tokens", "output_tokens", "cached_input_tokens", "cost", "calls", "failed"}
    assert yesterday["day"] < today["day"]
    assert numbers(yesterday) == (0, 0, 0, "0", 1, 1)
    # ada 2 x text + cached (unpriced) + bob text + bob cancelled (no usage reported)
    assert numbers(today) == (12 * 3 + 100, 4 * 3 + 1, 80, "0.000288", 5, 0)
    assert numbers(body["totals"]) == (136, 13, 80, "0.000288", 6, 1)


async def test_grouping_by_user_model_and_purpose(client: httpx.AsyncClient, ledger: dict[str, User]) -> None:
    ada, bob = ledger["ada"], ledger["bob"]
    by_user = (await usage(client, ada, group_by="user"))["data"]
    assert {(g["user_id"], g["calls"], g["failed"], g["cost"]) for g in by_user} == {
        (ada.id, 4, 1, "0.000192"),
        (bob.id, 2, 0, "0.000096"),
    }
    assert "day" not in by_user[0]
    by_model = (await usage(client, ada, group_by="model"))["data"]
    assert {(g["model_id"], g["model_name"], g["calls"], g["cost"]) for g in by_model} == {
        (str(GPT), "gpt", 5, "0.000288"),
        (str(EMB), "mini", 1, None),
    }
    by_purpose = (await usage(client, ada, group_by="purpose"))["data"]
    assert {(g["purpose"], g["calls"], g["input_tokens"]) for g in by_purpose} == {("chat", 5, 36), ("title", 1, 100)}
    both = await usage(client, ada, group_by="purpose, user ,purpose")
    assert both["group_by"] == ["user", "purpose"]
    assert {(g["user_id"], g["purpose"], g["calls"]) for g in both["data"]} == {
        (ada.id, "chat", 3),
        (ada.id, "title", 1),
        (bob.id, "chat", 2),
    }
    titles = await usage(client, ada, purpose="title")
    assert numbers(titles["totals"]) == (100, 1, 80, None, 1, 0)
    assert titles["currency"] is None


async def test_users_see_only_their_own_calls(client: httpx.AsyncClient, ledger: dict[str, User]) -> None:
    ada, bob = ledger["ada"], ledger["bob"]
    mine = await usage(client, bob, group_by="user")
    assert [(g["user_id"], g["calls"]) for g in mine["data"]] == [(bob.id, 2)]
    assert (await usage(client, bob, user_id=bob.id))["totals"]["calls"] == 2
    assert_problem(await client.get(URL, params={"user_id": ada.id}, headers=bob.headers), 403, "forbidden")
    # Ada narrows the tenant to one user.
    assert (await usage(client, ada, user_id=bob.id))["totals"]["calls"] == 2
    # view_audit lets a user read the tenant.
    assert (await patch_user(client, ada, bob.id, permissions=["view_audit"])).status_code == 200
    assert (await usage(client, bob))["totals"]["calls"] == 6


async def test_nothing_crosses_tenants(client: httpx.AsyncClient, ledger: dict[str, User]) -> None:
    ada, zed = ledger["ada"], ledger["zed"]
    theirs = await usage(client, zed, group_by="user")
    assert [(g["user_id"], g["calls"]) for g in theirs["data"]] == [(zed.id, 1)]
    assert (await usage(client, zed, user_id=ada.id))["totals"]["calls"] == 0
    assert (await usage(client, ada, user_id=zed.id))["data"] == []
    assert zed.id not in {g["user_id"] for g in (await usage(client, ada, group_by="user"))["data"]}


async def test_the_range_defaults_to_30_days_and_filters(client: httpx.AsyncClient, ledger: dict[str, User]) -> None:
    ada = ledger["ada"]
    body = await usage(client, ada)
    assert body["until"] > body["since"]
    everything = await usage(client, ada, since="2000-01-01T00:00:00Z", until="2000-12-31T00:00:00Z")
    assert everything["data"] == []
    assert everything["totals"]["calls"] == 0
    assert everything["totals"]["cost"] is None
    today = body["data"][-1]["day"]
    only_today = await usage(client, ada, since=f"{today}T00:00:00Z", until=f"{today}T23:59:59.999999Z")
    assert only_today["totals"]["calls"] == 5


async def test_api_keys_need_the_usage_scope(client: httpx.AsyncClient, ledger: dict[str, User]) -> None:
    bob = ledger["bob"]
    token = bob.headers["Authorization"].removeprefix("Bearer ")
    allowed = await key_with(client, token, ["usage:read"])
    resp = await client.get(URL, headers=bearer(allowed["key"]))
    assert resp.status_code == 200, resp.text
    assert resp.json()["totals"]["calls"] == 2
    other = await key_with(client, token, ["prompts:read"])
    assert_problem(await client.get(URL, headers=bearer(other["key"])), 403, "insufficient_scope")


@pytest.mark.parametrize(
    "params",
    [
        {"group_by": "week"},
        {"group_by": "day,"},
        {"since": "yesterday"},
        {"until": "2026-13-01"},
        {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        {"since": "2024-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        {"user_id": "not-a-uuid"},
        {"purpose": "fun"},
        {"group_by": "d" * 65},
    ],
)
async def test_bad_parameters_are_400(client: httpx.AsyncClient, ada: User, params: dict[str, str]) -> None:
    body = assert_problem(await client.get(URL, params=params, headers=ada.headers), 400, "validation_error")
    assert body["errors"][0]["parameter"] in params


async def test_usage_needs_a_principal(client: httpx.AsyncClient, db: Database) -> None:
    assert_problem(await client.get(URL), 401, "unauthenticated")
