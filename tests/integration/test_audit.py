"""/api/v1/audit-events: admins read their tenant's audit trail, filtered, paged and exported."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import insert

from api.app import create_app
from api.audit import controller as audit_controller
from api.services import Services
from infra.db.engine import Database
from infra.db.tables.eventstore import audit_log
from infra.eventstore.postgres import PostgresTransactionFactory
from infra.identity.passwords import PasswordHasher
from infra.projections.audit import AuditLogProjection
from infra.projections.runner import catch_up
from infra.settings import Settings
from tests.integration.test_auth import PASSWORD, bearer, register
from tests.integration.test_http_platform import assert_problem

URL = "/api/v1/audit-events"


@pytest.fixture
def app(settings: Settings, services: Services) -> Litestar:
    services.passwords = PasswordHasher(memory_kib=1024, time_cost=1)
    return create_app(settings, services=services)


async def project(db: Database) -> None:
    await catch_up(PostgresTransactionFactory(db), AuditLogProjection())


async def login(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})


async def admin_and_user(client: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
    admin = (await register(client, "ada@example.com")).json()
    user = (await register(client, "bob@example.com")).json()
    assert admin["user"]["role"] == "admin"
    return admin, user


async def test_admin_sees_registrations_and_logins_newest_first(client: httpx.AsyncClient, db: Database) -> None:
    admin, user = await admin_and_user(client)
    assert (await login(client, "bob@example.com")).status_code == 200
    await project(db)
    resp = await client.get(URL, headers=bearer(admin["access_token"]))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "list"
    assert body["has_more"] is False
    assert body["next_cursor"] is None
    items = body["data"]
    positions = [i["position"] for i in items]
    assert positions == sorted(positions, reverse=True)
    actions = [i["action"] for i in items]
    assert actions.count("identity.user_registered") == 2
    assert "identity.session_started" in actions
    first = items[0]
    assert first["object"] == "audit_event"
    assert first["actor"] == f"user:{user['user']['id']}"
    assert first["entity_type"]
    assert first["entity_id"]
    assert first["stream_id"]
    assert first["type_id"]
    assert uuid.UUID(first["id"])
    assert datetime.fromisoformat(first["recorded_at"]).tzinfo is not None


async def test_filters(client: httpx.AsyncClient, db: Database) -> None:
    admin, user = await admin_and_user(client)
    await login(client, "bob@example.com")
    await project(db)
    h = bearer(admin["access_token"])
    registered = (await client.get(URL, params={"action": "identity.user_registered"}, headers=h)).json()["data"]
    assert len(registered) == 2
    assert {i["action"] for i in registered} == {"identity.user_registered"}
    bobs = (await client.get(URL, params={"actor": f"user:{user['user']['id']}"}, headers=h)).json()["data"]
    assert bobs
    assert {i["actor"] for i in bobs} == {f"user:{user['user']['id']}"}
    entity = (await client.get(URL, params={"entity_type": "user", "entity_id": user["user"]["id"]}, headers=h)).json()[
        "data"
    ]
    assert entity
    assert {i["stream_id"] for i in entity} == {f"user-{user['user']['id']}"}
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (await client.get(URL, params={"since": future}, headers=h)).json()["data"] == []
    assert len((await client.get(URL, params={"until": future}, headers=h)).json()["data"]) >= 4
    bad = assert_problem(await client.get(URL, params={"since": "yesterday"}, headers=h), 400, "validation_error")
    assert bad["errors"][0]["parameter"] == "since"
    assert_problem(await client.get(URL, params={"limit": 0}, headers=h), 400, "validation_error")
    assert_problem(await client.get(URL, params={"cursor": "nope!"}, headers=h), 400, "invalid_cursor")


async def test_pagination_walks_every_page(client: httpx.AsyncClient, db: Database) -> None:
    admin, _ = await admin_and_user(client)
    for _ in range(3):
        await login(client, "bob@example.com")
    await project(db)
    h = bearer(admin["access_token"])
    everything = (await client.get(URL, params={"limit": 100}, headers=h)).json()["data"]
    assert len(everything) >= 5
    seen: list[int] = []
    resp = await client.get(URL, params={"limit": 2}, headers=h)
    while True:
        body = resp.json()
        assert len(body["data"]) <= 2
        seen += [i["position"] for i in body["data"]]
        if not body["has_more"]:
            assert "link" not in resp.headers
            break
        assert body["next_cursor"]
        assert 'rel="next"' in resp.headers["link"]
        resp = await client.get(URL, params={"limit": 2, "cursor": body["next_cursor"]}, headers=h)
    assert seen == [i["position"] for i in everything]


async def test_non_admins_get_403_and_anonymous_callers_401(client: httpx.AsyncClient, db: Database) -> None:
    _, user = await admin_and_user(client)
    assert_problem(await client.get(URL, headers=bearer(user["access_token"])), 403, "forbidden")
    assert_problem(await client.get(f"{URL}/export", headers=bearer(user["access_token"])), 403, "forbidden")
    anonymous = await client.get(URL)
    assert_problem(anonymous, 401, "unauthenticated")
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert_problem(await client.get(f"{URL}/export"), 401, "unauthenticated")


async def test_other_tenants_rows_are_invisible(client: httpx.AsyncClient, db: Database) -> None:
    admin, _ = await admin_and_user(client)
    await project(db)
    async with db.write() as s:
        await s.execute(
            insert(audit_log).values(
                position=10_000_000,
                event_id=uuid.uuid4(),
                stream_id="user-foreign",
                type_id="identity.user_registered.v1",
                action="identity.user_registered",
                entity_type="user",
                entity_id="foreign",
                tenant_id=str(uuid.uuid4()),
                actor="user:foreign",
                recorded_at=datetime.now(UTC),
            )
        )
    h = bearer(admin["access_token"])
    listed = (await client.get(URL, params={"limit": 100}, headers=h)).json()["data"]
    assert listed
    assert all(i["entity_id"] != "foreign" for i in listed)
    assert (await client.get(URL, params={"actor": "user:foreign"}, headers=h)).json()["data"] == []
    exported = (await client.get(f"{URL}/export", headers=h)).text
    assert "foreign" not in exported


async def test_export_is_ndjson_of_the_filtered_rows_oldest_first(
    client: httpx.AsyncClient, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_controller, "EXPORT_BATCH", 2)  # several batches
    admin, _ = await admin_and_user(client)
    await login(client, "bob@example.com")
    await project(db)
    h = bearer(admin["access_token"])
    listed = (await client.get(URL, params={"limit": 100}, headers=h)).json()["data"]
    resp = await client.get(f"{URL}/export", headers=h)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    lines = resp.text.splitlines()
    assert resp.text.endswith("\n")
    exported = [json.loads(line) for line in lines]
    assert exported == list(reversed(listed))
    filtered = await client.get(f"{URL}/export", params={"action": "identity.session_started"}, headers=h)
    rows = [json.loads(line) for line in filtered.text.splitlines()]
    assert rows
    assert {r["action"] for r in rows} == {"identity.session_started"}
    bad = await client.get(f"{URL}/export", params={"until": "not a time"}, headers=h)
    assert_problem(bad, 400, "validation_error")


async def test_an_update_shows_who_from_where_and_which_fields_changed(client: httpx.AsyncClient, db: Database) -> None:
    admin, _ = await admin_and_user(client)
    h = {**bearer(admin["access_token"]), "User-Agent": "audit-test/1.0", "X-Request-ID": "req-audit-1"}
    prompt = (await client.post("/api/v1/prompts", json={"name": "p", "body": "b"}, headers=h)).json()
    patched = await client.patch(
        f"/api/v1/prompts/{prompt['id']}", json={"body": "new body"}, headers={**h, "X-Request-ID": "req-audit-2"}
    )
    assert patched.status_code == 200, patched.text
    await project(db)
    rows = (await client.get(URL, params={"entity_type": "prompt", "entity_id": prompt["id"]}, headers=h)).json()[
        "data"
    ]
    assert [r["action"] for r in rows] == ["prompts.prompt_updated", "prompts.prompt_created"]
    updated, created = rows
    assert updated["changed"] == ["body"]
    assert updated["data"]["body"] == "new body"
    assert updated["request_id"] == "req-audit-2"
    assert updated["user_agent"] == "audit-test/1.0"
    assert updated["ip"]
    assert updated["tenant_id"] == admin["user"]["tenant_id"]
    assert created["changed"] is None
    assert created["data"]["name"] == "p"


async def test_view_audit_permission_opens_the_trail_to_a_non_admin(client: httpx.AsyncClient, db: Database) -> None:
    admin, user = await admin_and_user(client)
    h = bearer(user["access_token"])
    assert_problem(await client.get(URL, headers=h), 403, "forbidden")
    granted = await client.patch(
        f"/api/v1/admin/users/{user['user']['id']}",
        json={"permissions": ["view_audit"]},
        headers=bearer(admin["access_token"]),
    )
    assert granted.status_code == 200, granted.text
    await project(db)
    resp = await client.get(URL, headers=h)  # the same token: the grant applies at once
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]
    export = await client.get(f"{URL}/export", headers=h)
    assert export.status_code == 200
    assert export.text.strip()
