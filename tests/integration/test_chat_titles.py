"""Generated titles and conversation usage through real turns against the OpenAI fake (loopback
uvicorn): the first exchange of an untitled conversation asks the same model for a title (the fake
answers any prompt with the scenario's text, so the title is that text), metered as ``title``; a
title the user set is kept; ``GET /conversations/{id}/usage`` sums the ledger in total and per
model, viewers only."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx

from api.services import Services
from infra.chat.titles import TITLE_MAX_CHARS, TITLE_PROMPT, generated_title
from tests.fakes.openai_server import FakeOpenAIServer
from tests.integration import test_chat_turns as turns_tests
from tests.integration.test_access import User
from tests.integration.test_chat_turns import C, check_stream, conversation_of, events_of, messages, model_of, post
from tests.integration.test_http_platform import assert_problem

# The chat-turn fixtures (a loopback uvicorn server, the OpenAI fake, two users), reused as they are.
openai_fake = turns_tests.openai_fake
services = turns_tests.services
app = turns_tests.app
http = turns_tests.http
ada = turns_tests.ada
bob = turns_tests.bob


async def answered(http: httpx.AsyncClient, who: User, cid: str, content: str) -> None:
    posted = await post(http, who, cid, content)
    check_stream(await events_of(http, who, posted["run"]["id"]), "run.completed")


async def conversation(http: httpx.AsyncClient, who: User, cid: str) -> dict[str, Any]:
    resp = await http.get(f"{C}/{cid}", headers=who.headers)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def title_calls(fake: FakeOpenAIServer) -> list[dict[str, Any]]:
    return [r for r in fake.requests if r["messages"][0].get("content") == TITLE_PROMPT]


async def usage_of(http: httpx.AsyncClient, who: User, cid: str) -> dict[str, Any]:
    resp = await http.get(f"{C}/{cid}/usage", headers=who.headers)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def price(group: dict[str, Any]) -> str:
    """The fake models' pricing: 3 per million input tokens, 15 per million output tokens."""
    cost = (Decimal(group["input_tokens"]) * 3 + Decimal(group["output_tokens"]) * 15) / Decimal(1_000_000)
    return format(cost.normalize(), "f")


def test_a_generated_title_is_one_line_without_quotes_and_at_most_80_chars() -> None:
    assert generated_title('  "Hello, world!"  ') == "Hello, world!"
    assert generated_title("\n\u201cTrip to Rome\u201d\nmore text") == "Trip to Rome"
    assert generated_title("'x'") == "x"
    long = generated_title("a" * 200)
    assert long == "a" * TITLE_MAX_CHARS
    assert generated_title(' "" ') is None
    assert generated_title("") is None


async def test_the_first_exchange_titles_an_untitled_conversation_once(
    http: httpx.AsyncClient, services: Services, ada: User, openai_fake: FakeOpenAIServer
) -> None:
    openai_fake.reset()
    model = await model_of(http, ada, openai_fake.base_url, "text")
    cid = await conversation_of(http, ada, model)
    assert (await conversation(http, ada, cid))["title"] is None

    await answered(http, ada, cid, "Say hello")
    # Recorded before the run ended: the fake's text is the title.
    assert (await conversation(http, ada, cid))["title"] == "Hello, world!"
    calls = title_calls(openai_fake)
    assert len(calls) == 1
    assert calls[0]["model"] == "scenario:text"
    assert "Say hello" in calls[0]["messages"][1]["content"]
    events = (await http.get(f"{C}/{cid}/events", params={"limit": 100}, headers=ada.headers)).json()["data"]
    titled = [e for e in events if e["type"] == "chat.title_changed.v1"]
    assert [(e["data"]["title"], e["data"]["generated"]) for e in titled] == [("Hello, world!", True)]

    # Later exchanges do not title again, and a title the user sets stays.
    renamed = await http.patch(f"{C}/{cid}", json={"title": "Mine"}, headers=ada.headers)
    assert renamed.status_code == 200, renamed.text
    await answered(http, ada, cid, "Again")
    assert len(title_calls(openai_fake)) == 1
    assert (await conversation(http, ada, cid))["title"] == "Mine"

    # The title call is metered for the conversation with purpose "title".
    await services.usage().flush()
    summary = await http.get("/api/v1/usage", params={"group_by": "purpose"}, headers=ada.headers)
    assert summary.status_code == 200, summary.text
    assert {g["purpose"]: g["calls"] for g in summary.json()["data"]} == {"chat": 2, "title": 1}


async def test_a_conversation_created_with_a_title_keeps_it(
    http: httpx.AsyncClient, ada: User, openai_fake: FakeOpenAIServer
) -> None:
    openai_fake.reset()
    model = await model_of(http, ada, openai_fake.base_url, "text")
    cid = await conversation_of(http, ada, model, title="Chosen by me")
    await answered(http, ada, cid, "Say hello")
    assert (await conversation(http, ada, cid))["title"] == "Chosen by me"
    assert title_calls(openai_fake) == []
    assert len(openai_fake.requests) == 1


async def test_usage_sums_the_conversations_calls_in_total_and_per_model(
    http: httpx.AsyncClient, services: Services, ada: User, bob: User, openai_fake: FakeOpenAIServer
) -> None:
    openai_fake.reset()
    first = await model_of(http, ada, openai_fake.base_url, "text")
    second = await model_of(http, ada, openai_fake.base_url, "cached")
    cid = await conversation_of(http, ada, first)
    other = await conversation_of(http, ada, first, title="Elsewhere")

    empty = await usage_of(http, ada, cid)
    assert empty["object"] == "conversation_usage"
    assert empty["conversation_id"] == cid
    assert empty["models"] == []
    assert empty["currency"] is None
    assert (empty["totals"]["calls"], empty["totals"]["input_tokens"], empty["totals"]["cost"]) == (0, 0, None)

    await answered(http, ada, cid, "Say hello")  # a chat call and a title call with the first model
    patched = await http.patch(f"{C}/{cid}", json={"model_id": second}, headers=ada.headers)
    assert patched.status_code == 200, patched.text
    await answered(http, ada, cid, "Again")  # one chat call with the second model
    await answered(http, ada, other, "Not counted here")
    await services.usage().flush()

    usage = await usage_of(http, ada, cid)
    assert usage["currency"] == "USD"
    by_model = {g["model_id"]: g for g in usage["models"]}
    assert set(by_model) == {first, second}
    assert by_model[first]["model_name"] == "text-openai"
    assert (by_model[first]["calls"], by_model[second]["calls"]) == (2, 1)
    totals = usage["totals"]
    assert totals["calls"] == 3
    for key in ("input_tokens", "output_tokens", "cached_input_tokens"):
        assert totals[key] == sum(g[key] for g in usage["models"])
    assert totals["input_tokens"] > 0
    for group in usage["models"]:
        assert group["cost"] == price(group)
    assert Decimal(totals["cost"]) == sum((Decimal(g["cost"]) for g in usage["models"]), Decimal(0))

    # Each assistant message carries its own turn's usage.
    stored = await messages(http, ada, cid)
    assert [m["usage"] is not None for m in stored if m["role"] == "assistant"] == [True, True]

    # Bob has no role on the conversation: 404, like an unknown id; a malformed id is a 4xx problem.
    assert_problem(await http.get(f"{C}/{cid}/usage", headers=bob.headers), 404, "conversation_not_found")
    unknown = "00000000-0000-4000-8000-000000000000"
    assert_problem(await http.get(f"{C}/{unknown}/usage", headers=ada.headers), 404, "conversation_not_found")
    bad = await http.get(f"{C}/not-a-uuid/usage", headers=ada.headers)
    assert 400 <= bad.status_code < 500
    assert bad.headers["content-type"].startswith("application/problem+json")

    # A viewer reads it.
    grant = await http.post(
        f"{C}/{cid}/acl", json={"grantee_type": "user", "grantee_id": bob.id, "role": "viewer"}, headers=ada.headers
    )
    assert grant.status_code == 201, grant.text
    assert (await usage_of(http, bob, cid))["totals"] == totals
