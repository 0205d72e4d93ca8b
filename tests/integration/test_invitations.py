"""/api/v1/invitations and registering with an invitation: single-use, expiring, revocable tokens
bound to an email that let people in while registration is closed."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import httpx
import pytest
from sqlalchemy import text

from infra.db.engine import Database
from tests.integration.test_access import User, app, user  # noqa: F401  (app: cheap password hashing)
from tests.integration.test_auth import events_of, register
from tests.integration.test_http_platform import assert_problem

URL = "/api/v1/invitations"


@pytest.fixture
async def ada(client: httpx.AsyncClient, db: Database) -> User:
    return await user(client, "ada@example.com")


@pytest.fixture
async def bob(client: httpx.AsyncClient, ada: User) -> User:
    return await user(client, "bob@example.com")


async def invite(client: httpx.AsyncClient, by: User, email: str, role: str = "user") -> httpx.Response:
    return await client.post(URL, json={"email": email, "role": role}, headers=by.headers)


async def close_registration(client: httpx.AsyncClient, admin: User) -> None:
    resp = await client.patch("/api/v1/admin/settings", json={"registration_open": False}, headers=admin.headers)
    assert resp.status_code == 200, resp.text


async def test_an_invitee_registers_while_registration_is_closed(
    client: httpx.AsyncClient, db: Database, ada: User
) -> None:
    await close_registration(client, ada)
    assert_problem(await register(client, "carol@example.com"), 403, "registration_closed")
    resp = await invite(client, ada, "Carol@Example.com")
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert (created["object"], created["email"], created["role"], created["status"]) == (
        "invitation",
        "carol@example.com",
        "user",
        "pending",
    )
    token = created["token"]
    assert token.startswith("lsi_")
    assert len(token) == 4 + 43
    async with db.read() as s:
        stored = (await s.execute(text("SELECT token_hash, expires_at - created_at FROM invitations"))).one()
    assert stored[0] == hashlib.sha256(token.encode()).digest()
    assert stored[1].days == 7
    fetched = (await client.get(f"{URL}/{created['id']}", headers=ada.headers)).json()
    assert "token" not in fetched
    assert fetched["status"] == "pending"

    joined = await register(client, "carol@example.com", invitation_token=token)
    assert joined.status_code == 201, joined.text
    carol = joined.json()["user"]
    assert (carol["role"], carol["tenant_id"]) == ("user", ada.tenant_id)
    after = (await client.get(f"{URL}/{created['id']}", headers=ada.headers)).json()
    assert (after["status"], after["accepted_by"]) == ("accepted", carol["id"])
    assert after["accepted_at"] is not None
    assert_problem(await register(client, "carol@example.com", invitation_token=token), 410, "invitation_used")
    accepted = await events_of(db, "identity.invitation_accepted.v1")
    assert [e["data"]["user_id"] for e in accepted] == [carol["id"]]
    invited = await events_of(db, "identity.invitation_created.v1")
    assert token not in str(invited)
    assert_problem(await client.delete(f"{URL}/{created['id']}", headers=ada.headers), 409, "invitation_used")


async def test_an_admin_invitation_makes_an_admin(client: httpx.AsyncClient, ada: User) -> None:
    token = (await invite(client, ada, "dan@example.com", "admin")).json()["token"]
    joined = await register(client, "dan@example.com", invitation_token=token)
    assert joined.status_code == 201, joined.text
    assert joined.json()["user"]["role"] == "admin"


async def test_only_holders_of_manage_users_invite_and_only_admins_invite_admins(
    client: httpx.AsyncClient, ada: User, bob: User
) -> None:
    some = str(uuid.uuid4())
    assert_problem(await invite(client, bob, "x@example.com"), 403, "forbidden")
    assert_problem(await client.get(URL, headers=bob.headers), 403, "forbidden")
    assert_problem(await client.get(f"{URL}/{some}", headers=bob.headers), 403, "forbidden")
    assert_problem(await client.delete(f"{URL}/{some}", headers=bob.headers), 403, "forbidden")
    granted = await client.patch(
        f"/api/v1/admin/users/{bob.id}", json={"permissions": ["manage_users"]}, headers=ada.headers
    )
    assert granted.status_code == 200, granted.text
    assert (await invite(client, bob, "x@example.com")).status_code == 201
    assert_problem(await invite(client, bob, "y@example.com", "admin"), 403, "forbidden")
    assert (await invite(client, ada, "y@example.com", "admin")).status_code == 201


async def test_mismatched_unknown_revoked_and_expired_invitations_let_nobody_in(
    client: httpx.AsyncClient, db: Database, ada: User
) -> None:
    first = (await invite(client, ada, "carol@example.com")).json()
    mismatch = await register(client, "mallory@example.com", invitation_token=first["token"])
    assert_problem(mismatch, 403, "invitation_email_mismatch")
    assert_problem(
        await register(client, "carol@example.com", invitation_token="lsi_nope"), 404, "invitation_not_found"
    )
    assert_problem(await register(client, "carol@example.com", invitation_token="x"), 404, "invitation_not_found")

    assert (await client.delete(f"{URL}/{first['id']}", headers=ada.headers)).status_code == 204
    assert (await client.delete(f"{URL}/{first['id']}", headers=ada.headers)).status_code == 204  # idempotent
    revoked = await register(client, "carol@example.com", invitation_token=first["token"])
    assert_problem(revoked, 410, "invitation_revoked")
    assert (await client.get(f"{URL}/{first['id']}", headers=ada.headers)).json()["status"] == "revoked"

    second = (await invite(client, ada, "dan@example.com")).json()
    async with db.write() as s:
        await s.execute(
            text("UPDATE invitations SET expires_at = now() - interval '1 second' WHERE id = :i"), {"i": second["id"]}
        )
    expired = await register(client, "dan@example.com", invitation_token=second["token"])
    assert_problem(expired, 410, "invitation_expired")
    listed = (await client.get(URL, params={"status": "expired"}, headers=ada.headers)).json()["data"]
    assert [i["id"] for i in listed] == [second["id"]]
    async with db.read() as s:
        assert (await s.execute(text("SELECT count(*) FROM users"))).scalar_one() == 1
    revokes = await events_of(db, "identity.invitation_revoked.v1")
    assert [e["data"]["reason"] for e in revokes] == ["revoked"]


async def test_inviting_again_replaces_the_pending_invitation(
    client: httpx.AsyncClient, db: Database, ada: User, bob: User
) -> None:
    old = (await invite(client, ada, "carol@example.com")).json()
    new = (await invite(client, ada, "carol@example.com")).json()
    assert (await client.get(f"{URL}/{old['id']}", headers=ada.headers)).json()["status"] == "revoked"
    assert_problem(
        await register(client, "carol@example.com", invitation_token=old["token"]), 410, "invitation_revoked"
    )
    assert (await register(client, "carol@example.com", invitation_token=new["token"])).status_code == 201
    assert_problem(await invite(client, ada, "bob@example.com"), 409, "email_taken")
    replaced = await events_of(db, "identity.invitation_revoked.v1")
    assert [(e["data"]["invitation_id"], e["data"]["reason"]) for e in replaced] == [(old["id"], "replaced")]


async def test_two_registrations_racing_with_one_token_make_one_account(
    client: httpx.AsyncClient, db: Database, ada: User
) -> None:
    token = (await invite(client, ada, "carol@example.com")).json()["token"]
    results = await asyncio.gather(
        *(register(client, "carol@example.com", invitation_token=token, name=f"c{i}") for i in range(3))
    )
    assert sorted(r.status_code for r in results) == [201, 410, 410], [r.text for r in results]
    async with db.read() as s:
        count = await s.execute(text("SELECT count(*) FROM users WHERE email = 'carol@example.com'"))
        assert count.scalar_one() == 1


async def test_invitations_list_pages_and_filters(client: httpx.AsyncClient, ada: User) -> None:
    ids = [(await invite(client, ada, f"p{i}@example.com")).json()["id"] for i in range(3)]
    await client.delete(f"{URL}/{ids[0]}", headers=ada.headers)
    first = await client.get(URL, params={"limit": 2}, headers=ada.headers)
    body = first.json()
    assert (body["object"], body["has_more"]) == ("list", True)
    assert [i["id"] for i in body["data"]] == [ids[2], ids[1]]
    assert 'rel="next"' in first.headers["link"]
    rest = (await client.get(URL, params={"limit": 2, "cursor": body["next_cursor"]}, headers=ada.headers)).json()
    assert [i["id"] for i in rest["data"]] == [ids[0]]
    pending = (await client.get(URL, params={"status": "pending"}, headers=ada.headers)).json()["data"]
    assert [i["id"] for i in pending] == [ids[2], ids[1]]
    revoked = (await client.get(URL, params={"status": "revoked"}, headers=ada.headers)).json()["data"]
    assert [i["id"] for i in revoked] == [ids[0]]


async def test_bad_input_on_invitation_routes_is_a_problem(client: httpx.AsyncClient, ada: User) -> None:
    assert_problem(
        await client.post(URL, json={"email": "x@example.com", "role": "owner"}, headers=ada.headers),
        400,
        "validation_error",
    )
    assert_problem(await client.post(URL, json={}, headers=ada.headers), 400, "validation_error")
    assert_problem(await invite(client, ada, "not-an-email"), 422, "invalid_email")
    assert_problem(await client.get(URL, params={"status": "bogus"}, headers=ada.headers), 400, "validation_error")
    assert_problem(await client.get(URL, params={"cursor": "!!"}, headers=ada.headers), 400, "invalid_cursor")
    assert_problem(await client.get(f"{URL}/nope", headers=ada.headers), 400, "validation_error")
    assert_problem(await client.get(f"{URL}/{uuid.uuid4()}", headers=ada.headers), 404, "invitation_not_found")
    assert_problem(await client.delete(f"{URL}/{uuid.uuid4()}", headers=ada.headers), 404, "invitation_not_found")
    long_token = await register(client, "x@example.com", invitation_token="lsi_" + "a" * 300)
    assert_problem(long_token, 400, "validation_error")
    assert_problem(await client.get(URL), 401, "unauthenticated")
