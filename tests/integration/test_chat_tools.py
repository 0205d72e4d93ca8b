"""The tool loop of chat turns over HTTP on a loopback uvicorn server: the OpenAI and Anthropic fakes
play a model that calls tools (``scenario:agent``, scripted by the user's message), the tools are a
real MCP server over streamable HTTP (tests/fakes/mcp_server.py) reached through the gateway, and
approvals are decided through ``/runs/{run_id}/approvals``: auto calls, approve, deny, timeout,
tool errors, tools the model was not offered, the round limit, and cancelling while a call waits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

from api.services import Services
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.mcp_server import running_mcp_http_server
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
from tests.integration.test_http_platform import assert_problem
from tests.integration.test_runs import read_frames

# The chat-turn fixtures (a loopback uvicorn server, the provider fakes, two users), reused as they are.
openai_fake = turns_tests.openai_fake
anthropic_fake = turns_tests.anthropic_fake
services = turns_tests.services
app = turns_tests.app
http = turns_tests.http
ada = turns_tests.ada
bob = turns_tests.bob


@pytest.fixture(scope="module")
def mcp_url() -> Iterator[str]:
    with running_mcp_http_server() as server:
        yield str(server.url)


async def tools_server(http: httpx.AsyncClient, who: User, url: str, approval: str = "auto", **extra: Any) -> str:
    body = {"name": "tools", "transport": "streamable_http", "url": url, "approval": approval, **extra}
    resp = await http.post("/api/v1/mcp-servers", json=body, headers=who.headers)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def script(*calls: tuple[str, dict[str, Any]], rounds: int = 1, say: str = "") -> str:
    return json.dumps({"calls": [{"name": n, "arguments": a} for n, a in calls], "rounds": rounds, "say": say})


async def agent_chat(
    http: httpx.AsyncClient, who: User, base_url: str, mcp_url: str, *, kind: str = "openai", **tools: Any
) -> str:
    """A conversation of ``who`` with the agent model and the tools server selected."""
    server = await tools_server(http, who, mcp_url, tools.pop("server_approval", "auto"))
    model = await model_of(http, who, base_url, "agent", kind, tools=True)
    return await conversation_of(http, who, model, tools={"mcp_server_ids": [server], **tools})


def of_type(frames: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [f["json"] for f in frames if f["event"] == event]


async def until_approval(http: httpx.AsyncClient, who: User, run_id: str) -> dict[str, Any]:
    """Follow the run until its first ``approval.requested`` and return that event."""
    for n in range(1, 200):
        frames = await read_frames(http, f"/api/v1/runs/{run_id}/events", who.headers, stop_after=n)
        requested = of_type(frames, "approval.requested")
        if requested:
            return requested[0]
        assert not [f for f in frames if f["event"].startswith("run.") and f["event"] != "run.started"], frames
    raise AssertionError("no approval.requested")


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_auto_tool_calls_run_through_the_gateway_and_the_model_answers_with_their_results(
    http: httpx.AsyncClient,
    ada: User,
    openai_fake: FakeOpenAIServer,
    anthropic_fake: FakeAnthropicServer,
    mcp_url: str,
    kind: str,
) -> None:
    fake: Any = openai_fake if kind == "openai" else anthropic_fake
    cid = await agent_chat(http, ada, fake.base_url, mcp_url, kind=kind)
    content = script(("tools__echo", {"text": "hi"}), ("tools__add", {"a": 2, "b": 3}), say="Checking.")
    posted = await post(http, ada, cid, content)
    frames = await events_of(http, ada, posted["run"]["id"])
    assert check_stream(frames, "run.completed") == "Checking.Results: hi | 5"
    started = of_type(frames, "tool_call.started")
    assert [(s["tool_call_id"], s["name"]) for s in started] == [
        ("call_0_0", "tools__echo"),
        ("call_0_1", "tools__add"),
    ]
    assert {d["tool_call_id"] for d in of_type(frames, "tool_call.arguments.delta")} == {"call_0_0", "call_0_1"}
    done = sorted(of_type(frames, "tool_call.completed"), key=lambda e: e["tool_call_id"])
    assert [(d["arguments"], d["result"], d["is_error"]) for d in done] == [
        ({"text": "hi"}, "hi", False),
        ({"a": 2, "b": 3}, "5", False),
    ]
    assert of_type(frames, "approval.requested") == []
    # Both model rounds are counted: 12 input tokens each, 7 + 5 output tokens.
    assert [(u["input_tokens"], u["output_tokens"]) for u in of_type(frames, "usage")] == [(24, 12)]

    stored = await messages(http, ada, cid)
    answer = stored[1]
    assert answer["status"] == "completed"
    assert answer["content"] == "Checking.Results: hi | 5"
    calls = {c["tool_call_id"]: c for c in answer["tool_calls"]}
    assert calls["call_0_0"]["status"] == calls["call_0_1"]["status"] == "completed"
    assert calls["call_0_0"]["offset"] == len("Checking.")
    assert calls["call_0_1"]["result"] == "5"
    assert answer["usage"]["output_tokens"] == 12

    history = (await http.get(f"{C}/{cid}/events", headers=ada.headers)).json()["data"]
    types = [e["type"] for e in history]
    assert types.count("chat.tool_call_requested.v1") == 2
    assert types.count("chat.tool_call_completed.v1") == 2
    # A second turn gives the model the first turn's calls and results back, paired.
    again = await post(http, ada, cid, "thanks")
    check_stream(await events_of(http, ada, again["run"]["id"]), "run.completed")
    wire = json.dumps([r for r in fake.requests if "tools" in r][-1]["messages"])
    assert "call_0_0" in wire
    assert "call_0_1" in wire


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_manual_call_waits_until_an_editor_approves_it(
    http: httpx.AsyncClient,
    ada: User,
    bob: User,
    openai_fake: FakeOpenAIServer,
    anthropic_fake: FakeAnthropicServer,
    mcp_url: str,
    kind: str,
) -> None:
    fake: Any = openai_fake if kind == "openai" else anthropic_fake
    cid = await agent_chat(http, ada, fake.base_url, mcp_url, server_approval="manual", kind=kind)
    posted = await post(http, ada, cid, script(("tools__echo", {"text": "approved"})))
    run_id = posted["run"]["id"]
    requested = await until_approval(http, ada, run_id)
    assert requested["name"] == "tools__echo"
    assert requested["arguments"] == {"text": "approved"}
    approval_id = requested["approval_id"]
    url = f"/api/v1/runs/{run_id}/approvals"

    listed = (await http.get(url, headers=ada.headers)).json()
    assert listed["object"] == "list"
    assert [(a["id"], a["status"], a["tool_call_id"]) for a in listed["data"]] == [(approval_id, "pending", "call_0_0")]
    stored = await messages(http, ada, cid)
    assert stored[1]["tool_calls"][0]["status"] == "awaiting_approval"
    assert await status_of(http, ada, cid) == "running"

    decide = {"decision": "approve", "reason": "fine"}
    # A stranger sees nothing; a viewer sees the approval but may not decide; an editor decides.
    assert_problem(await http.get(url, headers=bob.headers), 404, "run_not_found")
    assert_problem(await http.post(f"{url}/{approval_id}", json=decide, headers=bob.headers), 404, "run_not_found")
    grant = await http.post(
        f"{C}/{cid}/acl", json={"grantee_type": "user", "grantee_id": bob.id, "role": "viewer"}, headers=ada.headers
    )
    assert grant.status_code == 201, grant.text
    assert (await http.get(url, headers=bob.headers)).json()["data"][0]["status"] == "pending"
    assert_problem(await http.post(f"{url}/{approval_id}", json=decide, headers=bob.headers), 403, "forbidden")
    assert_problem(await http.post(f"{url}/{run_id}", json=decide, headers=ada.headers), 404, "approval_not_found")
    bad = await http.post(f"{url}/{approval_id}", json={"decision": "maybe"}, headers=ada.headers)
    assert bad.status_code == 400
    promote = {"grantee_type": "user", "grantee_id": bob.id, "role": "editor"}
    assert (await http.post(f"{C}/{cid}/acl", json=promote, headers=ada.headers)).status_code == 200

    decided = await http.post(f"{url}/{approval_id}", json=decide, headers=bob.headers)
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "approved"
    assert decided.json()["decided_by"] == f"user:{bob.id}"
    assert_problem(await http.post(f"{url}/{approval_id}", json=decide, headers=ada.headers), 409, "approval_decided")

    frames = await events_of(http, ada, run_id)
    assert check_stream(frames, "run.completed") == "Results: approved"
    assert [(d["decision"], d["reason"]) for d in of_type(frames, "approval.decided")] == [("approve", "fine")]
    assert [d["result"] for d in of_type(frames, "tool_call.completed")] == ["approved"]
    call = (await messages(http, ada, cid))[1]["tool_calls"][0]
    assert (call["status"], call["decided_by"], call["result"]) == ("completed", f"user:{bob.id}", "approved")


async def test_a_denied_call_gives_the_model_a_refusal_and_the_conversation_setting_wins(
    http: httpx.AsyncClient, ada: User, openai_fake: FakeOpenAIServer, mcp_url: str
) -> None:
    # The server would run calls automatically; the conversation asks for approval: the stricter wins.
    cid = await agent_chat(http, ada, openai_fake.base_url, mcp_url, approval="manual")
    posted = await post(http, ada, cid, script(("tools__echo", {"text": "secret"})))
    run_id = posted["run"]["id"]
    requested = await until_approval(http, ada, run_id)
    deny = {"decision": "deny", "reason": "not now"}
    resp = await http.post(
        f"/api/v1/runs/{run_id}/approvals/{requested['approval_id']}", json=deny, headers=ada.headers
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "denied"

    frames = await events_of(http, ada, run_id)
    refusal = "The tool call was denied by the user: not now"
    # (OpenAI's wire format has no error flag for tool results: the adapter marks them "Error: ".)
    assert check_stream(frames, "run.completed") == f"Results: Error: {refusal}"
    assert [d["decision"] for d in of_type(frames, "approval.decided")] == ["deny"]
    assert [(d["result"], d["is_error"]) for d in of_type(frames, "tool_call.completed")] == [(refusal, True)]
    call = (await messages(http, ada, cid))[1]["tool_calls"][0]
    assert (call["status"], call["reason"]) == ("denied", "not now")


async def test_an_undecided_approval_times_out_as_denied_by_the_system(
    http: httpx.AsyncClient, ada: User, openai_fake: FakeOpenAIServer, mcp_url: str, services: Services
) -> None:
    services.settings = msgspec.structs.replace(services.settings, approval_timeout_s=0.3)
    cid = await agent_chat(http, ada, openai_fake.base_url, mcp_url, server_approval="manual")
    posted = await post(http, ada, cid, script(("tools__echo", {"text": "late"})))
    frames = await events_of(http, ada, posted["run"]["id"])
    assert check_stream(frames, "run.completed").startswith("Results: Error: The tool call was denied by the system")
    assert [d["decision"] for d in of_type(frames, "approval.decided")] == ["timeout"]
    approvals = (await http.get(f"/api/v1/runs/{posted['run']['id']}/approvals", headers=ada.headers)).json()["data"]
    assert [(a["status"], a["decided_by"]) for a in approvals] == [("denied", "system")]


async def test_tool_errors_and_unknown_tools_go_back_to_the_model_and_the_turn_completes(
    http: httpx.AsyncClient, ada: User, openai_fake: FakeOpenAIServer, mcp_url: str
) -> None:
    cid = await agent_chat(http, ada, openai_fake.base_url, mcp_url)
    calls: tuple[tuple[str, dict[str, Any]], ...] = (
        ("tools__fail", {}),
        ("tools__add", {"a": "two", "b": 3}),
        ("elsewhere__rm", {"path": "/"}),
    )
    posted = await post(http, ada, cid, script(*calls))
    frames = await events_of(http, ada, posted["run"]["id"])
    check_stream(frames, "run.completed")
    results = {d["tool_call_id"]: d for d in of_type(frames, "tool_call.completed")}
    assert all(r["is_error"] for r in results.values())
    assert "Invalid arguments" in results["call_0_1"]["result"]
    assert "no tool named 'elsewhere__rm'" in results["call_0_2"]["result"]
    stored = (await messages(http, ada, cid))[1]
    assert stored["status"] == "completed"
    assert [c["is_error"] for c in stored["tool_calls"]] == [True, True, True]


async def test_a_model_without_the_tools_capability_is_offered_none_and_runs_none(
    http: httpx.AsyncClient, ada: User, openai_fake: FakeOpenAIServer, mcp_url: str
) -> None:
    server = await tools_server(http, ada, mcp_url)
    model = await model_of(http, ada, openai_fake.base_url, "agent")
    cid = await conversation_of(http, ada, model, tools={"mcp_server_ids": [server]})
    posted = await post(http, ada, cid, script(("tools__echo", {"text": "x"})))
    frames = await events_of(http, ada, posted["run"]["id"])
    check_stream(frames, "run.completed")
    assert "tools" not in openai_fake.requests[-1]
    [result] = of_type(frames, "tool_call.completed")
    assert result["is_error"]
    assert "no tool named" in result["result"]


async def test_the_round_limit_ends_a_runaway_tool_loop(
    http: httpx.AsyncClient, ada: User, openai_fake: FakeOpenAIServer, mcp_url: str, services: Services
) -> None:
    services.settings = msgspec.structs.replace(services.settings, chat_max_tool_rounds=2)
    cid = await agent_chat(http, ada, openai_fake.base_url, mcp_url)
    posted = await post(http, ada, cid, script(("tools__echo", {"text": "again"}), rounds=50))
    frames = await events_of(http, ada, posted["run"]["id"])
    check_stream(frames, "run.completed")
    assert [m["stop_reason"] for m in of_type(frames, "message.completed")] == ["max_tool_rounds"]
    assert len(of_type(frames, "tool_call.completed")) == 2
    stored = (await messages(http, ada, cid))[1]
    assert stored["finish_reason"] == "max_tool_rounds"
    assert [(c["tool_call_id"], c["status"]) for c in stored["tool_calls"]] == [
        ("call_0_0", "completed"),
        ("call_1_0", "completed"),
        ("call_2_0", "denied"),
    ]
    assert stored["tool_calls"][2]["decided_by"] == "system"


async def test_cancelling_while_a_call_waits_keeps_it_unfinished_and_the_next_turn_still_works(
    http: httpx.AsyncClient, ada: User, openai_fake: FakeOpenAIServer, mcp_url: str
) -> None:
    cid = await agent_chat(http, ada, openai_fake.base_url, mcp_url, server_approval="manual")
    posted = await post(http, ada, cid, script(("tools__echo", {"text": "never"}), say="Asking."))
    run_id = posted["run"]["id"]
    await until_approval(http, ada, run_id)
    assert (await http.post(f"/api/v1/runs/{run_id}/cancel", headers=ada.headers)).status_code == 202
    check_stream(await events_of(http, ada, run_id), "run.cancelled")
    stored = (await messages(http, ada, cid))[1]
    assert (stored["status"], stored["content"]) == ("interrupted", "Asking.")
    assert stored["tool_calls"][0]["status"] == "awaiting_approval"
    approvals = (await http.get(f"/api/v1/runs/{run_id}/approvals", headers=ada.headers)).json()["data"]
    approve = {"decision": "approve"}
    late = await http.post(f"/api/v1/runs/{run_id}/approvals/{approvals[0]['id']}", json=approve, headers=ada.headers)
    assert_problem(late, 409, "approval_decided")

    # The next turn shows the model the unfinished call with a result saying so.
    again = await post(http, ada, cid, "hello again")
    check_stream(await events_of(http, ada, again["run"]["id"]), "run.completed")
    wire = [r for r in openai_fake.requests if "tools" in r][-1]["messages"]  # not the title's request
    results = [m for m in wire if m.get("role") == "tool"]
    assert len(results) == 1
    assert "did not complete" in json.dumps(results[0])
