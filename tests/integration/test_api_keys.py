"""Personal API keys over HTTP: create (shown once), use as a Bearer credential, list, revoke."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import text

from api.app import create_app
from api.services import Services
from infra.db.engine import Database
from infra.identity import api_keys
from infra.identity.passwords import PasswordHasher
from infra.settings import Settings
from tests.integration.test_auth import bearer, events_of, register
from tests.integration.test_http_platform import assert_problem


@pytest.fixture
def app(settings: Settings, services: Services) -> Litestar:
    services.passwords = PasswordHasher(memory_kib=1024, time_cost=1)
    return create_app(settings, services=services)


async def signed_in(client: httpx.AsyncClient, email: str) -> tuple[str, str]:
    """(user id, access token) of a new account."""
    body = (await register(client, email)).json()
    return body["user"]["id"], body["access_token"]


async def create_key(client: httpx.AsyncClient, token: str, **body: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/api-keys", json={"name": "ci", **body}, headers=bearer(token))
    assert resp.status_code == 201, resp.text
    data: dict[str, Any] = resp.json()
    return data


async def all_events_text(db: Database) -> str:
    async with db.read() as s:
        raw = (await s.execute(text("SELECT string_agg(data::text || metadata::text, '') FROM events"))).scalar_one()
    return str(raw or "")


async def test_a_key_acts_as_its_owner_and_is_shown_once(client: httpx.AsyncClient, db: Database) -> None:
    user_id, token = await signed_in(client, "ada@example.com")
    created = await create_key(
        client, token, name="laptop", scopes=["me:read", "me:read", "api_keys:read", "prompts:read"]
    )
    key = created["key"]
    assert key.startswith(f"lsk_{created['prefix']}_")
    assert created["name"] == "laptop"
    assert created["scopes"] == ["me:read", "api_keys:read", "prompts:read"]
    assert created["expires_at"] is None
    assert created["object"] == "api_key"

    me = await client.get("/api/v1/me", headers=bearer(key))
    assert me.status_code == 200, me.text
    assert me.json()["user"]["id"] == user_id
    assert me.json()["session_id"] is None

    listed = await client.get("/api/v1/api-keys", headers=bearer(key))
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["object"] == "list"
    assert [k["id"] for k in body["data"]] == [created["id"]]
    assert "key" not in body["data"][0]
    assert key not in listed.text
    assert key.split("_", 2)[2] not in listed.text
    assert body["data"][0]["prefix"] == created["prefix"]
    assert body["data"][0]["last_used_at"] is not None  # the uses above were recorded


async def test_last_used_at_moves_at_most_once_a_minute(
    client: httpx.AsyncClient, db: Database, services: Services
) -> None:
    _, token = await signed_in(client, "ada@example.com")
    created = await create_key(client, token)
    key = created["key"]
    assert (await client.get("/api/v1/me", headers=bearer(key))).status_code == 200

    async def last_used() -> Any:
        async with db.read() as s:
            return (await s.execute(text("SELECT last_used_at FROM api_keys"))).scalar_one()

    first = await last_used()
    assert first is not None
    async with db.read() as rs:
        use = await api_keys.verify(rs, key)
    assert use is not None
    assert use.touch is False  # used just now: no write for this request
    assert (await client.get("/api/v1/me", headers=bearer(key))).status_code == 200
    assert await last_used() == first
    async with db.write() as s:
        await s.execute(text("UPDATE api_keys SET last_used_at = now() - interval '2 minutes'"))
    stale = await last_used()
    async with db.read() as rs:
        use = await api_keys.verify(rs, key)
    assert use is not None
    assert use.touch is True
    services.credentials().clear()  # as after LITESKILL_AUTH_CACHE_TTL_S: the next request resolves the key again
    assert (await client.get("/api/v1/me", headers=bearer(key))).status_code == 200
    assert await last_used() > stale


async def test_another_user_can_neither_see_nor_revoke_a_key(client: httpx.AsyncClient) -> None:
    _, ada = await signed_in(client, "ada@example.com")
    _, bob = await signed_in(client, "bob@example.com")
    created = await create_key(client, ada)

    bobs = await client.get("/api/v1/api-keys", headers=bearer(bob))
    assert bobs.status_code == 200, bobs.text
    assert bobs.json()["data"] == []
    assert_problem(
        await client.delete(f"/api/v1/api-keys/{created['id']}", headers=bearer(bob)), 404, "api_key_not_found"
    )
    missing = await client.delete("/api/v1/api-keys/0190f5c4-0000-7000-8000-000000000000", headers=bearer(bob))
    assert_problem(missing, 404, "api_key_not_found")
    assert (await client.get("/api/v1/me", headers=bearer(created["key"]))).status_code == 200


async def test_a_revoked_key_stops_working(client: httpx.AsyncClient, db: Database) -> None:
    user_id, token = await signed_in(client, "ada@example.com")
    created = await create_key(client, token)
    assert (await client.get("/api/v1/me", headers=bearer(created["key"]))).status_code == 200
    resp = await client.delete(f"/api/v1/api-keys/{created['id']}", headers=bearer(token))
    assert resp.status_code == 204, resp.text
    gone = await client.get("/api/v1/me", headers=bearer(created["key"]))
    assert_problem(gone, 401, "unauthenticated")
    assert gone.headers["www-authenticate"].startswith("Bearer")
    assert (await client.get("/api/v1/api-keys", headers=bearer(token))).json()["data"] == []
    again = await client.delete(f"/api/v1/api-keys/{created['id']}", headers=bearer(token))
    assert_problem(again, 404, "api_key_not_found")
    revoked = await events_of(db, "identity.api_key_revoked.v1")
    assert [(e["stream_id"], e["data"]["api_key_id"]) for e in revoked] == [(f"user-{user_id}", created["id"])]


async def test_an_expired_key_is_refused(client: httpx.AsyncClient, db: Database, services: Services) -> None:
    _, token = await signed_in(client, "ada@example.com")
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    created = await create_key(client, token, expires_at=soon)
    assert created["expires_at"] is not None
    assert (await client.get("/api/v1/me", headers=bearer(created["key"]))).status_code == 200
    async with db.write() as s:
        await s.execute(text("UPDATE api_keys SET expires_at = now() - interval '1 second'"))
    services.credentials().clear()  # an out-of-band change: forget the resolved key as its TTL would
    assert_problem(await client.get("/api/v1/me", headers=bearer(created["key"])), 401, "unauthenticated")


async def test_creation_rejects_a_past_expiry_and_bad_names(client: httpx.AsyncClient, db: Database) -> None:
    _, token = await signed_in(client, "ada@example.com")
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    for body, pointer in [
        ({"name": "x", "expires_at": past}, "/expires_at"),
        ({"name": ""}, "/name"),
        ({"name": "   "}, "/name"),
        ({"name": "x" * 101}, "/name"),
        ({"name": "x", "scopes": [""]}, "/scopes/0"),
    ]:
        resp = await client.post("/api/v1/api-keys", json=body, headers=bearer(token))
        problem = assert_problem(resp, 400, "validation_error")
        assert [e["pointer"] for e in problem["errors"]] == [pointer], body
    async with db.read() as s:
        assert (await s.execute(text("SELECT count(*) FROM api_keys"))).scalar_one() == 0
    assert_problem(await client.post("/api/v1/api-keys", json={"name": "x"}), 401, "unauthenticated")


async def test_a_key_cannot_create_keys(client: httpx.AsyncClient) -> None:
    _, token = await signed_in(client, "ada@example.com")
    key = (await create_key(client, token))["key"]
    resp = await client.post("/api/v1/api-keys", json={"name": "child"}, headers=bearer(key))
    assert_problem(resp, 403, "session_required")


async def test_a_wrong_secret_with_a_valid_prefix_is_refused(client: httpx.AsyncClient) -> None:
    _, token = await signed_in(client, "ada@example.com")
    key = (await create_key(client, token))["key"]
    last = key[-1]
    tampered = key[:-1] + ("A" if last != "A" else "B")
    assert_problem(await client.get("/api/v1/me", headers=bearer(tampered)), 401, "unauthenticated")
    assert (await client.get("/api/v1/me", headers=bearer(key))).status_code == 200


@pytest.mark.parametrize(
    "token",
    [
        "lsk_",
        "lsk_abc",
        "lsk_abcdefgh",
        "lsk_abcdefgh_",
        "lsk_abcdefgh_short",
        "lsk_abc!efgh_" + "a" * 43,
        "lsk_abcdefgh_" + "a" * 44,
        "lsk_abcdefgh_" + "a" * 42 + "!",
    ],
)
async def test_malformed_keys_are_refused(client: httpx.AsyncClient, db: Database, token: str) -> None:
    resp = await client.get("/api/v1/me", headers=bearer(token))
    assert_problem(resp, 401, "unauthenticated")
    assert resp.headers["www-authenticate"].startswith("Bearer")


async def test_a_disabled_users_keys_are_refused(client: httpx.AsyncClient, db: Database, services: Services) -> None:
    user_id, token = await signed_in(client, "ada@example.com")
    key = (await create_key(client, token))["key"]
    assert (await client.get("/api/v1/me", headers=bearer(key))).status_code == 200
    async with db.write() as s:
        await s.execute(text("UPDATE users SET disabled_at = now() WHERE id = :id"), {"id": user_id})
    services.credentials().clear()  # out of band (the admin route evicts at once: tests/integration/test_admin.py)
    assert_problem(await client.get("/api/v1/me", headers=bearer(key)), 401, "unauthenticated")


async def test_keys_are_audited_without_their_secret(client: httpx.AsyncClient, db: Database) -> None:
    user_id, token = await signed_in(client, "ada@example.com")
    created = await create_key(client, token, name="deploy", scopes=["prompts:read"])
    await client.delete(f"/api/v1/api-keys/{created['id']}", headers=bearer(token))
    made = await events_of(db, "identity.api_key_created.v1")
    assert len(made) == 1
    event = made[0]
    assert event["stream_id"] == f"user-{user_id}"
    assert event["data"]["api_key_id"] == created["id"]
    assert event["data"]["name"] == "deploy"
    assert event["data"]["prefix"] == created["prefix"]
    assert event["metadata"]["actor"] == f"user:{user_id}"
    assert len(await events_of(db, "identity.api_key_revoked.v1")) == 1
    raw = await all_events_text(db)
    secret = created["key"].split("_", 2)[2]
    assert created["key"] not in raw
    assert secret not in raw
    async with db.read() as s:
        stored = (await s.execute(text("SELECT encode(secret_hash, 'hex') FROM api_keys"))).scalar_one()
    assert stored not in raw


async def test_key_lists_are_cursor_paged(client: httpx.AsyncClient) -> None:
    _, token = await signed_in(client, "ada@example.com")
    ids = [(await create_key(client, token, name=f"k{i}"))["id"] for i in range(3)]
    first = await client.get("/api/v1/api-keys", params={"limit": 2}, headers=bearer(token))
    assert first.status_code == 200, first.text
    page = first.json()
    assert [k["id"] for k in page["data"]] == ids[::-1][:2]
    assert page["has_more"] is True
    assert 'rel="next"' in first.headers["link"]
    second = await client.get(
        "/api/v1/api-keys", params={"limit": 2, "cursor": page["next_cursor"]}, headers=bearer(token)
    )
    assert [k["id"] for k in second.json()["data"]] == [ids[0]]
    assert second.json()["has_more"] is False
    assert second.json()["next_cursor"] is None


async def test_logout_with_an_api_key_is_refused_not_a_crash(client: httpx.AsyncClient) -> None:
    owner = (await register(client, "keyholder@example.com")).json()
    created = await client.post("/api/v1/api-keys", json={"name": "ci"}, headers=bearer(owner["access_token"]))
    assert created.status_code == 201, created.text
    resp = await client.post("/api/v1/auth/logout", headers=bearer(created.json()["key"]))
    assert_problem(resp, 403, "session_required")
    # the key still works: nothing was revoked
    assert (await client.get("/api/v1/me", headers=bearer(created.json()["key"]))).status_code == 200


async def test_a_key_resolves_to_its_owner_naming_the_key(client: httpx.AsyncClient, db: Database) -> None:
    user_id, token = await signed_in(client, "ada@example.com")
    created = await create_key(client, token)
    async with db.read() as rs:
        use = await api_keys.verify(rs, created["key"])
    assert use is not None
    assert str(use.principal.user_id) == user_id
    assert str(use.principal.api_key_id) == created["id"]
    assert use.principal.session_id is None
