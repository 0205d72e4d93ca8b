"""Branching conversations over HTTP through real turns against the OpenAI fake (loopback uvicorn):
edit a user message, regenerate an assistant message, fork at a message (lineage, new ids, owned by
the caller, independent of its source), list forks, and the problems bad input gets."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

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

# The chat-turn fixtures (a loopback uvicorn server, the OpenAI fake, two users), reused as they are.
openai_fake = turns_tests.openai_fake
services = turns_tests.services
app = turns_tests.app
http = turns_tests.http
ada = turns_tests.ada
bob = turns_tests.bob


async def answered(http: httpx.AsyncClient, who: User, cid: str, content: str) -> dict[str, Any]:
    """Post ``content`` and wait for the turn's end."""
    posted = await post(http, who, cid, content)
    check_stream(await events_of(http, who, posted["run"]["id"]), "run.completed")
    return posted


async def two_turns(http: httpx.AsyncClient, who: User, base_url: str) -> tuple[str, str, list[dict[str, Any]]]:
    model = await model_of(http, who, base_url, "text")
    cid = await conversation_of(http, who, model, title="source")
    await answered(http, who, cid, "First question")
    await answered(http, who, cid, "Second question")
    stored = await messages(http, who, cid)
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
    return model, cid, stored


async def test_editing_a_user_message_replaces_it_and_its_old_answer_leaves_the_branch(
    http: httpx.AsyncClient, ada: User, openai_fake: FakeOpenAIServer
) -> None:
    openai_fake.reset()
    _, cid, before = await two_turns(http, ada, openai_fake.base_url)
    resp = await http.post(
        f"{C}/{cid}/messages/{before[2]['id']}/edit", json={"content": "Edited question"}, headers=ada.headers
    )
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert resp.headers["location"] == f"/api/v1/runs/{body['run']['id']}"
    assert body["message"]["role"] == "user"
    assert body["message"]["content"] == "Edited question"
    assert body["message"]["id"] not in {m["id"] for m in before}
    assert body["run"]["kind"] == "chat"
    frames = await events_of(http, ada, body["run"]["id"])
    assert check_stream(frames, "run.completed") == "Hello, world!"
    new_answer = frames[1]["json"]["message_id"]

    after = await messages(http, ada, cid)
    assert [(m["role"], m["content"]) for m in after] == [
        ("user", "First question"),
        ("assistant", "Hello, world!"),
        ("user", "Edited question"),
        ("assistant", "Hello, world!"),
    ]
    assert [m["id"] for m in after[:2]] == [m["id"] for m in before[:2]]
    assert after[2]["id"] == body["message"]["id"]
    assert after[3]["id"] == new_answer
    assert {before[2]["id"], before[3]["id"]}.isdisjoint(m["id"] for m in after)
    # The model was asked the edited question, with the first turn as history and not the old one.
    sent = openai_fake.requests[-1]["messages"]
    assert [(m["role"], m["content"]) for m in sent if m["role"] == "user"] == [
        ("user", "First question"),
        ("user", "Edited question"),
    ]
    # Editing the first message drops everything.
    resp = await http.post(
        f"{C}/{cid}/messages/{after[0]['id']}/edit", json={"content": "Start over"}, headers=ada.headers
    )
    assert resp.status_code == 202, resp.text
    check_stream(await events_of(http, ada, resp.json()["run"]["id"]), "run.completed")
    assert [m["content"] for m in await messages(http, ada, cid)] == ["Start over", "Hello, world!"]
    events = (await http.get(f"{C}/{cid}/events?limit=100", headers=ada.headers)).json()["data"]
    assert "chat.conversation_truncated.v1" in {e["type"] for e in events}


async def test_regenerating_an_assistant_message_produces_a_new_answer(
    http: httpx.AsyncClient, ada: User, openai_fake: FakeOpenAIServer
) -> None:
    openai_fake.reset()
    _, cid, before = await two_turns(http, ada, openai_fake.base_url)
    calls = len(openai_fake.requests)
    resp = await http.post(f"{C}/{cid}/messages/{before[1]['id']}/regenerate", headers=ada.headers)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["message"]["role"] == "assistant"
    assert body["message"]["status"] == "streaming"
    assert body["message"]["run_id"] == body["run"]["id"]
    frames = await events_of(http, ada, body["run"]["id"])
    assert check_stream(frames, "run.completed") == "Hello, world!"
    assert frames[1]["json"]["message_id"] == body["message"]["id"]
    assert len(openai_fake.requests) == calls + 1
    sent = openai_fake.requests[-1]["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [("user", "First question")]

    after = await messages(http, ada, cid)
    assert [(m["role"], m["status"]) for m in after] == [("user", "completed"), ("assistant", "completed")]
    assert after[0]["id"] == before[0]["id"]
    assert after[1]["id"] == body["message"]["id"] != before[1]["id"]
    assert after[1]["content"] == "Hello, world!"
    assert await status_of(http, ada, cid) == "active"


async def test_fork_copies_history_with_new_ids_and_lineage_and_is_independent(
    http: httpx.AsyncClient, ada: User, openai_fake: FakeOpenAIServer
) -> None:
    openai_fake.reset()
    _, cid, source = await two_turns(http, ada, openai_fake.base_url)
    resp = await http.post(f"{C}/{cid}/fork", json={"at_message_id": source[1]["id"]}, headers=ada.headers)
    assert resp.status_code == 201, resp.text
    fork = resp.json()
    assert resp.headers["location"] == f"{C}/{fork['id']}"
    assert resp.headers["etag"]
    assert fork["id"] != cid
    assert fork["parent_conversation_id"] == cid
    assert fork["forked_from_message_id"] == source[1]["id"]
    assert fork["owner_id"] == ada.id
    assert fork["title"] == "source"
    assert fork["status"] == "active"
    assert (await http.get(f"{C}/{fork['id']}", headers=ada.headers)).json() == fork

    copied = await messages(http, ada, fork["id"])
    assert [(m["role"], m["content"]) for m in copied] == [(m["role"], m["content"]) for m in source[:2]]
    assert {m["id"] for m in copied}.isdisjoint(m["id"] for m in source)
    assert {m["conversation_id"] for m in copied} == {fork["id"]}

    # Posting to the fork does not touch the source.
    await answered(http, ada, fork["id"], "Only in the fork")
    assert [m["content"] for m in await messages(http, ada, fork["id"])] == [
        "First question",
        "Hello, world!",
        "Only in the fork",
        "Hello, world!",
    ]
    assert await messages(http, ada, cid) == source
    sent = openai_fake.requests[-1]["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == ["First question", "Only in the fork"]

    # The fork's first event records where it came from and who asked (its audit record).
    events = (await http.get(f"{C}/{fork['id']}/events", headers=ada.headers)).json()["data"]
    assert events[0]["type"] == "chat.conversation_forked.v1"
    assert events[0]["request_id"] == resp.headers["x-request-id"]
    assert events[0]["actor"] == f"user:{ada.id}"
    assert events[0]["data"]["parent_conversation_id"] == cid

    # Forks are listed under their source.
    listed = await http.get(f"{C}/{cid}/forks", headers=ada.headers)
    assert listed.status_code == 200, listed.text
    assert [c["id"] for c in listed.json()["data"]] == [fork["id"]]
    assert (await http.get(f"{C}/{fork['id']}/forks", headers=ada.headers)).json()["data"] == []


async def test_a_viewer_forks_into_a_conversation_they_own_and_strangers_get_404(
    http: httpx.AsyncClient, ada: User, bob: User, openai_fake: FakeOpenAIServer
) -> None:
    _, cid, source = await two_turns(http, ada, openai_fake.base_url)
    at = {"at_message_id": source[3]["id"]}
    # Without access: 404 for fork and forks, nothing created.
    assert_problem(await http.post(f"{C}/{cid}/fork", json=at, headers=bob.headers), 404, "conversation_not_found")
    assert_problem(await http.get(f"{C}/{cid}/forks", headers=bob.headers), 404, "conversation_not_found")
    assert (await http.get(C, headers=bob.headers)).json()["data"] == []

    grant = {"grantee_type": "user", "grantee_id": bob.id, "role": "viewer"}
    assert (await http.post(f"{C}/{cid}/acl", json=grant, headers=ada.headers)).status_code == 201
    # A viewer may not edit or regenerate...
    assert_problem(
        await http.post(f"{C}/{cid}/messages/{source[2]['id']}/edit", json={"content": "x"}, headers=bob.headers),
        403,
        "forbidden",
    )
    assert_problem(
        await http.post(f"{C}/{cid}/messages/{source[3]['id']}/regenerate", headers=bob.headers), 403, "forbidden"
    )
    # ... but may fork, and owns the fork alone.
    resp = await http.post(f"{C}/{cid}/fork", json=at, headers=bob.headers)
    assert resp.status_code == 201, resp.text
    fork = resp.json()
    assert fork["owner_id"] == bob.id
    assert len(await messages(http, bob, fork["id"])) == 4
    acl = (await http.get(f"{C}/{fork['id']}/acl", headers=bob.headers)).json()["data"]
    assert [(g["grantee_id"], g["role"]) for g in acl] == [(bob.id, "owner")]
    assert_problem(await http.get(f"{C}/{fork['id']}", headers=ada.headers), 404, "conversation_not_found")
    assert [c["id"] for c in (await http.get(C, headers=bob.headers)).json()["data"]] == [fork["id"], cid]
    # The source's owner does not see bob's fork among its forks; bob does.
    assert (await http.get(f"{C}/{cid}/forks", headers=ada.headers)).json()["data"] == []
    assert [c["id"] for c in (await http.get(f"{C}/{cid}/forks", headers=bob.headers)).json()["data"]] == [fork["id"]]
    # The source is untouched.
    assert await messages(http, ada, cid) == source


async def test_bad_input_gets_problems(http: httpx.AsyncClient, ada: User, openai_fake: FakeOpenAIServer) -> None:
    _, cid, source = await two_turns(http, ada, openai_fake.base_url)
    user_id, assistant_id = source[2]["id"], source[3]["id"]
    edit = f"{C}/{cid}/messages/{{}}/edit"
    regen = f"{C}/{cid}/messages/{{}}/regenerate"
    fork = f"{C}/{cid}/fork"
    unknown = str(uuid.uuid4())

    # Unknown messages, and messages of the wrong role.
    for url, body in (
        (edit.format(unknown), {"content": "x"}),
        (edit.format(assistant_id), {"content": "x"}),
        (regen.format(unknown), None),
        (regen.format(user_id), None),
        (fork, {"at_message_id": unknown}),
    ):
        assert_problem(await http.post(url, json=body, headers=ada.headers), 404, "message_not_found")
    # Unknown conversation, malformed ids and bodies.
    assert_problem(
        await http.post(f"{C}/{unknown}/messages/{user_id}/edit", json={"content": "x"}, headers=ada.headers),
        404,
        "conversation_not_found",
    )
    assert_problem(
        await http.post(f"{C}/{unknown}/fork", json={"at_message_id": user_id}, headers=ada.headers),
        404,
        "conversation_not_found",
    )
    assert_problem(await http.get(f"{C}/{unknown}/forks", headers=ada.headers), 404, "conversation_not_found")
    for url in (edit.format("not-a-uuid"), regen.format("not-a-uuid"), f"{C}/not-a-uuid/fork"):
        resp = await http.post(url, json={"content": "x", "at_message_id": user_id}, headers=ada.headers)
        assert 400 <= resp.status_code < 500, (url, resp.text)
    for bad in ({}, {"content": ""}, {"content": 5}, {"content": "x", "extra": 1}, {"content": "x" * 200_001}):
        resp = await http.post(edit.format(user_id), json=bad, headers=ada.headers)
        assert 400 <= resp.status_code < 500, (bad, resp.text)
    for bad_fork in ({}, {"at_message_id": "nope"}, {"at_message_id": user_id, "extra": 1}):
        resp = await http.post(fork, json=bad_fork, headers=ada.headers)
        assert 400 <= resp.status_code < 500, (bad_fork, resp.text)
    assert (await http.get(f"{C}/not-a-uuid/forks", headers=ada.headers)).status_code == 400
    assert await messages(http, ada, cid) == source

    # Archived: edits, regenerations and forks are 409 and change nothing.
    assert (await http.post(f"{C}/{cid}/archive", headers=ada.headers)).status_code == 200
    assert_problem(
        await http.post(edit.format(user_id), json={"content": "x"}, headers=ada.headers), 409, "conversation_archived"
    )
    assert_problem(await http.post(regen.format(assistant_id), headers=ada.headers), 409, "conversation_archived")
    assert_problem(
        await http.post(fork, json={"at_message_id": user_id}, headers=ada.headers), 409, "conversation_archived"
    )
    assert (await http.post(f"{C}/{cid}/restore", headers=ada.headers)).status_code == 200
    assert await messages(http, ada, cid) == source
    assert (await http.get(f"{C}/{cid}/forks", headers=ada.headers)).json()["data"] == []


async def test_editing_or_regenerating_while_a_turn_runs_is_busy(
    http: httpx.AsyncClient, ada: User, openai_fake: FakeOpenAIServer
) -> None:
    model = await model_of(http, ada, openai_fake.base_url, "text")
    slow = await model_of(http, ada, openai_fake.base_url, "slow")
    cid = await conversation_of(http, ada, model)
    await answered(http, ada, cid, "Quick one")
    first = await messages(http, ada, cid)
    assert (await http.patch(f"{C}/{cid}", json={"model_id": slow}, headers=ada.headers)).status_code == 200
    running = await post(http, ada, cid, "Talk slowly")
    edit = await http.post(f"{C}/{cid}/messages/{first[0]['id']}/edit", json={"content": "x"}, headers=ada.headers)
    assert_problem(edit, 409, "conversation_busy")
    regen = await http.post(f"{C}/{cid}/messages/{first[1]['id']}/regenerate", headers=ada.headers)
    assert_problem(regen, 409, "conversation_busy")
    # Forking a finished message while the source runs is allowed; the one being written is not.
    streaming = (await messages(http, ada, cid))[3]
    assert streaming["status"] == "streaming"
    assert_problem(
        await http.post(f"{C}/{cid}/fork", json={"at_message_id": streaming["id"]}, headers=ada.headers),
        409,
        "message_not_finished",
    )
    forked = await http.post(f"{C}/{cid}/fork", json={"at_message_id": first[1]["id"]}, headers=ada.headers)
    assert forked.status_code == 201, forked.text
    assert len(await messages(http, ada, forked.json()["id"])) == 2
    cancel = await http.post(f"/api/v1/runs/{running['run']['id']}/cancel", headers=ada.headers)
    assert cancel.status_code == 202, cancel.text
    check_stream(await events_of(http, ada, running["run"]["id"]), "run.cancelled")
