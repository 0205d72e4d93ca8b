"""POST /api/v1/me/password: the old password stops working, the new one works, the user's other
sessions end (access and refresh tokens), the current one keeps working."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
from litestar import Litestar
from sqlalchemy import text

from api.app import create_app
from api.services import Services
from infra.db.engine import Database
from infra.identity.passwords import PasswordHasher
from infra.settings import Settings
from tests.integration.test_auth import PASSWORD, bearer, events_of, register
from tests.integration.test_http_platform import assert_problem

URL = "/api/v1/me/password"
NEW = "an entirely new passphrase"


@pytest.fixture
def app(settings: Settings, services: Services) -> Litestar:
    services.passwords = PasswordHasher(memory_kib=1024, time_cost=1)
    return create_app(settings, services=services)


async def login(client: httpx.AsyncClient, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": password})


async def change(client: httpx.AsyncClient, headers: dict[str, str], current: str, new: str) -> httpx.Response:
    return await client.post(URL, json={"current_password": current, "new_password": new}, headers=headers)


@pytest.fixture
async def ada(client: httpx.AsyncClient, db: Database) -> dict[str, Any]:
    resp = await register(client, "ada@example.com")
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


async def test_changing_the_password_signs_out_the_other_sessions_only(
    client: httpx.AsyncClient, db: Database, ada: dict[str, Any]
) -> None:
    other = (await login(client)).json()
    current = bearer(ada["access_token"])
    resp = await change(client, current, PASSWORD, NEW)
    assert resp.status_code == 204, resp.text
    assert resp.content == b""

    assert_problem(await login(client), 401, "unauthenticated")
    assert (await login(client, NEW)).status_code == 200
    # The session that made the change keeps working, its refresh token too.
    assert (await client.get("/api/v1/me", headers=current)).status_code == 200
    refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": ada["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    # The other session's access and refresh tokens stop working.
    assert_problem(await client.get("/api/v1/me", headers=bearer(other["access_token"])), 401, "unauthenticated")
    stale = await client.post("/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]})
    assert_problem(stale, 401, "unauthenticated")

    async with db.read() as s:
        changed_at = (await s.execute(text("SELECT password_changed_at FROM users"))).scalar_one()
    assert changed_at is not None
    (changed,) = await events_of(db, "identity.password_changed.v1")
    assert changed["stream_id"] == f"user-{ada['user']['id']}"
    assert changed["data"]["revoked_sessions"] == 1
    revoked = [
        e for e in await events_of(db, "identity.session_revoked.v1") if e["data"]["reason"] == "password_changed"
    ]
    assert [e["data"]["session_id"] for e in revoked] == [other_session_id(other)]
    raw = str(await events_of(db, "identity.password_changed.v1"))
    assert NEW not in raw
    assert PASSWORD not in raw


def other_session_id(tokens: dict[str, Any]) -> str:
    return str(jwt.decode(tokens["access_token"], options={"verify_signature": False})["sid"])


async def test_a_wrong_current_password_is_400_and_changes_nothing(
    client: httpx.AsyncClient, db: Database, ada: dict[str, Any]
) -> None:
    other = (await login(client)).json()
    resp = await change(client, bearer(ada["access_token"]), "not my password at all", NEW)
    problem = assert_problem(resp, 400, "wrong_password")
    assert [(e["pointer"], e["code"]) for e in problem["errors"]] == [("/current_password", "wrong_password")]
    assert (await login(client)).status_code == 200
    assert (await client.get("/api/v1/me", headers=bearer(other["access_token"]))).status_code == 200
    assert await events_of(db, "identity.password_changed.v1") == []


async def test_the_new_password_must_follow_the_policy(client: httpx.AsyncClient, ada: dict[str, Any]) -> None:
    assert_problem(await change(client, bearer(ada["access_token"]), PASSWORD, "short"), 422, "password_policy")
    assert (await login(client)).status_code == 200


async def test_bad_bodies_are_400_problems(client: httpx.AsyncClient, ada: dict[str, Any]) -> None:
    h = bearer(ada["access_token"])
    for body, pointer in [
        ({"new_password": NEW}, "/current_password"),
        ({"current_password": PASSWORD}, "/new_password"),
        ({"current_password": PASSWORD, "new_password": ""}, "/new_password"),
        ({"current_password": "x" * 1025, "new_password": NEW}, "/current_password"),
        ({"current_password": PASSWORD, "new_password": 5}, "/new_password"),
    ]:
        problem = assert_problem(await client.post(URL, json=body, headers=h), 400, "validation_error")
        assert [e["pointer"] for e in problem["errors"]] == [pointer], body
    assert_problem(
        await client.post(URL, json={"current_password": PASSWORD, "new_password": NEW}), 401, "unauthenticated"
    )


async def test_an_api_key_cannot_change_the_password(client: httpx.AsyncClient, ada: dict[str, Any]) -> None:
    created = await client.post("/api/v1/api-keys", json={"name": "k"}, headers=bearer(ada["access_token"]))
    key = bearer(created.json()["key"])
    assert_problem(await change(client, key, PASSWORD, NEW), 403, "session_required")
    assert (await login(client)).status_code == 200


async def test_an_account_without_a_password_gets_409(
    client: httpx.AsyncClient, db: Database, ada: dict[str, Any]
) -> None:
    async with db.write() as s:  # an account that signs in through an identity provider only
        await s.execute(text("UPDATE users SET password_hash = NULL"))
    assert_problem(await change(client, bearer(ada["access_token"]), PASSWORD, NEW), 409, "no_password")


async def test_attempts_are_rate_limited_per_account(
    client: httpx.AsyncClient, settings: Settings, ada: dict[str, Any]
) -> None:
    h = bearer(ada["access_token"])
    if time.time() % 60 > 55:  # fixed one-minute windows: do not straddle two
        await asyncio.sleep(61 - time.time() % 60)
    for i in range(settings.auth_rate_per_account):
        assert_problem(await change(client, h, f"wrong guess {i:04d}", NEW), 400, "wrong_password")
    limited = await change(client, h, PASSWORD, NEW)
    assert_problem(limited, 429, "rate_limited")
    assert "retry-after" in limited.headers
    assert (await login(client)).status_code == 200  # the right password after the limit did not go through


async def test_unknown_session_id_in_token_is_not_a_crash(client: httpx.AsyncClient, ada: dict[str, Any]) -> None:
    resp = await change(client, bearer(str(uuid.uuid4())), PASSWORD, NEW)
    assert_problem(resp, 401, "unauthenticated")
