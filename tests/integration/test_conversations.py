"""Conversations over HTTP: create (tenant default model), read-your-writes, list with the archived
filter, patch with If-Match, archive/restore/delete, sharing, the busy rule. Their messages, events
and the projection's idempotence and rebuild: test_conversation_history.py; search:
test_conversation_search.py."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from domain.chat import turns
from domain.shared.events import EventMetadata
from domain.shared.ids import new_id
from infra.chat import commands
from infra.db.engine import Database
from tests.integration.test_access import User, app, user  # noqa: F401  (app: cheap password hashing)
from tests.integration.test_http_platform import assert_problem

URL = "/api/v1/conversations"


@pytest.fixture
async def ada(client: httpx.AsyncClient, db: Database) -> User:
    return await user(client, "ada@example.com")


@pytest.fixture
async def bob(client: httpx.AsyncClient, ada: User) -> User:
    return await user(client, "bob@example.com")


async def create(client: httpx.AsyncClient, who: User, **body: Any) -> dict[str, Any]:
    resp = await client.post(URL, json=body, headers=who.headers)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


async def chat_model(client: httpx.AsyncClient, who: User, name: str = "m") -> str:
    provider = await client.post(
        "/api/v1/providers", json={"name": f"p-{name}", "kind": "openai", "api_key": "sk-x"}, headers=who.headers
    )
    assert provider.status_code == 201, provider.text
    model = await client.post(
        "/api/v1/models",
        json={"provider_id": provider.json()["id"], "name": name, "upstream_id": "gpt", "kind": "chat"},
        headers=who.headers,
    )
    assert model.status_code == 201, model.text
    return str(model.json()["id"])


async def exchange(db: Database, conversation_id: str, question: str, answer: str | None) -> None:
    """Record a user message and its assistant turn as the (future) messages route will; ``answer``
    None leaves the turn running."""
    cid = uuid.UUID(conversation_id)
    meta = EventMetadata(actor="system")
    async with db.write() as session:
        loaded = await commands.load_conversation(session, cid)
        assistant = new_id()
        events = turns.post_message(
            loaded.state, message_id=new_id(), content=question, run_id=new_id(), assistant_message_id=assistant
        )
        applied = await commands.append(session, cid, loaded, events, meta)
        if answer is not None:
            loaded = await commands.load_conversation(session, cid)
            done = turns.complete(applied.state, message_id=assistant, content=answer)
            await commands.append(session, cid, loaded, done, meta)


async def test_conversations_need_a_principal(client: httpx.AsyncClient, db: Database) -> None:
    assert_problem(await client.get(URL), 401, "unauthenticated")
    assert_problem(await client.post(URL, json={}), 401, "unauthenticated")
    assert_problem(await client.get(f"{URL}/{uuid.uuid4()}"), 401, "unauthenticated")


async def test_create_then_get_at_once_sees_it(client: httpx.AsyncClient, ada: User) -> None:
    model_id = await chat_model(client, ada)
    body = {
        "title": "  Plans ",
        "system_prompt": "Be brief",
        "model_id": model_id,
        "tools": {"mcp_server_ids": [], "approval": "manual"},
    }
    resp = await client.post(URL, json=body, headers=ada.headers)
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert resp.headers["location"].endswith(f"{URL}/{created['id']}")
    assert resp.headers["etag"] == '"1"'
    assert created["object"] == "conversation"
    assert created["title"] == "Plans"
    assert created["status"] == "created"
    assert created["model_id"] == model_id
    assert created["tools"] == {"mcp_server_ids": [], "approval": "manual"}
    assert created["owner_id"] == ada.id
    got = await client.get(f"{URL}/{created['id']}", headers=ada.headers)
    assert got.status_code == 200, got.text
    assert got.json() == created
    listed = (await client.get(URL, headers=ada.headers)).json()
    assert [c["id"] for c in listed["data"]] == [created["id"]]
    not_modified = await client.get(f"{URL}/{created['id']}", headers={**ada.headers, "If-None-Match": '"1"'})
    assert not_modified.status_code == 304


async def test_the_model_defaults_to_the_tenants_default_chat_model(client: httpx.AsyncClient, ada: User) -> None:
    assert (await create(client, ada))["model_id"] is None  # no default yet: no model
    model_id = await chat_model(client, ada)
    resp = await client.patch("/api/v1/admin/settings", json={"default_chat_model_id": model_id}, headers=ada.headers)
    assert resp.status_code == 200, resp.text
    assert (await create(client, ada))["model_id"] == model_id


async def test_bad_input_is_a_problem_never_a_500(client: httpx.AsyncClient, ada: User) -> None:
    body = assert_problem(
        await client.post(URL, json={"title": "x" * 201}, headers=ada.headers), 400, "validation_error"
    )
    assert body["errors"][0]["pointer"] == "/title"
    body = assert_problem(
        await client.post(URL, json={"title": "a\x00b"}, headers=ada.headers), 400, "validation_error"
    )
    assert body["errors"][0]["pointer"] == "/title"
    assert_problem(await client.post(URL, json={"model_id": "nope"}, headers=ada.headers), 400, "validation_error")
    body = assert_problem(
        await client.post(URL, json={"model_id": str(uuid.uuid4())}, headers=ada.headers), 422, "model_not_found"
    )
    assert body["errors"][0]["pointer"] == "/model_id"
    tools = {"mcp_server_ids": [str(uuid.uuid4())]}
    body = assert_problem(
        await client.post(URL, json={"tools": tools}, headers=ada.headers), 422, "mcp_server_not_found"
    )
    assert body["errors"][0]["pointer"] == "/tools/mcp_server_ids/0"
    bad_approval = {"tools": {"approval": "sometimes"}}
    assert_problem(await client.post(URL, json=bad_approval, headers=ada.headers), 400, "validation_error")
    json_headers = {**ada.headers, "Content-Type": "application/json"}
    assert_problem(await client.post(URL, content=b"{", headers=json_headers), 400, "bad_request")
    assert (await client.post(URL, json=[], headers=ada.headers)).status_code == 400
    assert_problem(await client.get(f"{URL}/not-a-uuid", headers=ada.headers), 400, "validation_error")
    assert_problem(await client.get(URL, params={"cursor": "!!"}, headers=ada.headers), 400, "invalid_cursor")
    assert_problem(await client.get(URL, params={"q": "x" * 201}, headers=ada.headers), 400, "validation_error")
    assert_problem(await client.get(URL, params={"limit": 0}, headers=ada.headers), 400, "validation_error")
    assert_problem(await client.get(URL, params={"archived": "maybe"}, headers=ada.headers), 400, "validation_error")
    conversation = await create(client, ada)
    cid = conversation["id"]
    assert_problem(
        await client.patch(f"{URL}/{cid}", json={"system_prompt": 5}, headers=ada.headers), 400, "validation_error"
    )
    assert_problem(
        await client.patch(f"{URL}/{cid}", json={"model_id": None}, headers=ada.headers), 400, "validation_error"
    )
    assert_problem(
        await client.get(f"{URL}/{cid}/messages", params={"cursor": "e30"}, headers=ada.headers), 400, "invalid_cursor"
    )
    assert_problem(
        await client.get(f"{URL}/{cid}/events", params={"cursor": "x"}, headers=ada.headers), 400, "invalid_cursor"
    )
    assert_problem(await client.get(f"{URL}/{uuid.uuid4()}", headers=ada.headers), 404, "conversation_not_found")


async def test_patch_changes_settings_with_if_match_and_records_what_changed(
    client: httpx.AsyncClient, ada: User, db: Database
) -> None:
    conversation = await create(client, ada, title="One")
    cid = conversation["id"]
    other = await chat_model(client, ada, "other")
    stale = await client.patch(f"{URL}/{cid}", json={"title": "x"}, headers={**ada.headers, "If-Match": '"7"'})
    assert_problem(stale, 412, "precondition_failed")
    resp = await client.patch(
        f"{URL}/{cid}",
        json={"title": "Two", "system_prompt": "Be kind", "model_id": other, "tools": {"approval": "manual"}},
        headers={**ada.headers, "If-Match": '"1"'},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["title"], body["system_prompt"], body["model_id"]) == ("Two", "Be kind", other)
    assert body["tools"]["approval"] == "manual"
    assert body["version"] == 4  # title, settings, tools: one event each
    assert resp.headers["etag"] == '"4"'
    assert (await client.get(f"{URL}/{cid}", headers=ada.headers)).json() == body
    same = await client.patch(f"{URL}/{cid}", json={"title": "Two"}, headers=ada.headers)
    assert same.status_code == 200
    assert same.json()["version"] == 4  # nothing changed: no event
    cleared = await client.patch(f"{URL}/{cid}", json={"system_prompt": None}, headers=ada.headers)
    assert cleared.json()["system_prompt"] is None
    async with db.read() as s:
        rows = (
            await s.execute(
                text(
                    "SELECT type_id, data->'changed', metadata->>'actor' FROM events"
                    " WHERE stream_id = :s ORDER BY version"
                ),
                {"s": f"conversation-{cid}"},
            )
        ).all()
    assert [r[0] for r in rows] == [
        "chat.conversation_created.v1",
        "chat.title_changed.v1",
        "chat.settings_changed.v1",
        "chat.tool_settings_changed.v1",
        "chat.settings_changed.v1",
    ]
    assert rows[2][1] == ["system_prompt", "model_id"]
    assert rows[4][1] == ["system_prompt"]
    assert all(r[2] == f"user:{ada.id}" for r in rows)
    bad_model = await client.patch(f"{URL}/{cid}", json={"model_id": str(uuid.uuid4())}, headers=ada.headers)
    assert_problem(bad_model, 422, "model_not_found")


async def test_archive_hides_it_and_makes_it_read_only_until_restored(client: httpx.AsyncClient, ada: User) -> None:
    keep = await create(client, ada, title="keep")
    old = await create(client, ada, title="old")
    resp = await client.post(f"{URL}/{old['id']}/archive", headers=ada.headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "archived"
    assert [c["id"] for c in (await client.get(URL, headers=ada.headers)).json()["data"]] == [keep["id"]]
    with_archived = (await client.get(URL, params={"archived": "true"}, headers=ada.headers)).json()["data"]
    assert {c["id"] for c in with_archived} == {keep["id"], old["id"]}
    assert (await client.get(f"{URL}/{old['id']}", headers=ada.headers)).json()["status"] == "archived"
    assert_problem(
        await client.patch(f"{URL}/{old['id']}", json={"title": "x"}, headers=ada.headers), 409, "conversation_archived"
    )
    assert_problem(await client.post(f"{URL}/{old['id']}/archive", headers=ada.headers), 409, "conversation_archived")
    assert_problem(
        await client.post(f"{URL}/{keep['id']}/restore", headers=ada.headers), 409, "conversation_not_archived"
    )
    restored = await client.post(f"{URL}/{old['id']}/restore", headers=ada.headers)
    assert restored.status_code == 200, restored.text
    assert restored.json()["status"] == "created"
    assert len((await client.get(URL, headers=ada.headers)).json()["data"]) == 2
    stale = await client.post(f"{URL}/{old['id']}/archive", headers={**ada.headers, "If-Match": '"1"'})
    assert_problem(stale, 412, "precondition_failed")


async def test_a_running_turn_makes_the_conversation_busy(client: httpx.AsyncClient, ada: User, db: Database) -> None:
    conversation = await create(client, ada)
    cid = conversation["id"]
    await exchange(db, cid, "question", None)
    assert (await client.get(f"{URL}/{cid}", headers=ada.headers)).json()["status"] == "running"
    assert_problem(
        await client.patch(f"{URL}/{cid}", json={"system_prompt": "x"}, headers=ada.headers), 409, "conversation_busy"
    )
    assert_problem(await client.post(f"{URL}/{cid}/archive", headers=ada.headers), 409, "conversation_busy")
    assert_problem(await client.delete(f"{URL}/{cid}", headers=ada.headers), 409, "conversation_busy")
    renamed = await client.patch(f"{URL}/{cid}", json={"title": "still fine"}, headers=ada.headers)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["status"] == "running"
    messages = (await client.get(f"{URL}/{cid}/messages", headers=ada.headers)).json()["data"]
    assert [m["status"] for m in messages] == ["completed", "streaming"]
    assert messages[1]["run_id"] is not None


async def test_list_pages_newest_first(client: httpx.AsyncClient, ada: User) -> None:
    ids = [(await create(client, ada, title=f"c{i}"))["id"] for i in range(3)]
    first = await client.get(URL, params={"limit": 2}, headers=ada.headers)
    body = first.json()
    assert [c["id"] for c in body["data"]] == ids[::-1][:2]
    assert body["has_more"] is True
    assert 'rel="next"' in first.headers["link"]
    second = (await client.get(URL, params={"limit": 2, "cursor": body["next_cursor"]}, headers=ada.headers)).json()
    assert [c["id"] for c in second["data"]] == [ids[0]]
    assert second["has_more"] is False


async def test_sharing_roles_gate_reading_editing_and_deleting(client: httpx.AsyncClient, ada: User, bob: User) -> None:
    conversation = await create(client, ada, title="mine")
    cid = conversation["id"]
    for method, path in [
        ("GET", ""),
        ("GET", "/messages"),
        ("GET", "/events"),
        ("PATCH", ""),
        ("POST", "/archive"),
        ("POST", "/restore"),
        ("DELETE", ""),
    ]:
        resp = await client.request(method, f"{URL}/{cid}{path}", json={"title": "x"}, headers=bob.headers)
        assert_problem(resp, 404, "conversation_not_found")
    assert (await client.get(URL, headers=bob.headers)).json()["data"] == []

    async def share(role: str) -> None:
        body = {"grantee_type": "user", "grantee_id": bob.id, "role": role}
        resp = await client.post(f"{URL}/{cid}/acl", json=body, headers=ada.headers)
        assert resp.status_code in (200, 201), resp.text

    await share("viewer")
    assert (await client.get(f"{URL}/{cid}", headers=bob.headers)).status_code == 200
    assert (await client.get(f"{URL}/{cid}/messages", headers=bob.headers)).status_code == 200
    assert [c["id"] for c in (await client.get(URL, headers=bob.headers)).json()["data"]] == [cid]
    assert_problem(await client.patch(f"{URL}/{cid}", json={"title": "x"}, headers=bob.headers), 403, "forbidden")
    assert_problem(await client.post(f"{URL}/{cid}/archive", headers=bob.headers), 403, "forbidden")
    await share("editor")
    resp = await client.patch(f"{URL}/{cid}", json={"title": "by bob"}, headers=bob.headers)
    assert resp.status_code == 200, resp.text
    assert_problem(await client.delete(f"{URL}/{cid}", headers=bob.headers), 403, "forbidden")
    await share("manager")
    assert_problem(await client.delete(f"{URL}/{cid}", headers=bob.headers), 403, "forbidden")
    assert (await client.delete(f"{URL}/{cid}", headers=ada.headers)).status_code == 204
    for who in (ada, bob):
        assert_problem(await client.get(f"{URL}/{cid}", headers=who.headers), 404, "conversation_not_found")
        assert (await client.get(URL, headers=who.headers)).json()["data"] == []
    assert_problem(await client.delete(f"{URL}/{cid}", headers=ada.headers), 404, "conversation_not_found")


async def test_delete_checks_if_match_and_works_on_archived(client: httpx.AsyncClient, ada: User) -> None:
    conversation = await create(client, ada)
    cid = conversation["id"]
    assert (await client.post(f"{URL}/{cid}/archive", headers=ada.headers)).status_code == 200
    stale = await client.delete(f"{URL}/{cid}", headers={**ada.headers, "If-Match": '"1"'})
    assert_problem(stale, 412, "precondition_failed")
    assert (await client.delete(f"{URL}/{cid}", headers={**ada.headers, "If-Match": '"2"'})).status_code == 204


async def test_create_honours_the_idempotency_key(client: httpx.AsyncClient, ada: User) -> None:
    headers = {**ada.headers, "Idempotency-Key": "conv-1"}
    first = await client.post(URL, json={"title": "once"}, headers=headers)
    again = await client.post(URL, json={"title": "once"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json()["id"] == first.json()["id"]
    assert len((await client.get(URL, headers=ada.headers)).json()["data"]) == 1
    other = await client.post(URL, json={"title": "different"}, headers=headers)
    assert_problem(other, 422, "idempotency_key_reused")
