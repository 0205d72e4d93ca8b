"""Tenants: instance admins create them (with an admin invitation); sign-in names a tenant; and
nothing crosses tenants: a user or admin of tenant B sees and touches none of tenant A's data."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from infra.db.engine import Database
from tests.integration.test_access import User, app, user  # noqa: F401  (app: cheap password hashing)
from tests.integration.test_audit import project
from tests.integration.test_auth import PASSWORD, bearer, events_of, register
from tests.integration.test_http_platform import assert_problem

TENANTS = "/api/v1/admin/tenants"


@pytest.fixture
async def ada(client: httpx.AsyncClient, db: Database) -> User:
    return await user(client, "ada@example.com")


@pytest.fixture
async def bob(client: httpx.AsyncClient, ada: User) -> User:
    return await user(client, "bob@example.com")


async def create_tenant(client: httpx.AsyncClient, by: User, slug: str, admin_email: str) -> dict[str, Any]:
    resp = await client.post(
        TENANTS, json={"slug": slug, "name": slug.title(), "admin_email": admin_email}, headers=by.headers
    )
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


async def tenant_admin(client: httpx.AsyncClient, instance_admin: User, slug: str, email: str) -> User:
    """A second tenant created over the API, and its admin registered through the invitation."""
    created = await create_tenant(client, instance_admin, slug, email)
    resp = await register(client, email, invitation_token=created["invitation"]["token"])
    assert resp.status_code == 201, resp.text
    body = resp.json()
    return User(id=body["user"]["id"], tenant_id=body["user"]["tenant_id"], headers=bearer(body["access_token"]))


async def login(client: httpx.AsyncClient, email: str, **extra: Any) -> httpx.Response:
    return await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD, **extra})


async def test_instance_admins_create_tenants_with_an_admin_invitation(
    client: httpx.AsyncClient, db: Database, ada: User, bob: User
) -> None:
    created = await create_tenant(client, ada, "acme", "Zed@Example.com")
    tenant, invitation = created["tenant"], created["invitation"]
    assert (tenant["object"], tenant["slug"], tenant["name"]) == ("tenant", "acme", "Acme")
    assert (tenant["registration_open"], tenant["registration_open_source"]) == (False, "admin")
    assert (invitation["role"], invitation["email"], invitation["tenant_id"]) == (
        "admin",
        "zed@example.com",
        tenant["id"],
    )
    assert invitation["token"].startswith("lsi_")
    dup = await client.post(
        TENANTS, json={"slug": "acme", "name": "Again", "admin_email": "x@example.com"}, headers=ada.headers
    )
    assert_problem(dup, 409, "tenant_slug_taken")
    default = await client.post(
        TENANTS, json={"slug": "default", "name": "D", "admin_email": "x@example.com"}, headers=ada.headers
    )
    assert_problem(default, 409, "tenant_slug_taken")
    for slug in ("A", "a b", "x", "a" * 64, "ünï"):
        bad = await client.post(
            TENANTS, json={"slug": slug, "name": "n", "admin_email": "x@example.com"}, headers=ada.headers
        )
        assert_problem(bad, 400, "validation_error")
    listed = (await client.get(TENANTS, headers=ada.headers)).json()
    assert [t["slug"] for t in listed["data"]] == ["acme", "default"]
    one = await client.get(f"{TENANTS}/{tenant['id']}", headers=ada.headers)
    assert one.json()["slug"] == "acme"
    assert_problem(await client.get(f"{TENANTS}/{uuid.uuid4()}", headers=ada.headers), 404, "tenant_not_found")
    # Not an instance admin: the whole collection is forbidden, whatever the id.
    body = {"slug": "mine", "name": "Mine", "admin_email": "b@example.com"}
    assert_problem(await client.post(TENANTS, json=body, headers=bob.headers), 403, "forbidden")
    assert_problem(await client.get(TENANTS, headers=bob.headers), 403, "forbidden")
    assert_problem(await client.get(f"{TENANTS}/{tenant['id']}", headers=bob.headers), 403, "forbidden")
    made = await events_of(db, "identity.tenant_created.v1")
    assert [(e["data"]["slug"], e["metadata"]["actor"]) for e in made] == [("acme", f"user:{ada.id}")]


async def test_the_invited_admin_runs_the_new_tenant(client: httpx.AsyncClient, ada: User) -> None:
    zed = await tenant_admin(client, ada, "acme", "zed@example.com")
    assert zed.tenant_id != ada.tenant_id
    me = (await client.get("/api/v1/me", headers=zed.headers)).json()
    assert (me["user"]["role"], me["tenant_id"]) == ("admin", zed.tenant_id)
    # A new tenant starts closed, so nobody can sign up before (or besides) its invited admin.
    assert_problem(await register(client, "eve@example.com", tenant="acme"), 403, "registration_closed")
    assert_problem(await register(client, "eve@example.com", tenant="nowhere"), 403, "registration_closed")
    # Zed is admin of acme, not of the instance.
    assert_problem(await client.get(TENANTS, headers=zed.headers), 403, "forbidden")
    opened = await client.patch("/api/v1/admin/settings", json={"registration_open": True}, headers=zed.headers)
    assert opened.status_code == 200, opened.text
    # The same email may hold an account in each tenant: two separate accounts.
    twin = await register(client, "ada@example.com", tenant="acme")
    assert twin.status_code == 201, twin.text
    assert (twin.json()["user"]["tenant_id"], twin.json()["user"]["role"]) == (zed.tenant_id, "user")
    assert twin.json()["user"]["id"] != ada.id
    in_acme = await login(client, "ada@example.com", tenant="acme")
    in_default = await login(client, "ada@example.com")
    assert (in_acme.status_code, in_default.status_code) == (200, 200)
    assert in_acme.json()["user"]["id"] == twin.json()["user"]["id"]
    assert in_default.json()["user"]["id"] == ada.id


async def test_login_names_the_tenant_and_an_unknown_one_is_a_wrong_password(
    client: httpx.AsyncClient, ada: User
) -> None:
    await tenant_admin(client, ada, "acme", "zed@example.com")
    assert (await login(client, "zed@example.com", tenant="acme")).status_code == 200
    wrong = assert_problem(
        await client.post(
            "/api/v1/auth/login", json={"email": "zed@example.com", "password": "x" * 12, "tenant": "acme"}
        ),
        401,
        "unauthenticated",
    )
    elsewhere = assert_problem(await login(client, "zed@example.com"), 401, "unauthenticated")
    unknown = assert_problem(await login(client, "zed@example.com", tenant="nowhere"), 401, "unauthenticated")
    assert wrong["detail"] == elsewhere["detail"] == unknown["detail"]
    assert_problem(await login(client, "zed@example.com", tenant="x" * 64), 400, "validation_error")


async def test_nothing_crosses_tenants(client: httpx.AsyncClient, db: Database, ada: User, bob: User) -> None:
    h = ada.headers
    prompt = (await client.post("/api/v1/prompts", json={"name": "a-secret", "body": "b"}, headers=h)).json()
    group = (await client.post("/api/v1/groups", json={"name": "a-team"}, headers=h)).json()
    invitation = (await client.post("/api/v1/invitations", json={"email": "carol@example.com"}, headers=h)).json()
    zed = await tenant_admin(client, ada, "acme", "zed@example.com")
    z = zed.headers
    await project(db)

    for url in (f"/api/v1/prompts/{prompt['id']}", f"/api/v1/prompts/{prompt['id']}/acl"):
        assert_problem(await client.get(url, headers=z), 404, "prompt_not_found")
    assert_problem(await client.get(f"/api/v1/groups/{group['id']}", headers=z), 404, "group_not_found")
    assert_problem(await client.get(f"/api/v1/invitations/{invitation['id']}", headers=z), 404, "invitation_not_found")
    assert_problem(
        await client.delete(f"/api/v1/invitations/{invitation['id']}", headers=z), 404, "invitation_not_found"
    )
    for target in (ada.id, bob.id):
        assert_problem(await client.get(f"/api/v1/admin/users/{target}", headers=z), 404, "user_not_found")
        patched = await client.patch(f"/api/v1/admin/users/{target}", json={"disabled": True}, headers=z)
        assert_problem(patched, 404, "user_not_found")
    assert (await client.get("/api/v1/prompts", headers=z)).json()["data"] == []
    assert (await client.get("/api/v1/groups", headers=z)).json()["data"] == []
    assert [u["id"] for u in (await client.get("/api/v1/admin/users", headers=z)).json()["data"]] == [zed.id]
    invitations = (await client.get("/api/v1/invitations", headers=z)).json()["data"]
    assert [(i["email"], i["status"]) for i in invitations] == [("zed@example.com", "accepted")]
    audit = (await client.get("/api/v1/audit-events", params={"limit": 100}, headers=z)).json()["data"]
    seen = {e["entity_id"] for e in audit}
    assert audit
    assert not seen & {ada.id, bob.id, prompt["id"], group["id"], invitation["id"]}
    mine = (await client.get("/api/v1/audit-events", params={"limit": 100}, headers=h)).json()["data"]
    assert zed.id not in {e["entity_id"] for e in mine}
    assert (await client.get("/api/v1/admin/settings", headers=z)).json()["registration_open"] is False
    assert (await client.get("/api/v1/admin/settings", headers=h)).json()["registration_open"] is True

    # Zed cannot share with, or add to a group, anyone of tenant A.
    own = (await client.post("/api/v1/prompts", json={"name": "z", "body": "b"}, headers=z)).json()
    grant = {"grantee_type": "user", "grantee_id": bob.id, "role": "viewer"}
    assert_problem(
        await client.post(f"/api/v1/prompts/{own['id']}/acl", json=grant, headers=z), 404, "grantee_not_found"
    )
    team = (await client.post("/api/v1/groups", json={"name": "z-team"}, headers=z)).json()
    add = await client.post(f"/api/v1/groups/{team['id']}/members", json={"user_id": ada.id}, headers=z)
    assert_problem(add, 404, "member_not_found")
    # Nor can tenant A's admin reach into tenant B (instance admins manage tenants, not their users).
    assert_problem(await client.get(f"/api/v1/admin/users/{zed.id}", headers=h), 404, "user_not_found")
    assert_problem(await client.get(f"/api/v1/prompts/{own['id']}", headers=h), 404, "prompt_not_found")
    # And tenant A's data is intact.
    assert (await client.get(f"/api/v1/prompts/{prompt['id']}", headers=h)).json()["name"] == "a-secret"
    assert (await client.get(f"/api/v1/invitations/{invitation['id']}", headers=h)).json()["status"] == "pending"
