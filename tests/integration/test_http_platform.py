"""Platform HTTP behaviour: health, readiness, OpenAPI, request ids and problem+json for every error."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar, get, post
from litestar.params import JSONBody
from redis.asyncio import Redis

from api.app import create_app
from api.services import Services
from infra.db.engine import Database
from infra.settings import Settings

PROBLEM = "application/problem+json"


def assert_problem(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].startswith("https://")
    assert body["title"]
    assert body["request_id"] == resp.headers["x-request-id"]
    return body


async def test_health(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/v1/health")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


async def test_ready_when_everything_is_up(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/v1/ready")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok", "migrations": "ok"}}


async def test_ready_is_503_when_redis_is_down(settings: Settings, db: Database) -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    app = create_app(settings, services=Services(settings=settings, db=db, redis=dead))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        resp = await c.get("/api/v1/ready")
    body = assert_problem(resp, 503, "not_ready")
    assert "redis" in body["detail"]
    await dead.aclose()


async def test_ready_is_503_when_migrations_are_behind(client: httpx.AsyncClient, db: Database) -> None:
    from sqlalchemy import text

    async with db.write() as s:
        (old,) = (await s.execute(text("SELECT version_num FROM alembic_version"))).one()
        await s.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    try:
        resp = await client.get("/api/v1/ready")
        body = assert_problem(resp, 503, "not_ready")
        assert "migrations" in body["detail"]
    finally:
        async with db.write() as s:
            await s.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": old})


async def test_request_id_is_generated_and_echoed(client: httpx.AsyncClient) -> None:
    generated = (await client.get("/api/v1/health")).headers["x-request-id"]
    assert len(generated) == 32
    echoed = await client.get("/api/v1/health", headers={"X-Request-ID": "abc-123.DEF"})
    assert echoed.headers["x-request-id"] == "abc-123.DEF"
    # A hostile id (spaces, too long) is replaced, never reflected.
    replaced = await client.get("/api/v1/health", headers={"X-Request-ID": "x" * 300})
    assert replaced.headers["x-request-id"] != "x" * 300


async def test_unknown_route_is_404_problem(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/v1/no-such-thing", headers={"X-Request-ID": "rid-404"})
    body = assert_problem(resp, 404, "not_found")
    assert body["request_id"] == "rid-404"
    assert body["instance"] == "/api/v1/no-such-thing"


async def test_wrong_method_is_405_problem(client: httpx.AsyncClient) -> None:
    resp = await client.delete("/api/v1/health")
    assert_problem(resp, 405, "method_not_allowed")


async def test_openapi_is_served_and_matches_committed_file(client: httpx.AsyncClient) -> None:
    from api.openapi import COMMITTED_PATH

    resp = await client.get("/api/v1/openapi.json")
    assert resp.status_code == 200
    assert resp.content == COMMITTED_PATH.read_bytes(), "run `liteskill openapi` and commit openapi/openapi.json"
    doc = resp.json()
    assert doc["openapi"].startswith("3.1")
    assert "Problem" in doc["components"]["schemas"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op.get("operationId"), f"{method.upper()} {path} has no operationId"
            for status, response in op["responses"].items():
                if status[0] in "45":
                    assert "application/problem+json" in response["content"], (path, method, status)


async def test_docs_page_is_served(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/v1/docs")
    assert resp.status_code == 200
    assert "text/html" in resp.headers["content-type"]
    assert "/api/v1/openapi.json" in resp.text


# A throwaway app exercising the error paths that need a route with a body or one that crashes.
class Thing(msgspec.Struct):
    name: str
    size: int
    tags: list[str] = []


@pytest.fixture
async def probe_client(settings: Settings, services: Services) -> Any:
    @post("/api/v1/things", operation_id="CreateThing")
    async def create_thing(data: JSONBody[Thing]) -> Thing:
        return data

    @get("/api/v1/boom", operation_id="Boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail /etc/passwd")

    app = create_app(settings, services=services)
    app.register(create_thing)
    app.register(boom)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c


async def test_validation_errors_carry_json_pointers(probe_client: Any) -> None:
    resp = await probe_client.post("/api/v1/things", json={"name": "x", "size": "big"})
    body = assert_problem(resp, 400, "validation_error")
    assert body["errors"] == [{"detail": "Expected `int`, got `str`", "code": "invalid", "pointer": "/size"}]
    nested = await probe_client.post("/api/v1/things", json={"name": "x", "size": 1, "tags": ["a", 2]})
    body = assert_problem(nested, 400, "validation_error")
    assert body["errors"][0]["pointer"] == "/tags/1"
    missing = await probe_client.post("/api/v1/things", json={"size": 1})
    body = assert_problem(missing, 400, "validation_error")
    assert "name" in body["errors"][0]["detail"]


async def test_malformed_json_is_400(probe_client: Any) -> None:
    resp = await probe_client.post("/api/v1/things", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert resp.headers["content-type"].startswith(PROBLEM)
    assert resp.json()["code"] in ("invalid_json", "validation_error")


async def test_wrong_content_type_is_415(probe_client: Any) -> None:
    resp = await probe_client.post("/api/v1/things", content=b"name=x", headers={"content-type": "text/plain"})
    assert_problem(resp, 415, "unsupported_media_type")


async def test_oversize_body_is_413(probe_client: Any, settings: Settings) -> None:
    big = b'{"name": "' + b"x" * (settings.http.max_body_bytes + 10) + b'", "size": 1}'
    resp = await probe_client.post("/api/v1/things", content=big, headers={"content-type": "application/json"})
    assert_problem(resp, 413, "payload_too_large")


async def test_crash_is_500_problem_without_leaking(probe_client: Any) -> None:
    resp = await probe_client.get("/api/v1/boom")
    body = assert_problem(resp, 500, "internal_error")
    assert "secret" not in resp.text
    assert "passwd" not in resp.text
    assert "Traceback" not in resp.text
    assert body["detail"] == "The server could not handle this request."


async def test_app_without_services_has_no_global_state() -> None:
    # Two apps built from the same module never share state (no module-level singletons).
    from infra.settings import load_settings

    s = load_settings({"LITESKILL_DATABASE_URL": "postgresql://a/b", "LITESKILL_REDIS_URL": "redis://x"}, dotenv=None)
    a, b = create_app(s), create_app(s)
    assert isinstance(a, Litestar)
    assert a is not b
    assert a.state is not b.state
