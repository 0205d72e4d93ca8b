"""Accounts and sessions over HTTP: registration, login, refresh rotation, logout, /me."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import text

from api.app import create_app
from api.services import Services
from infra.db.engine import Database
from infra.identity.passwords import PasswordHasher
from infra.settings import Settings
from tests.integration.test_http_platform import assert_problem

PASSWORD = "correct horse battery staple"


@pytest.fixture
def app(settings: Settings, services: Services) -> Litestar:
    # Cheaper Argon2 parameters keep the suite fast; the production defaults are unit-tested.
    services.passwords = PasswordHasher(memory_kib=1024, time_cost=1)
    return create_app(settings, services=services)


async def register(client: httpx.AsyncClient, email: str, password: str = PASSWORD, **extra: Any) -> httpx.Response:
    return await client.post("/api/v1/auth/register", json={"email": email, "password": password, **extra})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def events_of(db: Database, type_id: str) -> list[dict[str, Any]]:
    async with db.read() as s:
        rows = await s.execute(
            text("SELECT stream_id, data, metadata FROM events WHERE type_id = :t ORDER BY position"), {"t": type_id}
        )
        return [{"stream_id": r[0], "data": r[1], "metadata": r[2]} for r in rows]


async def test_the_first_account_is_admin_and_the_next_are_users(client: httpx.AsyncClient, db: Database) -> None:
    first = await register(client, "Ada@Example.com", name="Ada")
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["user"]["role"] == "admin"
    assert body["user"]["email"] == "ada@example.com"
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["refresh_token"].startswith("lsr_")
    second = (await register(client, "bob@example.com")).json()
    assert second["user"]["role"] == "user"
    assert second["user"]["tenant_id"] == body["user"]["tenant_id"]
    registered = await events_of(db, "identity.user_registered.v1")
    assert [e["data"]["role"] for e in registered] == ["admin", "user"]
    assert registered[0]["metadata"]["actor"] == f"user:{body['user']['id']}"


async def test_racing_first_registrations_make_exactly_one_admin(client: httpx.AsyncClient, db: Database) -> None:
    results = await asyncio.gather(*(register(client, f"racer{i}@example.com") for i in range(4)))
    assert [r.status_code for r in results] == [201] * 4
    assert sorted(r.json()["user"]["role"] for r in results) == ["admin", "user", "user", "user"]


async def test_registration_rejects_taken_emails_and_weak_passwords(client: httpx.AsyncClient, db: Database) -> None:
    await register(client, "ada@example.com")
    assert_problem(await register(client, "ADA@example.com"), 409, "email_taken")
    weak = await register(client, "carol@example.com", password="short")
    assert_problem(weak, 422, "password_policy")
    assert_problem(await register(client, "not-an-email"), 422, "invalid_email")
    bad = await client.post("/api/v1/auth/register", json={"email": "x@example.com"})
    assert_problem(bad, 400, "validation_error")
    async with db.read() as s:
        assert (await s.execute(text("SELECT count(*) FROM users"))).scalar_one() == 1


async def test_login_and_me(client: httpx.AsyncClient) -> None:
    registered = (await register(client, "ada@example.com", name="Ada")).json()
    login = await client.post("/api/v1/auth/login", json={"email": "ADA@example.com", "password": PASSWORD})
    assert login.status_code == 200, login.text
    me = await client.get("/api/v1/me", headers=bearer(login.json()["access_token"]))
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["user"]["id"] == registered["user"]["id"]
    assert body["user"]["name"] == "Ada"
    assert body["roles"] == ["admin"]
    assert (
        body["session_id"]
        != (await client.get("/api/v1/me", headers=bearer(registered["access_token"]))).json()["session_id"]
    )  # registration and login are separate sessions


async def test_failed_logins_look_the_same_and_are_audited(client: httpx.AsyncClient, db: Database) -> None:
    await register(client, "ada@example.com")
    wrong = await client.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": "wrong password!"})
    unknown = await client.post("/api/v1/auth/login", json={"email": "nobody@example.com", "password": PASSWORD})
    a, b = assert_problem(wrong, 401, "unauthenticated"), assert_problem(unknown, 401, "unauthenticated")
    assert a["detail"] == b["detail"]
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    failed = await events_of(db, "identity.login_failed.v1")
    assert [e["data"]["reason"] for e in failed] == ["wrong_password", "unknown_account"]
    assert failed[1]["stream_id"].startswith("login_attempt-")
    async with db.read() as s:
        raw = (await s.execute(text("SELECT string_agg(data::text || metadata::text, '') FROM events"))).scalar_one()
    assert PASSWORD not in raw
    assert "wrong password!" not in raw


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}, {"Authorization": "Bearer not.a.token"}],
)
async def test_me_needs_a_valid_bearer_token(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    resp = await client.get("/api/v1/me", headers=headers)
    assert_problem(resp, 401, "unauthenticated")
    assert resp.headers["www-authenticate"].startswith("Bearer")


async def test_refresh_tokens_rotate_and_a_reused_one_ends_the_session(client: httpx.AsyncClient, db: Database) -> None:
    first = (await register(client, "ada@example.com")).json()
    rotated = await client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await client.get("/api/v1/me", headers=bearer(second["access_token"]))).status_code == 200

    # The first token was used: presenting it again means it leaked. The whole session ends.
    reuse = await client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert_problem(reuse, 401, "unauthenticated")
    assert_problem(
        await client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}),
        401,
        "unauthenticated",
    )
    assert_problem(await client.get("/api/v1/me", headers=bearer(second["access_token"])), 401, "unauthenticated")
    revoked = await events_of(db, "identity.session_revoked.v1")
    assert [e["data"]["reason"] for e in revoked] == ["refresh_token_reused"]
    assert_problem(
        await client.post("/api/v1/auth/refresh", json={"refresh_token": "lsr_nope"}), 401, "unauthenticated"
    )


async def test_logout_ends_only_its_own_session(client: httpx.AsyncClient) -> None:
    one = (await register(client, "ada@example.com")).json()
    two = (await client.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD})).json()
    assert (await client.post("/api/v1/auth/logout", headers=bearer(one["access_token"]))).status_code == 204
    assert_problem(await client.get("/api/v1/me", headers=bearer(one["access_token"])), 401, "unauthenticated")
    assert_problem(
        await client.post("/api/v1/auth/refresh", json={"refresh_token": one["refresh_token"]}), 401, "unauthenticated"
    )
    assert (await client.get("/api/v1/me", headers=bearer(two["access_token"]))).status_code == 200
    assert_problem(await client.post("/api/v1/auth/logout"), 401, "unauthenticated")


async def test_a_disabled_user_is_signed_out_everywhere(client: httpx.AsyncClient, db: Database) -> None:
    ada = (await register(client, "ada@example.com")).json()
    async with db.write() as s:
        await s.execute(text("UPDATE users SET disabled_at = now()"))
    assert_problem(await client.get("/api/v1/me", headers=bearer(ada["access_token"])), 401, "unauthenticated")
    login = await client.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert_problem(login, 401, "unauthenticated")
    assert_problem(
        await client.post("/api/v1/auth/refresh", json={"refresh_token": ada["refresh_token"]}), 401, "unauthenticated"
    )


def app_with(settings: Settings, services: Services, **changes: Any) -> Litestar:
    import msgspec

    custom = msgspec.structs.replace(settings, **changes)
    services.settings = custom
    services.passwords = PasswordHasher(memory_kib=1024, time_cost=1)
    return create_app(custom, services=services)


async def client_for(app: Litestar) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver.local")


async def test_logins_per_account_are_rate_limited(settings: Settings, services: Services) -> None:
    async with await client_for(app_with(settings, services, auth_rate_per_account=3)) as client:
        await register(client, "ada@example.com")
        attempts = [
            await client.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": "wrong password!"})
            for _ in range(4)
        ]
        assert [r.status_code for r in attempts] == [401, 401, 401, 429]
        limited = assert_problem(attempts[-1], 429, "rate_limited")
        assert limited["detail"]
        assert 0 < int(attempts[-1].headers["retry-after"]) <= 60
        assert attempts[-1].headers["ratelimit-policy"] == '"login-account";q=3;w=60'
        assert attempts[-1].headers["ratelimit"].startswith('"login-account";r=0;t=')
        # Even the right password is refused while limited: no oracle for the attacker.
        right = await client.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
        assert right.status_code == 429
        other = await client.post("/api/v1/auth/login", json={"email": "bob@example.com", "password": PASSWORD})
        assert other.status_code == 401  # another account is not limited


async def test_auth_requests_per_ip_are_rate_limited(settings: Settings, services: Services) -> None:
    async with await client_for(app_with(settings, services, auth_rate_per_ip=2)) as client:
        codes = [(await register(client, f"u{i}@example.com")).status_code for i in range(3)]
        assert codes == [201, 201, 429]
        refresh = await client.post("/api/v1/auth/refresh", json={"refresh_token": "lsr_x"})
        assert_problem(refresh, 429, "rate_limited")


async def test_closed_registration(settings: Settings, services: Services, db: Database) -> None:
    async with await client_for(app_with(settings, services, registration_open=False)) as client:
        assert_problem(await register(client, "ada@example.com"), 403, "registration_closed")
    async with db.read() as s:
        assert (await s.execute(text("SELECT count(*) FROM users"))).scalar_one() == 0


async def test_users_list_and_revoke_their_own_sessions(client: httpx.AsyncClient, db: Database) -> None:
    first = (await register(client, "ada@example.com")).json()
    second = (await client.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD})).json()
    h = bearer(second["access_token"])
    listed = await client.get("/api/v1/me/sessions", headers=h)
    assert listed.status_code == 200, listed.text
    sessions = listed.json()["data"]
    assert len(sessions) == 2
    assert [s["current"] for s in sessions] == [True, False]  # newest first: the login, then the registration
    old = sessions[1]["id"]
    assert (await client.delete(f"/api/v1/me/sessions/{old}", headers=h)).status_code == 204
    assert_problem(await client.get("/api/v1/me", headers=bearer(first["access_token"])), 401, "unauthenticated")
    assert [s["id"] for s in (await client.get("/api/v1/me/sessions", headers=h)).json()["data"]] == [sessions[0]["id"]]
    assert_problem(await client.delete(f"/api/v1/me/sessions/{old}", headers=h), 404, "session_not_found")
    revoked = await events_of(db, "identity.session_revoked.v1")
    assert [e["data"]["reason"] for e in revoked] == ["revoked"]
    bad = await client.delete("/api/v1/me/sessions/not-a-uuid", headers=h)
    assert_problem(bad, 400, "validation_error")
