"""/api/v1/admin/users and /api/v1/admin/settings: tenant administrators manage users (roles,
permissions, disabling) and open or close registration."""

from __future__ import annotations

import uuid

import httpx
import msgspec
import pytest
from sqlalchemy import text

from api.services import Services
from infra.db.engine import Database
from tests.integration.test_access import User, app, user  # noqa: F401  (app: cheap password hashing)
from tests.integration.test_auth import PASSWORD, bearer, events_of, register
from tests.integration.test_http_platform import assert_problem

USERS = "/api/v1/admin/users"
SETTINGS = "/api/v1/admin/settings"


@pytest.fixture
async def ada(client: httpx.AsyncClient, db: Database) -> User:
    return await user(client, "ada@example.com")


@pytest.fixture
async def bob(client: httpx.AsyncClient, ada: User) -> User:
    return await user(client, "bob@example.com")


async def patch_user(client: httpx.AsyncClient, by: User, target: str, **body: object) -> httpx.Response:
    return await client.patch(f"{USERS}/{target}", json=body, headers=by.headers)


async def test_admins_open_and_close_registration(
    client: httpx.AsyncClient, db: Database, ada: User, bob: User
) -> None:
    assert (await client.get(SETTINGS, headers=ada.headers)).json() == {
        "object": "tenant_settings",
        "registration_open": True,
        "registration_open_source": "default",
        "default_chat_model_id": None,
        "default_embedding_model_id": None,
        "outbound_allow": [],
    }
    closed = await client.patch(SETTINGS, json={"registration_open": False}, headers=ada.headers)
    assert closed.status_code == 200, closed.text
    assert (closed.json()["registration_open"], closed.json()["registration_open_source"]) == (False, "admin")
    assert_problem(await register(client, "carol@example.com"), 403, "registration_closed")
    unchanged = await client.patch(SETTINGS, json={}, headers=ada.headers)
    assert unchanged.json()["registration_open"] is False
    reset = await client.patch(SETTINGS, json={"registration_open": None}, headers=ada.headers)
    assert (reset.json()["registration_open"], reset.json()["registration_open_source"]) == (True, "default")
    assert (await register(client, "carol@example.com")).status_code == 201
    assert_problem(await client.get(SETTINGS, headers=bob.headers), 403, "forbidden")
    assert_problem(
        await client.patch(SETTINGS, json={"registration_open": True}, headers=bob.headers), 403, "forbidden"
    )
    bad = await client.patch(SETTINGS, json={"registration_open": "yes"}, headers=ada.headers)
    assert_problem(bad, 400, "validation_error")
    changes = await events_of(db, "identity.tenant_settings_changed.v1")
    assert [(e["data"]["registration_open"], e["data"]["changed"]) for e in changes] == [
        (False, ["registration_open"]),
        (None, ["registration_open"]),
    ]
    assert changes[0]["metadata"]["actor"] == f"user:{ada.id}"


async def test_the_instance_default_can_start_closed(client: httpx.AsyncClient, services: Services, ada: User) -> None:
    services.settings = msgspec.structs.replace(services.settings, registration_open=False)
    assert_problem(await register(client, "carol@example.com"), 403, "registration_closed")
    body = (await client.get(SETTINGS, headers=ada.headers)).json()
    assert (body["registration_open"], body["registration_open_source"]) == (False, "default")
    await client.patch(SETTINGS, json={"registration_open": True}, headers=ada.headers)
    assert (await register(client, "carol@example.com")).status_code == 201


async def test_admins_list_search_and_get_users(client: httpx.AsyncClient, ada: User, bob: User) -> None:
    carol = await user(client, "carol@example.com")
    first = await client.get(USERS, params={"limit": 2}, headers=ada.headers)
    assert first.status_code == 200, first.text
    body = first.json()
    assert [u["id"] for u in body["data"]] == [carol.id, bob.id]
    assert body["has_more"] is True
    rest = (await client.get(USERS, params={"limit": 2, "cursor": body["next_cursor"]}, headers=ada.headers)).json()
    assert [u["id"] for u in rest["data"]] == [ada.id]
    found = (await client.get(USERS, params={"q": "BO"}, headers=ada.headers)).json()["data"]
    assert [u["email"] for u in found] == ["bob@example.com"]
    assert (await client.get(USERS, params={"q": "%"}, headers=ada.headers)).json()["data"] == []
    one = (await client.get(f"{USERS}/{bob.id}", headers=ada.headers)).json()
    assert (one["object"], one["role"], one["permissions"], one["disabled"]) == ("user", "user", [], False)
    assert_problem(await client.get(USERS, headers=bob.headers), 403, "forbidden")
    assert_problem(await client.get(f"{USERS}/{ada.id}", headers=bob.headers), 403, "forbidden")
    assert_problem(await client.get(f"{USERS}/{uuid.uuid4()}", headers=ada.headers), 404, "user_not_found")


async def test_disabling_a_user_ends_their_sessions_and_keys(
    client: httpx.AsyncClient, db: Database, ada: User, bob: User
) -> None:
    login = (await client.post("/api/v1/auth/login", json={"email": "bob@example.com", "password": PASSWORD})).json()
    key = (await client.post("/api/v1/api-keys", json={"name": "k"}, headers=bob.headers)).json()["key"]
    resp = await patch_user(client, ada, bob.id, disabled=True)
    assert resp.status_code == 200, resp.text
    assert resp.json()["disabled"] is True
    assert resp.json()["disabled_at"] is not None
    assert_problem(await client.get("/api/v1/me", headers=bob.headers), 401, "unauthenticated")
    assert_problem(await client.get("/api/v1/me", headers=bearer(key)), 401, "unauthenticated")
    refresh = await client.post("/api/v1/auth/refresh", json={"refresh_token": login["refresh_token"]})
    assert_problem(refresh, 401, "unauthenticated")
    again = await client.post("/api/v1/auth/login", json={"email": "bob@example.com", "password": PASSWORD})
    assert_problem(again, 401, "unauthenticated")
    async with db.read() as s:
        reasons = (
            await s.execute(text("SELECT revoked_reason FROM auth_sessions WHERE user_id = :u"), {"u": bob.id})
        ).scalars()
        assert list(reasons) == ["disabled", "disabled"]
    revoked = await events_of(db, "identity.session_revoked.v1")
    assert [e["data"]["reason"] for e in revoked] == ["disabled", "disabled"]
    disabled = (await client.get(USERS, params={"disabled": "true"}, headers=ada.headers)).json()["data"]
    assert [u["id"] for u in disabled] == [bob.id]

    assert (await patch_user(client, ada, bob.id, disabled=False)).json()["disabled"] is False
    back = await client.post("/api/v1/auth/login", json={"email": "bob@example.com", "password": PASSWORD})
    assert back.status_code == 200, back.text
    assert_problem(
        await client.get("/api/v1/me", headers=bob.headers), 401, "unauthenticated"
    )  # old session stays ended
    updated = await events_of(db, "identity.user_updated.v1")
    assert [(e["data"]["changed"], e["data"]["disabled"]) for e in updated] == [
        (["disabled"], True),
        (["disabled"], False),
    ]


async def test_roles_and_permissions_are_for_admins(
    client: httpx.AsyncClient, db: Database, ada: User, bob: User
) -> None:
    carol = await user(client, "carol@example.com")
    granted = await patch_user(client, ada, bob.id, permissions=["manage_users", "view_audit"], name="Bob")
    assert granted.status_code == 200, granted.text
    assert (granted.json()["permissions"], granted.json()["name"]) == (["manage_users", "view_audit"], "Bob")
    bad = await patch_user(client, ada, bob.id, permissions=["manage_users", "rule_the_world"])
    body = assert_problem(bad, 400, "validation_error")
    assert body["errors"][0]["pointer"] == "/permissions/1"
    # bob holds manage_users but is no admin: he lists users and disables non-admins, nothing more.
    assert (await client.get(USERS, headers=bob.headers)).status_code == 200
    assert_problem(await patch_user(client, bob, carol.id, role="admin"), 403, "forbidden")
    assert_problem(await patch_user(client, bob, carol.id, permissions=["view_audit"]), 403, "forbidden")
    assert_problem(await patch_user(client, bob, bob.id, permissions=[]), 403, "forbidden")
    assert_problem(await patch_user(client, bob, ada.id, disabled=True), 403, "forbidden")
    assert (await patch_user(client, bob, carol.id, disabled=True)).json()["disabled"] is True
    assert_problem(await patch_user(client, bob, bob.id, disabled=True), 409, "cannot_disable_self")
    promoted = await patch_user(client, ada, carol.id, role="admin", disabled=False)
    assert (promoted.json()["role"], promoted.json()["disabled"]) == ("admin", False)
    me = (await client.get("/api/v1/me", headers=(await _login(client, "carol@example.com")))).json()
    assert me["user"]["role"] == "admin"
    updated = await events_of(db, "identity.user_updated.v1")
    assert [e["data"]["changed"] for e in updated] == [["name", "permissions"], ["disabled"], ["disabled", "role"]]


async def _login(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    resp = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    return bearer(resp.json()["access_token"])


async def test_a_tenant_keeps_an_active_admin(client: httpx.AsyncClient, ada: User, bob: User) -> None:
    assert_problem(await patch_user(client, ada, ada.id, role="user"), 409, "last_admin")
    assert_problem(await patch_user(client, ada, ada.id, disabled=True), 409, "cannot_disable_self")
    assert (await patch_user(client, ada, bob.id, role="admin")).status_code == 200
    assert (await patch_user(client, ada, bob.id, disabled=True)).status_code == 200
    assert_problem(await patch_user(client, ada, ada.id, role="user"), 409, "last_admin")  # bob is disabled
    assert (await patch_user(client, ada, bob.id, disabled=False)).status_code == 200
    bob = User(id=bob.id, tenant_id=bob.tenant_id, headers=await _login(client, "bob@example.com"))
    demoted = await patch_user(client, bob, ada.id, role="user")
    assert demoted.json()["role"] == "user", demoted.text
    assert_problem(await patch_user(client, bob, bob.id, role="user"), 409, "last_admin")
    assert_problem(await client.get(USERS, headers=ada.headers), 403, "forbidden")  # ada lost manage_users


async def test_bad_input_on_admin_user_routes_is_a_problem(client: httpx.AsyncClient, ada: User, bob: User) -> None:
    assert_problem(await patch_user(client, ada, bob.id, role="owner"), 400, "validation_error")
    assert_problem(await patch_user(client, ada, bob.id, disabled="no"), 400, "validation_error")
    assert_problem(await patch_user(client, ada, bob.id, name="x" * 201), 400, "validation_error")
    assert_problem(await patch_user(client, ada, "nope", role="user"), 400, "validation_error")
    assert_problem(await patch_user(client, ada, str(uuid.uuid4()), role="user"), 404, "user_not_found")
    assert_problem(await client.get(USERS, params={"disabled": "maybe"}, headers=ada.headers), 400, "validation_error")
    assert_problem(await client.get(USERS, params={"q": "x" * 201}, headers=ada.headers), 400, "validation_error")
    assert_problem(await client.get(USERS, params={"cursor": "zz"}, headers=ada.headers), 400, "invalid_cursor")
    assert_problem(await client.get(USERS), 401, "unauthenticated")
