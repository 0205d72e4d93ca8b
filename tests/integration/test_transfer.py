"""Ownership transfer on a prompt's ACL: the owner hands the prompt to another active user of the
tenant and stays on as a manager, in one transaction with its audit events."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, text

from domain.shared.ids import new_id
from infra.db.engine import Database
from infra.db.tables.identity import tenants, users
from tests.integration.test_access import URL, User, app, grant, prompt_of, user  # noqa: F401  (app: cheap hashing)
from tests.integration.test_auth import events_of
from tests.integration.test_http_platform import assert_problem


@pytest.fixture
async def ada(client: httpx.AsyncClient, db: Database) -> User:
    return await user(client, "ada@example.com")


@pytest.fixture
async def bob(client: httpx.AsyncClient, ada: User) -> User:
    return await user(client, "bob@example.com")


async def transfer(client: httpx.AsyncClient, by: User, prompt_id: str, to: str) -> httpx.Response:
    return await client.post(f"{URL}/{prompt_id}/acl/transfer", json={"user_id": to}, headers=by.headers)


async def roles(client: httpx.AsyncClient, who: User, prompt_id: str) -> dict[str, str]:
    resp = await client.get(f"{URL}/{prompt_id}/acl", headers=who.headers)
    assert resp.status_code == 200, resp.text
    return {g["grantee_id"]: g["role"] for g in resp.json()["data"]}


async def grant_id_of(client: httpx.AsyncClient, who: User, prompt_id: str, grantee: str) -> str:
    resp = await client.get(f"{URL}/{prompt_id}/acl", headers=who.headers)
    return str(next(g["id"] for g in resp.json()["data"] if g["grantee_id"] == grantee))


async def test_the_new_user_owns_and_the_old_owner_manages(
    client: httpx.AsyncClient, db: Database, ada: User, bob: User
) -> None:
    p = await prompt_of(client, ada)
    resp = await transfer(client, ada, p["id"], bob.id)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "list"
    assert {g["grantee_id"]: g["role"] for g in body["data"]} == {ada.id: "manager", bob.id: "owner"}
    assert await roles(client, bob, p["id"]) == {ada.id: "manager", bob.id: "owner"}

    # The old owner lost what only owners may do; the new owner has it.
    assert_problem(await client.delete(f"{URL}/{p['id']}", headers=ada.headers), 403, "forbidden")
    assert_problem(await transfer(client, ada, p["id"], ada.id), 403, "forbidden")
    revoke_owner = await client.delete(
        f"{URL}/{p['id']}/acl/{await grant_id_of(client, ada, p['id'], bob.id)}", headers=ada.headers
    )
    assert_problem(revoke_owner, 403, "owner_cannot_be_revoked")
    revoke_ada = await client.delete(
        f"{URL}/{p['id']}/acl/{await grant_id_of(client, bob, p['id'], ada.id)}", headers=bob.headers
    )
    assert revoke_ada.status_code == 204, revoke_ada.text
    assert_problem(await client.get(f"{URL}/{p['id']}", headers=ada.headers), 404, "prompt_not_found")

    (moved,) = await events_of(db, "access.ownership_transferred.v1")
    assert moved["stream_id"] == f"acl-prompt-{p['id']}"
    assert moved["data"]["from_user_id"] == ada.id
    assert moved["data"]["to_user_id"] == bob.id
    assert moved["metadata"]["actor"] == f"user:{ada.id}"
    changes = [
        (e["data"]["grantee_id"], e["data"]["previous_role"], e["data"]["role"])
        for e in await events_of(db, "access.grant_changed.v1")
    ]
    assert changes[1:3] == [(ada.id, "owner", "manager"), (bob.id, None, "owner")]


async def test_an_existing_grant_of_the_target_is_raised_not_duplicated(
    client: httpx.AsyncClient, db: Database, ada: User, bob: User
) -> None:
    p = await prompt_of(client, ada)
    assert (await grant(client, ada, p["id"], bob.id, "viewer")).status_code == 201
    assert (await transfer(client, ada, p["id"], bob.id)).status_code == 200
    assert await roles(client, bob, p["id"]) == {ada.id: "manager", bob.id: "owner"}
    async with db.read() as s:
        count = (await s.execute(text("SELECT count(*) FROM acl_grants"))).scalar_one()
    assert count == 2


async def test_only_the_owner_may_transfer(client: httpx.AsyncClient, db: Database, ada: User, bob: User) -> None:
    carol = await user(client, "carol@example.com")
    p = await prompt_of(client, ada)
    for role in ("viewer", "editor", "manager"):
        assert (await grant(client, ada, p["id"], bob.id, role)).status_code in (200, 201)
        assert_problem(await transfer(client, bob, p["id"], bob.id), 403, "forbidden")
        assert_problem(await transfer(client, bob, p["id"], carol.id), 403, "forbidden")
    assert await roles(client, ada, p["id"]) == {ada.id: "owner", bob.id: "manager"}
    assert await events_of(db, "access.ownership_transferred.v1") == []


async def test_an_invisible_or_missing_prompt_is_404(
    client: httpx.AsyncClient, db: Database, ada: User, bob: User
) -> None:
    p = await prompt_of(client, ada)
    assert_problem(await transfer(client, bob, p["id"], bob.id), 404, "prompt_not_found")
    assert_problem(await transfer(client, ada, str(uuid.uuid4()), bob.id), 404, "prompt_not_found")
    assert await roles(client, ada, p["id"]) == {ada.id: "owner"}


async def test_the_target_must_be_an_active_user_of_the_tenant(
    client: httpx.AsyncClient, db: Database, ada: User, bob: User
) -> None:
    other_tenant, stranger = new_id(), new_id()
    async with db.write() as s:
        await s.execute(insert(tenants).values(id=other_tenant, slug="other", name="Other"))
        await s.execute(
            insert(users).values(id=stranger, tenant_id=other_tenant, email="eve@example.com", role="admin")
        )
        await s.execute(text("UPDATE users SET disabled_at = now() WHERE id = :id"), {"id": uuid.UUID(bob.id)})
    p = await prompt_of(client, ada)
    for target in (str(stranger), bob.id, str(uuid.uuid4())):
        assert_problem(await transfer(client, ada, p["id"], target), 404, "user_not_found")
    assert await roles(client, ada, p["id"]) == {ada.id: "owner"}


async def test_transferring_to_oneself_changes_nothing(client: httpx.AsyncClient, db: Database, ada: User) -> None:
    p = await prompt_of(client, ada)
    resp = await transfer(client, ada, p["id"], ada.id)
    assert resp.status_code == 200, resp.text
    assert await roles(client, ada, p["id"]) == {ada.id: "owner"}
    assert await events_of(db, "access.ownership_transferred.v1") == []


async def test_bad_bodies_are_400_problems(client: httpx.AsyncClient, ada: User) -> None:
    p = await prompt_of(client, ada)
    bodies: list[Any] = [{}, {"user_id": "not-a-uuid"}, {"user_id": 5}, []]
    for body in bodies:
        resp = await client.post(f"{URL}/{p['id']}/acl/transfer", json=body, headers=ada.headers)
        assert_problem(resp, 400, "validation_error")
    assert_problem(
        await client.post(f"{URL}/not-a-uuid/acl/transfer", json={"user_id": ada.id}, headers=ada.headers),
        400,
        "validation_error",
    )
    assert_problem(await client.post(f"{URL}/{p['id']}/acl/transfer", json={"user_id": ada.id}), 401, "unauthenticated")
