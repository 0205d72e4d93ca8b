"""Idempotency-Key on POST /api/v1/prompts: replay, reuse with another request, in-flight keys,
expiry, which outcomes are stored, release on server errors, and concurrent requests with one key."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
from litestar import post
from litestar.params import JSONBody
from sqlalchemy import insert, select, text

from api.app import create_app
from api.errors import ApiError
from api.idempotency import fingerprint, idempotent
from api.services import Services
from infra.db.engine import Database
from infra.db.tables.platform import idempotency_keys
from infra.settings import Settings
from tests.integration import test_building_blocks as prompts_tests
from tests.integration.test_http_platform import assert_problem

# The signed-in prompts client of the building-block tests, and their helpers.
app = prompts_tests.app
client = prompts_tests.client
URL = prompts_tests.URL
count_prompts = prompts_tests.count_prompts
create = prompts_tests.create
scope_of = prompts_tests.scope_of
stream = prompts_tests.stream

# --- idempotency ------------------------------------------------------------------------------


async def test_idempotent_replay(client: httpx.AsyncClient, db: Database) -> None:
    headers = {"Idempotency-Key": "key-1"}
    first = await client.post(URL, json={"name": "once", "body": "b", "tags": ["t"]}, headers=headers)
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    # Same JSON, other key order and spacing: still the same request.
    again = await client.post(
        URL,
        content=b'{"tags": ["t"],  "body": "b", "name": "once"}',
        headers={**headers, "content-type": "application/json"},
    )
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["etag"] == first.headers["etag"]
    assert again.headers["x-request-id"] != first.headers["x-request-id"]
    assert await count_prompts(db) == 1
    assert len(await stream(db, first.json()["id"])) == 1

    other = await client.post(URL, json={"name": "twice", "body": "b"}, headers=headers)
    assert_problem(other, 422, "idempotency_key_reused")
    other_query = await client.post(f"{URL}?x=1", json={"name": "once", "body": "b", "tags": ["t"]}, headers=headers)
    assert_problem(other_query, 422, "idempotency_key_reused")
    # The key space is per key: another key creates another prompt.
    await create(client, "once", h={"Idempotency-Key": "key-2"})
    assert await count_prompts(db) == 2


async def test_idempotency_key_in_flight_is_409(client: httpx.AsyncClient, db: Database) -> None:
    payload = {"name": "slow", "body": "b"}
    async with db.write() as s:
        await s.execute(
            insert(idempotency_keys).values(
                scope=scope_of(client),
                key="busy",
                request_method="POST",
                request_path=URL,
                request_hash=fingerprint(msgspec.json.encode(payload)),
                state="in_flight",
                expires_at=datetime.now(UTC) + timedelta(minutes=5),
            )
        )
    resp = await client.post(URL, json=payload, headers={"Idempotency-Key": "busy"})
    assert_problem(resp, 409, "idempotency_in_flight")
    assert resp.headers["retry-after"] == "1"
    assert await count_prompts(db) == 0


async def test_expired_key_is_taken_over(client: httpx.AsyncClient, db: Database) -> None:
    async with db.write() as s:
        await s.execute(
            insert(idempotency_keys).values(
                scope=scope_of(client),
                key="old",
                request_method="POST",
                request_path="/elsewhere",
                request_hash="0" * 64,
                state="completed",
                response_status=201,
                response_headers=[],
                response_body=b"{}",
                expires_at=datetime.now(UTC) - timedelta(seconds=1),
            )
        )
    resp = await client.post(URL, json={"name": "new", "body": "b"}, headers={"Idempotency-Key": "old"})
    assert resp.status_code == 201
    assert "idempotent-replayed" not in resp.headers
    async with db.read() as s:
        row = (await s.execute(select(idempotency_keys).where(idempotency_keys.c.key == "old"))).one()
    assert (row.state, row.request_path, row.response_status) == ("completed", URL, 201)
    assert row.expires_at > datetime.now(UTC) + timedelta(hours=23)


async def test_validation_failures_are_replayed(client: httpx.AsyncClient, db: Database) -> None:
    headers = {"Idempotency-Key": "bad-body"}
    first = await client.post(URL, json={"name": "", "body": "b"}, headers=headers)
    assert_problem(first, 400, "validation_error")
    second = await client.post(URL, json={"name": "", "body": "b"}, headers=headers)
    assert second.status_code == 400
    assert second.headers["idempotent-replayed"] == "true"
    assert second.headers["content-type"].startswith("application/problem+json")
    assert second.json() == first.json()


@pytest.mark.parametrize("key", ["", "k" * 256])
async def test_idempotency_key_length(client: httpx.AsyncClient, db: Database, key: str) -> None:
    resp = await client.post(URL, json={"name": "x", "body": "b"}, headers={"Idempotency-Key": key})
    body = assert_problem(resp, 400, "validation_error")
    assert body["errors"][0]["parameter"] == "Idempotency-Key"
    assert await count_prompts(db) == 0


class Job(msgspec.Struct):
    n: int


@pytest.fixture
async def flaky_client(settings: Settings, services: Services) -> Any:
    """A route that fails (exception, then a 503 problem) before it succeeds, and one that is slow."""
    calls = {"flaky": 0, "slow": 0}

    @post("/api/v1/flaky", operation_id="Flaky", middleware=[idempotent()], status_code=201)
    async def flaky(data: JSONBody[Job]) -> dict[str, int]:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise RuntimeError("boom")
        if calls["flaky"] == 2:
            raise ApiError(503, "unavailable", "try later")
        return {"n": data.n, "call": calls["flaky"]}

    @post("/api/v1/slow", operation_id="Slow", middleware=[idempotent()], status_code=201)
    async def slow(data: JSONBody[Job]) -> dict[str, int]:
        calls["slow"] += 1
        await asyncio.sleep(0.3)
        return {"n": data.n}

    app = create_app(settings, services=services)
    app.register(flaky)
    app.register(slow)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        c.calls = calls  # type: ignore[attr-defined]
        yield c


async def test_server_errors_release_the_key(flaky_client: Any, db: Database) -> None:
    headers = {"Idempotency-Key": "retry-me"}
    assert_problem(await flaky_client.post("/api/v1/flaky", json={"n": 1}, headers=headers), 500, "internal_error")
    async with db.read() as s:
        assert (await s.execute(text("SELECT count(*) FROM idempotency_keys"))).scalar_one() == 0
    assert_problem(await flaky_client.post("/api/v1/flaky", json={"n": 1}, headers=headers), 503, "unavailable")
    ok = await flaky_client.post("/api/v1/flaky", json={"n": 1}, headers=headers)
    assert ok.status_code == 201
    assert ok.json() == {"n": 1, "call": 3}
    replay = await flaky_client.post("/api/v1/flaky", json={"n": 1}, headers=headers)
    assert replay.json() == {"n": 1, "call": 3}
    assert replay.headers["idempotent-replayed"] == "true"
    assert flaky_client.calls["flaky"] == 3
    # Same key on another path is another request.
    assert_problem(
        await flaky_client.post("/api/v1/slow", json={"n": 1}, headers=headers), 422, "idempotency_key_reused"
    )


async def test_concurrent_requests_with_one_key_run_once(flaky_client: Any) -> None:
    headers = {"Idempotency-Key": "race"}
    first, second = await asyncio.gather(
        flaky_client.post("/api/v1/slow", json={"n": 2}, headers=headers),
        flaky_client.post("/api/v1/slow", json={"n": 2}, headers=headers),
    )
    assert sorted([first.status_code, second.status_code]) == [201, 409]
    assert flaky_client.calls["slow"] == 1
    later = await flaky_client.post("/api/v1/slow", json={"n": 2}, headers=headers)
    assert later.status_code == 201
    assert later.headers["idempotent-replayed"] == "true"
