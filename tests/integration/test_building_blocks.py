"""The HTTP building blocks, proven on /api/v1/prompts: cursor pagination, ETag/If-Match,
Idempotency-Key, validation problems, and audit events written in the command's own transaction."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import func, select

from api.app import create_app
from api.pagination import encode_cursor
from api.prompts.controller import caller_scope
from api.services import Services
from domain.prompts.events import PromptDeleted
from domain.shared.events import NewEvent, RecordedEvent
from infra.db.engine import Database
from infra.db.tables.platform import prompts
from infra.eventstore.postgres import PostgresEventStore
from infra.identity.passwords import PasswordHasher
from infra.settings import Settings
from tests.integration.test_auth import register
from tests.integration.test_http_platform import assert_problem

URL = "/api/v1/prompts"


@pytest.fixture
def app(settings: Settings, services: Services) -> Litestar:
    services.passwords = PasswordHasher(memory_kib=1024, time_cost=1)  # cheap Argon2: the suite stays fast
    return create_app(settings, services=services)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """A client signed in as a fresh user, who owns every prompt it creates."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as c:
        resp = await register(c, "owner@example.com")
        assert resp.status_code == 201, resp.text
        c.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"
        yield c


async def create(client: httpx.AsyncClient, name: str = "p", **extra: Any) -> httpx.Response:
    headers = extra.pop("h", {})
    resp = await client.post(URL, json={"name": name, "body": "Hello {{who}}", **extra}, headers=headers)
    assert resp.status_code == 201, resp.text
    return resp


def scope_of(client: httpx.AsyncClient) -> str:
    """The idempotency key space of the client's credential."""
    return caller_scope({"headers": [(b"authorization", client.headers["authorization"].encode())]})


async def count_prompts(db: Database) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(prompts))).scalar_one())


async def stream(db: Database, prompt_id: str) -> list[RecordedEvent]:
    async with db.write() as s:
        return await PostgresEventStore(s).read_stream(f"prompt-{prompt_id}")


# --- CRUD -------------------------------------------------------------------------------------


async def test_crud_happy_path(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        URL,
        json={"name": "  Greeter ", "body": "Hi {{name}}", "description": "says hi", "tags": ["a", " b", "a"]},
    )
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["object"] == "prompt"
    assert uuid.UUID(created["id"]).version == 7
    assert created["name"] == "Greeter"
    assert created["tags"] == ["a", "b"]
    assert created["version"] == 1
    assert created["created_at"] == created["updated_at"]
    assert created["created_at"].endswith("Z")
    assert resp.headers["etag"] == '"1"'
    assert resp.headers["location"] == f"{URL}/{created['id']}"

    got = await client.get(resp.headers["location"])
    assert got.status_code == 200
    assert got.json() == created
    assert got.headers["etag"] == '"1"'

    patched = await client.patch(
        f"{URL}/{created['id']}", json={"body": "Hello {{name}}", "description": None}, headers={"If-Match": '"1"'}
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["version"] == 2
    assert body["body"] == "Hello {{name}}"
    assert body["description"] is None
    assert body["name"] == "Greeter"  # untouched
    assert datetime.fromisoformat(body["updated_at"]) > datetime.fromisoformat(body["created_at"])
    assert patched.headers["etag"] == '"2"'
    assert (await client.get(f"{URL}/{created['id']}")).json() == body

    deleted = await client.delete(f"{URL}/{created['id']}", headers={"If-Match": '"2"'})
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_problem(await client.get(f"{URL}/{created['id']}"), 404, "prompt_not_found")


async def test_patch_without_changes_keeps_the_version(client: httpx.AsyncClient, db: Database) -> None:
    created = (await create(client, "same")).json()
    resp = await client.patch(f"{URL}/{created['id']}", json={"name": "same "})
    assert resp.status_code == 200
    assert resp.json()["version"] == 1
    assert len(await stream(db, created["id"])) == 1


async def test_unknown_ids_are_404(client: httpx.AsyncClient) -> None:
    missing = f"{URL}/{uuid.uuid4()}"
    assert_problem(await client.get(missing), 404, "prompt_not_found")
    assert_problem(await client.patch(missing, json={"name": "x"}), 404, "prompt_not_found")
    assert_problem(await client.delete(missing), 404, "prompt_not_found")


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_bad_uuid_in_path_is_400(client: httpx.AsyncClient, method: str) -> None:
    kwargs: dict[str, Any] = {"json": {"name": "x"}} if method == "PATCH" else {}
    resp = await client.request(method, f"{URL}/not-a-uuid", **kwargs)
    body = assert_problem(resp, 400, "validation_error")
    assert body["errors"][0]["parameter"] == "prompt_id"


@pytest.mark.parametrize(
    ("payload", "pointer"),
    [
        ({"name": "x", "body": "b", "extra": 1, "tags": "nope"}, "/tags"),
        ({"name": "n" * 201, "body": "b"}, "/name"),
        ({"name": "   ", "body": "b"}, "/name"),
        ({"name": "x", "body": "b" * 100_001}, "/body"),
        ({"name": "x", "body": "a\x00b"}, "/body"),
        ({"name": "x", "body": "b", "tags": ["ok", "t" * 51]}, "/tags/1"),
        ({"name": "x", "body": "b", "tags": ["ok", "  "]}, "/tags/1"),
        ({"name": "x", "body": "b", "tags": [f"t{i}" for i in range(21)]}, "/tags"),
        ({"name": "x", "body": "b", "description": "d" * 2001}, "/description"),
    ],
)
async def test_invalid_create_bodies_are_400_with_pointers(
    client: httpx.AsyncClient, db: Database, payload: dict[str, Any], pointer: str
) -> None:
    resp = await client.post(URL, json=payload)
    body = assert_problem(resp, 400, "validation_error")
    assert [e["pointer"] for e in body["errors"]] == [pointer]
    assert await count_prompts(db) == 0


async def test_missing_field_is_400(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.post(URL, json={"body": "b"}), 400, "validation_error")
    assert body["errors"] == [{"detail": "Object missing required field `name`", "code": "missing", "pointer": "/name"}]


async def test_invalid_patch_bodies_are_400_and_change_nothing(client: httpx.AsyncClient, db: Database) -> None:
    created = (await create(client, "keep")).json()
    for payload, pointer in [({"name": ""}, "/name"), ({"tags": None}, "/tags"), ({"name": " \t"}, "/name")]:
        body = assert_problem(await client.patch(f"{URL}/{created['id']}", json=payload), 400, "validation_error")
        assert body["errors"][0]["pointer"] == pointer
    assert (await client.get(f"{URL}/{created['id']}")).json() == created
    assert len(await stream(db, created["id"])) == 1


async def test_malformed_json_and_wrong_media_type(client: httpx.AsyncClient) -> None:
    bad = await client.post(URL, content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert_problem(
        await client.post(URL, content=b"name=x", headers={"content-type": "text/plain"}), 415, "unsupported_media_type"
    )


# --- ETag / If-Match ------------------------------------------------------------------------


async def test_if_match_stale_is_412_and_fresh_succeeds(client: httpx.AsyncClient, db: Database) -> None:
    created = (await create(client, "v1")).json()
    item = f"{URL}/{created['id']}"
    assert (await client.patch(item, json={"name": "v2"}, headers={"If-Match": '"1"'})).status_code == 200

    stale = await client.patch(item, json={"name": "v3"}, headers={"If-Match": '"1"'})
    assert_problem(stale, 412, "precondition_failed")
    assert stale.headers["etag"] == '"2"'
    weak = await client.patch(item, json={"name": "v3"}, headers={"If-Match": 'W/"2"'})
    assert_problem(weak, 412, "precondition_failed")  # If-Match uses the strong comparison
    assert_problem(await client.delete(item, headers={"If-Match": '"1"'}), 412, "precondition_failed")
    assert (await client.get(item)).json()["name"] == "v2"

    listed = await client.patch(item, json={"name": "v3"}, headers={"If-Match": '"9", "2"'})
    assert listed.status_code == 200
    assert listed.headers["etag"] == '"3"'
    star = await client.patch(item, json={"name": "v4"}, headers={"If-Match": "*"})
    assert star.status_code == 200
    assert (await client.patch(item, json={"name": "v5"})).json()["version"] == 5  # If-Match is optional
    assert [e.version for e in await stream(db, created["id"])] == [1, 2, 3, 4, 5]
    assert (await client.delete(item, headers={"If-Match": '"5"'})).status_code == 204


async def test_if_none_match_gives_304(client: httpx.AsyncClient) -> None:
    created = (await create(client)).json()
    item = f"{URL}/{created['id']}"
    same = await client.get(item, headers={"If-None-Match": '"1"'})
    assert same.status_code == 304
    assert same.content == b""
    assert same.headers["etag"] == '"1"'
    assert (await client.get(item, headers={"If-None-Match": 'W/"1"'})).status_code == 304
    assert (await client.get(item, headers={"If-None-Match": '"0"'})).status_code == 200


# --- pagination -------------------------------------------------------------------------------


async def test_cursor_pagination_over_several_pages(client: httpx.AsyncClient) -> None:
    tagged: list[str] = []
    for i in range(7):
        resp = await create(client, f"p{i}", tags=["x"] if i % 3 else ["y"])
        if i % 3:
            tagged.append(resp.json()["id"])
    expected = sorted(tagged, key=uuid.UUID, reverse=True)  # UUIDv7: newest first
    assert len(expected) == 4

    seen: list[str] = []
    url: str | None = f"{URL}?tag=x&limit=2"
    pages = 0
    while url is not None:
        resp = await client.get(url)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert page["object"] == "list"
        seen += [p["id"] for p in page["data"]]
        assert all(p["tags"] == ["x"] for p in page["data"])
        pages += 1
        if page["has_more"]:
            assert len(page["data"]) == 2
            link = resp.headers["link"]
            assert link.endswith('>; rel="next"')
            target = urlsplit(link[1 : link.index(">")])
            assert target.path == URL
            query = parse_qs(target.query)
            assert query == {"tag": ["x"], "limit": ["2"], "cursor": [page["next_cursor"]]}
            url = f"{target.path}?{target.query}"
        else:
            assert page["next_cursor"] is None
            assert "link" not in resp.headers
            url = None
    assert pages == 2
    assert seen == expected

    everything = (await client.get(f"{URL}?limit=3")).json()
    assert everything["has_more"] is True
    assert len(everything["data"]) == 3
    last = await client.get(f"{URL}?limit=100&cursor={everything['next_cursor']}")
    assert len(last.json()["data"]) == 4
    assert last.json()["has_more"] is False


async def test_default_limit_is_20(client: httpx.AsyncClient) -> None:
    for i in range(21):
        await create(client, f"p{i}")
    page = (await client.get(URL)).json()
    assert len(page["data"]) == 20
    assert page["has_more"] is True


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc"])
async def test_invalid_limit_is_400(client: httpx.AsyncClient, limit: str) -> None:
    body = assert_problem(await client.get(f"{URL}?limit={limit}"), 400, "validation_error")
    assert body["errors"][0]["parameter"] == "limit"


@pytest.mark.parametrize(
    "cursor",
    ["!!!", "abc", encode_cursor({"id": "x"}), encode_cursor(["not-a-uuid"]), "A" * 2000, encode_cursor([1, 2])],
)
async def test_invalid_cursor_is_400(client: httpx.AsyncClient, cursor: str) -> None:
    body = assert_problem(await client.get(URL, params={"cursor": cursor}), 400, "invalid_cursor")
    assert body["errors"][0]["parameter"] == "cursor"


# --- audit events in the same transaction -----------------------------------------------------


async def test_every_change_appends_an_audit_event_with_the_request_id(client: httpx.AsyncClient, db: Database) -> None:
    created = (await create(client, "audited", h={"X-Request-ID": "rid-create"})).json()
    item = f"{URL}/{created['id']}"
    await client.patch(item, json={"tags": ["z"]}, headers={"X-Request-ID": "rid-patch"})
    await client.delete(item, headers={"X-Request-ID": "rid-delete"})
    events = await stream(db, created["id"])
    assert [e.type_id for e in events] == [
        "prompts.prompt_created.v1",
        "prompts.prompt_updated.v1",
        "prompts.prompt_deleted.v1",
    ]
    assert [e.version for e in events] == [1, 2, 3]
    assert [e.metadata.request_id for e in events] == ["rid-create", "rid-patch", "rid-delete"]
    assert len({e.metadata.actor for e in events}) == 1
    assert all((e.metadata.actor or "").startswith("user:") for e in events)
    created_event, updated_event, deleted_event = (e.payload for e in events)
    assert str(created_event.prompt_id) == created["id"]  # type: ignore[attr-defined]
    assert created_event.name == "audited"  # type: ignore[attr-defined]
    assert updated_event.changed == ["tags"]  # type: ignore[attr-defined]
    assert updated_event.tags == ["z"]  # type: ignore[attr-defined]
    assert deleted_event.version == 2  # type: ignore[attr-defined]


async def test_failed_create_leaves_neither_row_nor_event(
    client: httpx.AsyncClient, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = uuid.uuid4()
    async with db.write() as s:
        await PostgresEventStore(s).append(
            f"prompt-{taken}", 0, [NewEvent(payload=PromptDeleted(prompt_id=taken, version=0))]
        )
    monkeypatch.setattr("api.prompts.controller.new_id", lambda: taken)
    resp = await client.post(URL, json={"name": "doomed", "body": "b"})
    assert_problem(resp, 409, "concurrency_conflict")
    assert await count_prompts(db) == 0
    assert [e.type_id for e in await stream(db, str(taken))] == ["prompts.prompt_deleted.v1"]


async def test_failed_update_leaves_neither_change_nor_event(client: httpx.AsyncClient, db: Database) -> None:
    created = (await create(client, "before")).json()
    async with db.write() as s:  # someone wrote to the stream behind the row's back
        await PostgresEventStore(s).append(
            f"prompt-{created['id']}",
            1,
            [NewEvent(payload=PromptDeleted(prompt_id=uuid.UUID(created["id"]), version=1))],
        )
    resp = await client.patch(f"{URL}/{created['id']}", json={"name": "after"})
    assert_problem(resp, 409, "concurrency_conflict")
    assert (await client.get(f"{URL}/{created['id']}")).json() == created
    assert len(await stream(db, created["id"])) == 2
