"""API-key scopes over HTTP: a key acts with its owner's rights narrowed to its scopes; every route
that needs the caller declares the resource its scope names; sessions are not narrowed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from litestar import Litestar, get
from litestar.di import NamedDependency
from sqlalchemy import text

from api.app import create_app
from api.auth.scopes import http_handlers, resource_of, uses_principal, vocabulary
from api.services import Services
from domain.shared.principal import Principal
from infra.db.engine import Database
from infra.identity.passwords import PasswordHasher
from infra.settings import Settings
from tests.integration.test_auth import bearer, register
from tests.integration.test_http_platform import assert_problem


@get("/api/v1/scope-test-undeclared", operation_id="ScopeTestUndeclared", summary="test only")
async def undeclared(principal: NamedDependency[Principal]) -> dict[str, str]:
    return {"user_id": str(principal.user_id)}


@pytest.fixture
def app(settings: Settings, services: Services) -> Litestar:
    services.passwords = PasswordHasher(memory_kib=1024, time_cost=1)
    return create_app(settings, services=services)


async def token_of(client: httpx.AsyncClient, email: str = "ada@example.com") -> str:
    resp = await register(client, email)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["access_token"])


async def key_with(client: httpx.AsyncClient, token: str, scopes: list[str] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "k"}
    if scopes is not None:
        body["scopes"] = scopes
    resp = await client.post("/api/v1/api-keys", json=body, headers=bearer(token))
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def assert_insufficient(resp: httpx.Response, needed: str) -> None:
    assert_problem(resp, 403, "insufficient_scope")
    assert resp.headers["www-authenticate"] == f'Bearer error="insufficient_scope", scope="{needed}"'


def test_every_route_that_needs_the_caller_declares_a_scope(app: Litestar) -> None:
    handlers = [h for h in http_handlers(app) if uses_principal(h)]
    assert handlers, "the walk found no authenticated route: it is broken"
    missing = sorted(str(h.operation_id) for h in handlers if resource_of(h) is None)
    assert not missing, f'declare opt={{"scope": "<resource>"}} on these routes (their controller): {missing}'


def test_the_walk_sees_a_dependency_on_the_caller(app: Litestar) -> None:
    by_operation = {h.operation_id: h for h in http_handlers(app)}
    assert uses_principal(by_operation["GetMe"])
    assert not uses_principal(by_operation["GetHealth"])
    assert not uses_principal(by_operation["Login"])


def test_the_vocabulary_is_the_declared_resources(app: Litestar) -> None:
    assert {"prompts", "groups", "api_keys", "me", "audit"} <= vocabulary(app)
    assert "*" not in vocabulary(app)


@pytest.mark.usefixtures("db")
async def test_a_read_scope_reads_but_does_not_write(client: httpx.AsyncClient) -> None:
    token = await token_of(client)
    key = bearer((await key_with(client, token, ["prompts:read"]))["key"])
    assert (await client.get("/api/v1/prompts", headers=key)).status_code == 200
    created = await client.post("/api/v1/prompts", json={"name": "n", "body": "b"}, headers=key)
    assert_insufficient(created, "prompts:write")
    assert_insufficient(await client.get("/api/v1/me", headers=key), "me:read")
    assert_insufficient(await client.get("/api/v1/groups", headers=key), "groups:read")
    # The session of the same user is not narrowed.
    assert (
        await client.post("/api/v1/prompts", json={"name": "n", "body": "b"}, headers=bearer(token))
    ).status_code == 201


@pytest.mark.usefixtures("db")
async def test_a_write_scope_writes_but_does_not_read(client: httpx.AsyncClient) -> None:
    token = await token_of(client)
    key = bearer((await key_with(client, token, ["prompts:write"]))["key"])
    created = await client.post("/api/v1/prompts", json={"name": "n", "body": "b"}, headers=key)
    assert created.status_code == 201, created.text
    assert_insufficient(await client.get(f"/api/v1/prompts/{created.json()['id']}", headers=key), "prompts:read")
    # The prompt ACL is part of the prompt's resource.
    acl = await client.get(f"/api/v1/prompts/{created.json()['id']}/acl", headers=key)
    assert_insufficient(acl, "prompts:read")


@pytest.mark.usefixtures("db")
async def test_resource_and_access_wildcards(client: httpx.AsyncClient) -> None:
    token = await token_of(client)
    both = bearer((await key_with(client, token, ["prompts:*"]))["key"])
    created = await client.post("/api/v1/prompts", json={"name": "n", "body": "b"}, headers=both)
    assert created.status_code == 201, created.text
    assert (await client.get(f"/api/v1/prompts/{created.json()['id']}", headers=both)).status_code == 200
    assert_insufficient(await client.get("/api/v1/groups", headers=both), "groups:read")

    reader = bearer((await key_with(client, token, ["*:read"]))["key"])
    for path in ("/api/v1/me", "/api/v1/groups", "/api/v1/prompts", "/api/v1/api-keys", "/api/v1/me/sessions"):
        assert (await client.get(path, headers=reader)).status_code == 200, path
    assert_insufficient(await client.post("/api/v1/groups", json={"name": "g"}, headers=reader), "groups:write")

    writer = bearer((await key_with(client, token, ["*:write"]))["key"])
    assert (await client.post("/api/v1/groups", json={"name": "g"}, headers=writer)).status_code == 201
    assert_insufficient(await client.get("/api/v1/groups", headers=writer), "groups:read")


@pytest.mark.usefixtures("db")
async def test_a_route_without_a_declared_scope_is_open_to_full_keys_only(
    app: Litestar, client: httpx.AsyncClient
) -> None:
    app.register(undeclared)
    token = await token_of(client)
    url = "/api/v1/scope-test-undeclared"
    for scopes in (["*:read"], ["me:*", "prompts:*", "groups:*", "api_keys:*", "audit:*"]):
        key = bearer((await key_with(client, token, scopes))["key"])
        assert_insufficient(await client.get(url, headers=key), "*")
    for scopes in (["*"], ["*:*"], None):
        key = bearer((await key_with(client, token, scopes))["key"])
        assert (await client.get(url, headers=key)).status_code == 200, scopes
    assert (await client.get(url, headers=bearer(token))).status_code == 200


@pytest.mark.usefixtures("db")
async def test_omitted_scopes_are_stored_as_everything(client: httpx.AsyncClient, db: Database) -> None:
    token = await token_of(client)
    created = await key_with(client, token, None)
    assert created["scopes"] == ["*"]
    async with db.read() as s:
        stored = (await s.execute(text("SELECT scopes FROM api_keys"))).scalar_one()
    assert list(stored) == ["*"]
    key = bearer(created["key"])
    assert (await client.post("/api/v1/groups", json={"name": "g"}, headers=key)).status_code == 201


@pytest.mark.usefixtures("db")
async def test_a_key_stored_with_no_scopes_acts_as_everything(
    client: httpx.AsyncClient, db: Database, services: Services
) -> None:
    token = await token_of(client)
    created = await key_with(client, token, ["me:read"])
    key = bearer(created["key"])
    assert_insufficient(await client.get("/api/v1/groups", headers=key), "groups:read")
    async with db.write() as s:  # a key from before scopes were enforced
        await s.execute(text("UPDATE api_keys SET scopes = '{}'"))
    services.credentials().clear()  # out of band: forget the resolved key, as its TTL would
    assert (await client.get("/api/v1/groups", headers=key)).status_code == 200
    assert (await client.post("/api/v1/groups", json={"name": "g"}, headers=key)).status_code == 201


@pytest.mark.usefixtures("db")
async def test_unknown_scopes_are_refused_at_creation(client: httpx.AsyncClient, db: Database) -> None:
    token = await token_of(client)
    resp = await client.post(
        "/api/v1/api-keys",
        json={"name": "k", "scopes": ["prompts:read", "chat", "prompts:delete", "nothing:read", "*:write"]},
        headers=bearer(token),
    )
    problem = assert_problem(resp, 400, "unknown_scope")
    assert [(e["pointer"], e["code"]) for e in problem["errors"]] == [
        ("/scopes/1", "unknown_scope"),
        ("/scopes/2", "unknown_scope"),
        ("/scopes/3", "unknown_scope"),
    ]
    empty = await client.post("/api/v1/api-keys", json={"name": "k", "scopes": []}, headers=bearer(token))
    problem = assert_problem(empty, 400, "validation_error")
    assert [e["pointer"] for e in problem["errors"]] == ["/scopes"]
    async with db.read() as s:
        assert (await s.execute(text("SELECT count(*) FROM api_keys"))).scalar_one() == 0
