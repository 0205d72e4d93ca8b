"""Conversations over HTTP: create (tenant default model), read-your-writes, list with full-text
archived filter, patch with If-Match, archive/restore/delete, messages, events, sharing,
the busy rule, and the projection's idempotence and rebuild."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from domain.chat import branching, turns
from domain.shared.events import EventMetadata
from domain.shared.ids import new_id
from infra.chat import commands
from infra.db.engine import Database
from infra.eventstore.postgres import PostgresTransactionFactory
from infra.settings import Settings
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


async def test_messages_of_the_current_branch_in_order_and_paged(
    client: httpx.AsyncClient, ada: User, db: Database
) -> None:
    conversation = await create(client, ada)
    cid = conversation["id"]
    assert (await client.get(f"{URL}/{cid}/messages", headers=ada.headers)).json()["data"] == []
    await exchange(db, cid, "first question", "first answer")
    await exchange(db, cid, "second question", "second answer")
    page = (await client.get(f"{URL}/{cid}/messages", params={"limit": 3}, headers=ada.headers)).json()
    assert [m["content"] for m in page["data"]] == ["first question", "first answer", "second question"]
    assert [m["role"] for m in page["data"]] == ["user", "assistant", "user"]
    assert page["has_more"] is True
    rest = await client.get(
        f"{URL}/{cid}/messages", params={"limit": 3, "cursor": page["next_cursor"]}, headers=ada.headers
    )
    assert [m["content"] for m in rest.json()["data"]] == ["second answer"]
    assert rest.json()["data"][0]["status"] == "completed"
    assert rest.json()["has_more"] is False
    got = (await client.get(f"{URL}/{cid}", headers=ada.headers)).json()
    assert got["status"] == "active"
    assert got["last_message_at"] is not None
    # Truncating takes the later messages off the branch.
    async with db.write() as session:
        loaded = await commands.load_conversation(session, uuid.UUID(cid))
        first_answer = loaded.state.messages[1].message_id
        await commands.append(
            session,
            uuid.UUID(cid),
            loaded,
            branching.truncate(loaded.state, first_answer),
            EventMetadata(actor="system"),
        )
    left = (await client.get(f"{URL}/{cid}/messages", headers=ada.headers)).json()["data"]
    assert [m["content"] for m in left] == ["first question", "first answer"]


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


async def test_events_show_the_history_paged(client: httpx.AsyncClient, ada: User) -> None:
    conversation = await create(client, ada, title="a")
    cid = conversation["id"]
    for title in ("b", "c", "d"):
        resp = await client.patch(f"{URL}/{cid}", json={"title": title}, headers=ada.headers)
        assert resp.status_code == 200
    first = (await client.get(f"{URL}/{cid}/events", params={"limit": 3}, headers=ada.headers)).json()
    assert [e["type"] for e in first["data"]] == [
        "chat.conversation_created.v1",
        "chat.title_changed.v1",
        "chat.title_changed.v1",
    ]
    assert [e["version"] for e in first["data"]] == [1, 2, 3]
    assert first["data"][0]["actor"] == f"user:{ada.id}"
    assert first["data"][0]["request_id"]
    assert first["data"][1]["data"]["title"] == "b"
    assert first["data"][0]["object"] == "conversation_event"
    rest = (
        await client.get(
            f"{URL}/{cid}/events", params={"limit": 3, "cursor": first["next_cursor"]}, headers=ada.headers
        )
    ).json()
    assert [e["version"] for e in rest["data"]] == [4]
    assert rest["has_more"] is False


async def read_model(db: Database) -> list[Any]:
    async with db.read() as s:
        conversations = (await s.execute(text("SELECT *, search::text AS s FROM conversations ORDER BY id"))).all()
        messages = (await s.execute(text("SELECT * FROM messages ORDER BY id"))).all()
    return [tuple(r) for r in conversations] + [tuple(r) for r in messages]


async def test_the_runner_changes_nothing_and_a_rebuild_reproduces_the_read_model(
    client: httpx.AsyncClient, ada: User, db: Database, settings: Settings
) -> None:
    from infra.chat.projections import ConversationsProjection
    from infra.projections.rebuild import rebuild_all
    from infra.projections.runner import catch_up

    one = await create(client, ada, title="one")
    await exchange(db, one["id"], "q1", "a1")
    await exchange(db, one["id"], "q2", None)
    two = await create(client, ada, title="two")
    await client.post(f"{URL}/{two['id']}/archive", headers=ada.headers)
    gone = await create(client, ada, title="gone")
    await exchange(db, gone["id"], "q", "a")
    assert (await client.delete(f"{URL}/{gone['id']}", headers=ada.headers)).status_code == 204
    async with db.write() as session:  # a fork, with its copied history
        source = await commands.load_conversation(session, uuid.UUID(one["id"]))
        fork_id = new_id()
        forked = branching.fork(
            source.state,
            conversation_id=fork_id,
            owner_id=uuid.UUID(ada.id),
            at_message_id=source.state.messages[1].message_id,
            new_id=new_id,
        )
        empty = await commands.load_conversation(session, fork_id)
        await commands.append(session, fork_id, empty, [forked], EventMetadata(actor="system"))

    before = await read_model(db)
    assert len(before) == 4 + 4 + 2  # 4 conversations (one a deleted tombstone); messages of 'one' and the fork
    await catch_up(PostgresTransactionFactory(db), ConversationsProjection())
    assert await read_model(db) == before  # re-applying the same events changes nothing
    async with db.write() as s:  # damage the read model; the rebuild must repair it
        await s.execute(text("DELETE FROM messages WHERE role = 'user'"))
        await s.execute(text("UPDATE conversations SET title = 'tampered', version = 99"))
    counts = await rebuild_all(settings, names=["conversations"])
    assert counts["conversations"] > 0
    assert await read_model(db) == before
    forks = (await client.get(f"{URL}/{fork_id}/messages", headers=ada.headers)).status_code
    assert forks == 404  # forks get their ACL from the (future) fork route; none here


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


async def test_a_command_projects_events_another_writer_left_unprojected(
    client: httpx.AsyncClient, ada: User, db: Database
) -> None:
    from domain.chat.events import TitleChanged, stream_id
    from domain.shared.events import NewEvent
    from infra.eventstore.postgres import PostgresEventStore

    conversation = await create(client, ada, title="before")
    cid = uuid.UUID(conversation["id"])
    async with db.write() as session:  # e.g. a worker appending through the plain event store
        event = TitleChanged(conversation_id=cid, title="by the worker")
        await PostgresEventStore(session).append(stream_id(cid), 1, [NewEvent(payload=event)])
    assert (await client.get(f"{URL}/{cid}", headers=ada.headers)).json()["title"] == "before"  # not yet projected
    resp = await client.patch(f"{URL}/{cid}", json={"system_prompt": "p"}, headers=ada.headers)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["title"], body["system_prompt"], body["version"]) == ("by the worker", "p", 3)
