"""A conversation's history over HTTP: the messages of its current branch in order and paged, its
events paged; and the read model behind them: the projection runner changes nothing a command
already projected, a rebuild reproduces the rows, a command projects events another writer left."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import text

from domain.chat import branching
from domain.shared.events import EventMetadata
from domain.shared.ids import new_id
from infra.chat import commands
from infra.db.engine import Database
from infra.eventstore.postgres import PostgresTransactionFactory
from infra.settings import Settings
from tests.integration import test_conversations as conversation_tests
from tests.integration.test_access import User, app, user  # noqa: F401  (app: cheap password hashing)
from tests.integration.test_conversations import URL, create, exchange

ada = conversation_tests.ada


async def read_model(db: Database) -> list[Any]:
    async with db.read() as s:
        conversations = (await s.execute(text("SELECT *, search::text AS s FROM conversations ORDER BY id"))).all()
        messages = (await s.execute(text("SELECT * FROM messages ORDER BY id"))).all()
    return [tuple(r) for r in conversations] + [tuple(r) for r in messages]


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
