"""Full-text search over conversations (``GET /api/v1/conversations?q=``): titles and message text,
only what the caller may see; the vector grows with each message (no re-parse of the whole
conversation per turn) up to its character budget, and a title change or truncation rebuilds it."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import text

from domain.chat import branching
from domain.shared.events import EventMetadata
from infra.chat import commands, projections
from infra.db.engine import Database
from tests.integration import test_conversations as conversation_tests
from tests.integration.test_access import User, app, user  # noqa: F401  (app: cheap password hashing)
from tests.integration.test_conversations import URL, create, exchange

ada = conversation_tests.ada
bob = conversation_tests.bob


async def test_full_text_search_over_titles_and_message_text(
    client: httpx.AsyncClient, ada: User, bob: User, db: Database
) -> None:
    trip = await create(client, ada, title="Holiday planning")
    code = await create(client, ada, title="Refactor")
    await exchange(db, code["id"], "How do I rename a module?", "Use the refactoring tool")
    shared = await create(client, bob, title="Bob's holiday")
    grant = await client.post(
        f"{URL}/{shared['id']}/acl",
        json={"grantee_type": "user", "grantee_id": ada.id, "role": "viewer"},
        headers=bob.headers,
    )
    assert grant.status_code == 201, grant.text
    await create(client, bob, title="holiday secret")  # not shared with ada

    async def search(q: str) -> set[str]:
        resp = await client.get(URL, params={"q": q}, headers=ada.headers)
        assert resp.status_code == 200, resp.text
        return {c["id"] for c in resp.json()["data"]}

    assert await search("holiday") == {trip["id"], shared["id"]}
    assert await search("module") == {code["id"]}
    assert await search("rename module") == {code["id"]}
    assert await search("rename holiday") == set()
    assert await search("nothing-like-this") == set()
    assert await search("   ") == {trip["id"], code["id"], shared["id"]}
    await client.patch(f"{URL}/{trip['id']}", json={"title": "Budget"}, headers=ada.headers)
    assert await search("holiday") == {shared["id"]}
    assert await search("budget") == {trip["id"]}


async def test_the_search_vector_grows_with_each_message_up_to_its_budget(
    client: httpx.AsyncClient, ada: User, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(projections, "SEARCH_CHARS", 40)
    conv = await create(client, ada, title="Cap")  # "Cap " feeds 4 characters

    async def found(q: str) -> bool:
        resp = await client.get(URL, params={"q": q}, headers=ada.headers)
        assert resp.status_code == 200, resp.text
        return conv["id"] in {c["id"] for c in resp.json()["data"]}

    async def fed() -> int:
        async with db.read() as session:
            query = text("SELECT search_chars FROM conversations WHERE id = :id")
            return int((await session.execute(query, {"id": uuid.UUID(conv["id"])})).scalar_one())

    await exchange(db, conv["id"], "alpha words here", "bravo words there")  # 16 + 17 characters
    assert (await found("alpha"), await found("bravo"), await fed()) == (True, True, 37)
    await exchange(db, conv["id"], "charlie", "delta")  # 3 characters left: "cha"
    assert (await found("charlie"), await found("delta"), await fed()) == (False, False, 40)
    # A truncation rebuilds it from the title and the current branch, within the same budget.
    cid = uuid.UUID(conv["id"])
    async with db.write() as session:
        loaded = await commands.load_conversation(session, cid)
        first_answer = loaded.state.messages[1].message_id
        events = branching.truncate(loaded.state, first_answer)
        await commands.append(session, cid, loaded, events, EventMetadata(actor="system"))
    assert (await found("alpha"), await found("bravo"), await found("charlie"), await fed()) == (True, True, False, 38)
