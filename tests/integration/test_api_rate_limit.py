"""The per-principal API rate limit (LITESKILL_API_RATE_PER_PRINCIPAL): 429 ``rate_limited`` with
Retry-After and RateLimit headers beyond it, RateLimit headers on the requests within it; one bucket
per user for their sessions and one per API key."""

from __future__ import annotations

import asyncio
import time

import httpx
import msgspec
import pytest
from litestar import Litestar

from api.app import create_app
from api.services import Services
from infra.identity.passwords import PasswordHasher
from infra.settings import Settings
from tests.integration.test_auth import PASSWORD, bearer, register
from tests.integration.test_http_platform import assert_problem

LIMIT = 3


@pytest.fixture(autouse=True)
async def same_window() -> None:
    """Windows are fixed minutes: start a test well before the next one, or its counts reset midway."""
    into = time.time() % 60
    if into > 52:
        await asyncio.sleep(60.5 - into)


@pytest.fixture
def app(settings: Settings, services: Services) -> Litestar:
    services.passwords = PasswordHasher(memory_kib=1024, time_cost=1)
    limited = msgspec.structs.replace(settings, api_rate_per_principal=LIMIT)
    services.settings = limited
    return create_app(limited, services=services)


async def signed_in(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    resp = await register(client, email)
    assert resp.status_code == 201, resp.text
    return bearer(resp.json()["access_token"])


@pytest.mark.usefixtures("db")
async def test_the_request_over_the_limit_is_429_with_headers(client: httpx.AsyncClient) -> None:
    ada = await signed_in(client, "ada@example.com")
    for i in range(LIMIT):
        ok = await client.get("/api/v1/me", headers=ada)
        assert ok.status_code == 200, ok.text
        assert ok.headers["ratelimit-policy"] == f'"api";q={LIMIT};w=60'
        assert ok.headers["ratelimit"].startswith(f'"api";r={LIMIT - i - 1};t=')
    over = await client.get("/api/v1/me", headers=ada)
    assert_problem(over, 429, "rate_limited")
    assert 1 <= int(over.headers["retry-after"]) <= 60
    assert over.headers["ratelimit-policy"] == f'"api";q={LIMIT};w=60'
    assert over.headers["ratelimit"].startswith('"api";r=0;t=')
    # Every authenticated route shares the bucket; unauthenticated ones are not limited by it.
    assert_problem(await client.get("/api/v1/prompts", headers=ada), 429, "rate_limited")
    health = await client.get("/api/v1/health")
    assert health.status_code == 200
    assert "ratelimit" not in health.headers


@pytest.mark.usefixtures("db")
async def test_two_users_do_not_share_a_bucket(client: httpx.AsyncClient) -> None:
    ada = await signed_in(client, "ada@example.com")
    bob = await signed_in(client, "bob@example.com")
    for _ in range(LIMIT):
        assert (await client.get("/api/v1/me", headers=ada)).status_code == 200
    assert_problem(await client.get("/api/v1/me", headers=ada), 429, "rate_limited")
    assert (await client.get("/api/v1/me", headers=bob)).status_code == 200


@pytest.mark.usefixtures("db")
async def test_an_api_key_has_its_own_bucket_and_sessions_share_the_users(client: httpx.AsyncClient) -> None:
    ada = await signed_in(client, "ada@example.com")
    second = await client.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert second.status_code == 200, second.text
    other_session = bearer(second.json()["access_token"])
    created = await client.post("/api/v1/api-keys", json={"name": "k"}, headers=ada)  # 1 of the user's bucket
    assert created.status_code == 201, created.text
    key = bearer(created.json()["key"])
    for _ in range(LIMIT - 1):
        assert (await client.get("/api/v1/me", headers=other_session)).status_code == 200
    # Both sessions of the user drew from one bucket, now empty ...
    assert_problem(await client.get("/api/v1/me", headers=ada), 429, "rate_limited")
    assert_problem(await client.get("/api/v1/me", headers=other_session), 429, "rate_limited")
    # ... while the key has its own.
    for _ in range(LIMIT):
        assert (await client.get("/api/v1/me", headers=key)).status_code == 200
    assert_problem(await client.get("/api/v1/me", headers=key), 429, "rate_limited")


@pytest.mark.usefixtures("db")
async def test_zero_turns_the_limit_off(settings: Settings, services: Services) -> None:
    services.passwords = PasswordHasher(memory_kib=1024, time_cost=1)
    off = msgspec.structs.replace(settings, api_rate_per_principal=0)
    services.settings = off
    app = create_app(off, services=services)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver.local") as c:
        ada = await signed_in(c, "ada@example.com")
        for _ in range(LIMIT * 3):
            resp = await c.get("/api/v1/me", headers=ada)
            assert resp.status_code == 200
            assert "ratelimit" not in resp.headers
