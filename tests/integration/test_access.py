"""Sharing over HTTP: prompts are private to their owner until shared with a user or a group;
roles gate reading, editing, sharing and deleting; invisible is the same 404 as missing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import insert, text

from api.app import create_app
from api.services import Services
from domain.shared.ids import new_id
from infra.db.engine import Database
from infra.db.tables.identity import tenants, users
from infra.identity.passwords import PasswordHasher
from infra.settings import Settings
from tests.integration.test_auth import bearer, events_of, register
from tests.integration.test_http_platform import assert_problem

URL = "/api/v1/prompts"


@pytest.fixture
def app(settings: Settings, services: Services) -> Litestar:
    services.passwords = PasswordHasher(memory_kib=1024, time_cost=1)
    return create_app(settings, services=services)


@dataclass
class User:
    id: str
    tenant_id: str
    headers: dict[str, str]


async def user(client: httpx.AsyncClient, email: str) -> User:
    resp = await register(client, email)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    return User(id=body["user"]["id"], tenant_id=body["user"]["tenant_id"], headers=bearer(body["access_token"]))


@pytest.fixture
async def ada(client: httpx.AsyncClient, db: Database) -> User:
    return await user(client, "ada@example.com")


@pytest.fixture
async def bob(client: httpx.AsyncClient, ada: User) -> User:
    return await user(client, "bob@example.com")


async def prompt_of(client: httpx.AsyncClient, owner: User, name: str = "secret") -> dict[str, Any]:
    resp = await client.post(URL, json={"name": name, "body": "b"}, headers=owner.headers)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


async def grant(
    client: httpx.AsyncClient, by: User, prompt_id: str, grantee: str, role: str, kind: str = "user"
) -> httpx.Response:
    body = {"grantee_type": kind, "grantee_id": grantee, "role": role}
    return await client.post(f"{URL}/{prompt_id}/acl", json=body, headers=by.headers)


async def listed(client: httpx.AsyncClient, who: User) -> list[str]:
    resp = await client.get(URL, headers=who.headers)
    assert resp.status_code == 200, resp.text
    return [p["id"] for p in resp.json()["data"]]


async def test_prompts_need_a_principal(client: httpx.AsyncClient, db: Database) -> None:
    assert_problem(await client.get(URL), 401, "unauthenticated")
    assert_problem(await client.post(URL, json={"name": "x", "body": "b"}), 401, "unauthenticated")
    assert_problem(await client.get(f"{URL}/{uuid.uuid4()}"), 401, "unauthenticated")
    assert_problem(await client.get("/api/v1/groups"), 401, "unauthenticated")


async def test_another_user_cannot_see_touch_or_list_a_private_prompt(
    client: httpx.AsyncClient, ada: User, bob: User
) -> None:
    p = await prompt_of(client, ada)
    url = f"{URL}/{p['id']}"
    missing = f"{URL}/{uuid.uuid4()}"
    for target in (url, missing):
        assert_problem(await client.get(target, headers=bob.headers), 404, "prompt_not_found")
        assert_problem(await client.patch(target, json={"name": "x"}, headers=bob.headers), 404, "prompt_not_found")
        assert_problem(await client.delete(target, headers=bob.headers), 404, "prompt_not_found")
        assert_problem(await client.get(f"{target}/acl", headers=bob.headers), 404, "prompt_not_found")
        assert_problem(await grant(client, bob, target.rsplit("/", 1)[1], bob.id, "viewer"), 404, "prompt_not_found")
    assert await listed(client, bob) == []
    assert await listed(client, ada) == [p["id"]]
    acl = (await client.get(f"{url}/acl", headers=ada.headers)).json()["data"]
    assert [(g["grantee_id"], g["role"]) for g in acl] == [(ada.id, "owner")]


async def test_viewer_reads_but_cannot_patch(client: httpx.AsyncClient, db: Database, ada: User, bob: User) -> None:
    p = await prompt_of(client, ada)
    url = f"{URL}/{p['id']}"
    resp = await grant(client, ada, p["id"], bob.id, "viewer")
    assert resp.status_code == 201, resp.text
    assert resp.json()["object"] == "acl_grant"
    assert (await client.get(url, headers=bob.headers)).json()["name"] == "secret"
    assert await listed(client, bob) == [p["id"]]
    assert_problem(await client.patch(url, json={"name": "x"}, headers=bob.headers), 403, "forbidden")
    assert_problem(await client.delete(url, headers=bob.headers), 403, "forbidden")
    assert_problem(await grant(client, bob, p["id"], bob.id, "editor"), 403, "forbidden")
    changed = await events_of(db, "access.grant_changed.v1")
    assert [(e["data"]["role"], e["metadata"]["actor"]) for e in changed] == [
        ("owner", f"user:{ada.id}"),
        ("viewer", f"user:{ada.id}"),
    ]


async def test_editor_patches_but_cannot_share_or_delete(client: httpx.AsyncClient, ada: User, bob: User) -> None:
    p = await prompt_of(client, ada)
    url = f"{URL}/{p['id']}"
    assert (await grant(client, ada, p["id"], bob.id, "editor")).status_code == 201
    resp = await client.patch(url, json={"name": "edited"}, headers=bob.headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"] == "edited"
    assert_problem(await grant(client, bob, p["id"], ada.id, "viewer"), 403, "forbidden")
    assert_problem(await client.delete(url, headers=bob.headers), 403, "forbidden")
    assert (await client.delete(url, headers=ada.headers)).status_code == 204
    assert_problem(await client.get(url, headers=bob.headers), 404, "prompt_not_found")


async def test_manager_shares_up_to_manager_and_cannot_revoke_the_owner(
    client: httpx.AsyncClient, ada: User, bob: User
) -> None:
    carol = await user(client, "carol@example.com")
    p = await prompt_of(client, ada)
    acl_url = f"{URL}/{p['id']}/acl"
    assert (await grant(client, ada, p["id"], bob.id, "manager")).status_code == 201
    for role in ("viewer", "editor", "manager"):
        resp = await grant(client, bob, p["id"], carol.id, role)
        assert resp.status_code in (200, 201), resp.text
        assert resp.json()["role"] == role
    assert_problem(await grant(client, bob, p["id"], carol.id, "owner"), 400, "validation_error")
    grants = {g["grantee_id"]: g for g in (await client.get(acl_url, headers=bob.headers)).json()["data"]}
    owner_grant = grants[ada.id]["id"]
    assert_problem(await client.delete(f"{acl_url}/{owner_grant}", headers=bob.headers), 403, "owner_cannot_be_revoked")
    assert_problem(await client.delete(f"{acl_url}/{owner_grant}", headers=ada.headers), 403, "owner_cannot_be_revoked")
    assert_problem(await grant(client, bob, p["id"], ada.id, "viewer"), 403, "forbidden")  # no demoting the owner
    assert (await client.delete(f"{acl_url}/{grants[carol.id]['id']}", headers=bob.headers)).status_code == 204
    assert_problem(await client.get(f"{URL}/{p['id']}", headers=carol.headers), 404, "prompt_not_found")
    assert_problem(await client.delete(f"{acl_url}/{uuid.uuid4()}", headers=bob.headers), 404, "grant_not_found")
    assert_problem(await client.delete(f"{URL}/{p['id']}", headers=bob.headers), 403, "forbidden")


async def test_group_grants_follow_membership(client: httpx.AsyncClient, db: Database, ada: User, bob: User) -> None:
    p = await prompt_of(client, ada)
    url = f"{URL}/{p['id']}"
    created = await client.post("/api/v1/groups", json={"name": "Writers"}, headers=ada.headers)
    assert created.status_code == 201, created.text
    group = created.json()
    assert (group["object"], group["my_role"]) == ("group", "manager")
    gurl = f"/api/v1/groups/{group['id']}"
    assert_problem(await client.get(gurl, headers=bob.headers), 404, "group_not_found")
    added = await client.post(f"{gurl}/members", json={"user_id": bob.id}, headers=ada.headers)
    assert added.status_code == 200, added.text
    assert {m["user_id"]: m["role"] for m in added.json()["members"]} == {ada.id: "manager", bob.id: "member"}
    listed_groups = (await client.get("/api/v1/groups", headers=bob.headers)).json()
    assert [(g["id"], g["my_role"]) for g in listed_groups["data"]] == [(group["id"], "member")]
    # Members are not managers: they cannot change the membership.
    assert_problem(await client.delete(f"{gurl}/members/{ada.id}", headers=bob.headers), 403, "forbidden")

    assert (await grant(client, ada, p["id"], group["id"], "editor", kind="group")).status_code == 201
    assert await listed(client, bob) == [p["id"]]
    assert (await client.patch(url, json={"body": "group edit"}, headers=bob.headers)).status_code == 200
    # A direct viewer grant does not lower the group's editor role: the highest wins.
    assert (await grant(client, ada, p["id"], bob.id, "viewer")).status_code == 201
    assert (await client.patch(url, json={"body": "still editor"}, headers=bob.headers)).status_code == 200

    assert (await client.delete(f"{gurl}/members/{bob.id}", headers=ada.headers)).status_code == 204
    assert_problem(await client.patch(url, json={"body": "no"}, headers=bob.headers), 403, "forbidden")
    acl_url = f"{url}/acl"
    direct = next(
        g for g in (await client.get(acl_url, headers=ada.headers)).json()["data"] if g["grantee_id"] == bob.id
    )
    assert (await client.delete(f"{acl_url}/{direct['id']}", headers=ada.headers)).status_code == 204
    assert_problem(await client.get(url, headers=bob.headers), 404, "prompt_not_found")
    assert await listed(client, bob) == []
    assert_problem(await client.get(gurl, headers=bob.headers), 404, "group_not_found")
    assert_problem(await client.delete(f"{gurl}/members/{bob.id}", headers=ada.headers), 404, "member_not_found")
    members = await events_of(db, "access.group_member_changed.v1")
    assert [e["data"]["role"] for e in members] == ["manager", "member", None]


async def test_grants_never_cross_tenants(client: httpx.AsyncClient, db: Database, ada: User) -> None:
    other_tenant, stranger = new_id(), new_id()
    async with db.write() as s:
        await s.execute(insert(tenants).values(id=other_tenant, slug="other", name="Other"))
        await s.execute(
            insert(users).values(id=stranger, tenant_id=other_tenant, email="eve@example.com", role="admin")
        )
        await s.execute(
            text("INSERT INTO groups (id, tenant_id, name) VALUES (:g, :t, 'theirs')"),
            {"g": (foreign_group := new_id()), "t": other_tenant},
        )
    p = await prompt_of(client, ada)
    assert_problem(await grant(client, ada, p["id"], str(stranger), "viewer"), 404, "grantee_not_found")
    assert_problem(await grant(client, ada, p["id"], str(foreign_group), "viewer", "group"), 404, "grantee_not_found")
    assert_problem(await grant(client, ada, p["id"], str(uuid.uuid4()), "viewer"), 404, "grantee_not_found")
    group = (await client.post("/api/v1/groups", json={"name": "g"}, headers=ada.headers)).json()
    add = await client.post(
        f"/api/v1/groups/{group['id']}/members", json={"user_id": str(stranger)}, headers=ada.headers
    )
    assert_problem(add, 404, "member_not_found")


async def test_bad_input_on_access_routes_is_a_problem(client: httpx.AsyncClient, ada: User) -> None:
    p = await prompt_of(client, ada)
    bad = await client.post(f"{URL}/{p['id']}/acl", json={"grantee_type": "robot"}, headers=ada.headers)
    assert_problem(bad, 400, "validation_error")
    assert_problem(await client.get(f"{URL}/not-a-uuid/acl", headers=ada.headers), 400, "validation_error")
    assert_problem(await client.post("/api/v1/groups", json={"name": ""}, headers=ada.headers), 400, "validation_error")
    assert_problem(await client.get("/api/v1/groups/nope", headers=ada.headers), 400, "validation_error")
    assert_problem(await client.get(f"/api/v1/groups/{uuid.uuid4()}", headers=ada.headers), 404, "group_not_found")


async def test_idempotency_keys_are_per_caller(client: httpx.AsyncClient, ada: User, bob: User) -> None:
    body, key = {"name": "same", "body": "b"}, {"Idempotency-Key": "shared-key"}
    first = await client.post(URL, json=body, headers={**ada.headers, **key})
    second = await client.post(URL, json=body, headers={**bob.headers, **key})
    assert (first.status_code, second.status_code) == (201, 201)
    assert "idempotent-replayed" not in second.headers
    assert first.json()["id"] != second.json()["id"]


async def test_concurrent_first_grants_to_one_grantee_do_not_fail(client: httpx.AsyncClient) -> None:
    import asyncio

    owner = (await register(client, "racer-owner@example.com")).json()
    other = (await register(client, "racer-other@example.com")).json()
    h = bearer(owner["access_token"])
    prompt = (await client.post("/api/v1/prompts", json={"name": "p", "body": "b"}, headers=h)).json()
    body = {"grantee_type": "user", "grantee_id": other["user"]["id"], "role": "viewer"}
    url = f"/api/v1/prompts/{prompt['id']}/acl"
    results = await asyncio.gather(*(client.post(url, json=body, headers=h) for _ in range(4)))
    assert sorted(r.status_code for r in results) == [200, 200, 200, 201]
    grants = (await client.get(url, headers=h)).json()
    listed = grants["data"] if isinstance(grants, dict) else grants
    assert sum(1 for g in listed if g["grantee_id"] == other["user"]["id"]) == 1
