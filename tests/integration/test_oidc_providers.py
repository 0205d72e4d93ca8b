"""OpenID Connect providers' administration (``/api/v1/admin/oidc-providers``): the client secret
is write-only, input is validated, only admins manage them, other tenants cannot see them, pages
come newest first, production refuses plain-http issuers."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
from sqlalchemy import insert, text

from api.services import Services
from domain.shared.events import EventMetadata
from domain.shared.ids import new_id
from infra.db.engine import Database
from infra.db.tables.identity import tenants, users
from infra.identity.accounts import Account, Accounts
from tests.fakes.oidc_provider import Client, FakeOidcProvider
from tests.integration import test_oidc as oidc_tests
from tests.integration.test_access import User, user
from tests.integration.test_auth import bearer, events_of
from tests.integration.test_http_platform import assert_problem
from tests.integration.test_oidc import (
    ADMIN_URL,
    SECRET,
    create_provider,
)

provider_server = oidc_tests.provider_server
idp = oidc_tests.idp
app = oidc_tests.app
admin = oidc_tests.admin


async def test_the_client_secret_is_write_only(
    client: httpx.AsyncClient, db: Database, idp: FakeOidcProvider, admin: User
) -> None:
    created = await create_provider(client, admin, idp)
    assert created["has_client_secret"] is True
    assert created["object"] == "oidc_provider"
    assert created["scopes"] == ["openid", "email", "profile"]
    url = f"{ADMIN_URL}/{created['id']}"
    got = await client.get(url, headers=admin.headers)
    listed = await client.get(ADMIN_URL, headers=admin.headers)
    rotated = await client.patch(url, json={"client_secret": "rotated-secret-9999"}, headers=admin.headers)
    assert rotated.status_code == 200, rotated.text
    for resp in (got, listed, rotated):
        assert SECRET not in resp.text
        assert "rotated-secret-9999" not in resp.text
        assert '"client_secret"' not in resp.text
    assert [p["id"] for p in listed.json()["data"]] == [created["id"]]
    async with db.read() as s:
        stored = (await s.execute(text("SELECT client_secret FROM oidc_providers"))).scalar_one()
        everything = (await s.execute(text("SELECT string_agg(data::text || metadata::text, '') FROM events"))).scalar()
    assert SECRET not in stored
    assert "rotated-secret-9999" not in stored
    assert SECRET not in everything
    assert "rotated-secret-9999" not in everything
    cleared = await client.patch(url, json={"client_secret": None, "name": "Acme SSO"}, headers=admin.headers)
    assert cleared.json()["has_client_secret"] is False
    assert cleared.json()["name"] == "Acme SSO"
    updated = await events_of(db, "identity.oidc_provider_updated.v1")
    assert [e["data"]["changed"] for e in updated] == [["client_secret"], ["name", "client_secret"]]
    created_events = await events_of(db, "identity.oidc_provider_created.v1")
    assert created_events[0]["data"]["has_client_secret"] is True
    assert created_events[0]["metadata"]["actor"] == f"user:{admin.id}"
    deleted = await client.delete(url, headers=admin.headers)
    assert deleted.status_code == 204
    assert_problem(await client.get(url, headers=admin.headers), 404, "oidc_provider_not_found")
    assert [e["data"]["slug"] for e in await events_of(db, "identity.oidc_provider_deleted.v1")] == ["acme"]


async def test_provider_input_is_validated(client: httpx.AsyncClient, idp: FakeOidcProvider, admin: User) -> None:
    await create_provider(client, admin, idp)
    base = {"slug": "x", "name": "X", "issuer": idp.issuer, "client_id": "c"}

    async def post(**changes: Any) -> httpx.Response:
        return await client.post(ADMIN_URL, json={**base, **changes}, headers=admin.headers)

    assert_problem(await post(slug="acme"), 409, "oidc_provider_slug_taken")
    assert_problem(await post(slug="Not_Valid"), 400, "validation_error")
    assert_problem(await post(issuer="http://idp.example"), 400, "validation_error")
    assert_problem(await post(issuer="ftp://127.0.0.1/"), 400, "validation_error")
    assert_problem(await post(scopes=["email"]), 400, "validation_error")
    assert_problem(await post(name=" "), 400, "validation_error")
    assert_problem(await post(unknown=1), 400, "validation_error")
    assert_problem(await post(issuer="http://127.0.0.1:1"), 422, "oidc_discovery_failed")
    assert_problem(await post(issuer=f"{idp.issuer}/elsewhere"), 422, "oidc_discovery_failed")
    ok = await post(scopes=["openid", "openid", "groups"], enabled=False)
    assert ok.status_code == 201, ok.text
    assert ok.json()["scopes"] == ["openid", "groups"]
    url = f"{ADMIN_URL}/{ok.json()['id']}"
    assert_problem(await client.patch(url, json={"slug": "y"}, headers=admin.headers), 400, "validation_error")
    assert_problem(await client.patch(url, json={"scopes": []}, headers=admin.headers), 400, "validation_error")
    bad_issuer = await client.patch(url, json={"issuer": "http://127.0.0.1:1"}, headers=admin.headers)
    assert_problem(bad_issuer, 422, "oidc_discovery_failed")
    assert_problem(await client.get(f"{ADMIN_URL}/not-a-uuid", headers=admin.headers), 400, "validation_error")


async def test_only_admins_manage_providers(client: httpx.AsyncClient, idp: FakeOidcProvider, admin: User) -> None:
    created = await create_provider(client, admin, idp)
    bob = await user(client, "bob@example.com")
    url = f"{ADMIN_URL}/{created['id']}"
    body = {"slug": "b", "name": "B", "issuer": idp.issuer, "client_id": "c"}
    assert_problem(await client.get(ADMIN_URL, headers=bob.headers), 403, "forbidden")
    assert_problem(await client.post(ADMIN_URL, json=body, headers=bob.headers), 403, "forbidden")
    assert_problem(await client.get(url, headers=bob.headers), 403, "forbidden")
    assert_problem(await client.patch(url, json={"name": "x"}, headers=bob.headers), 403, "forbidden")
    assert_problem(await client.delete(url, headers=bob.headers), 403, "forbidden")
    assert_problem(await client.get(ADMIN_URL), 401, "unauthenticated")
    assert (await client.get(url, headers=admin.headers)).json()["name"] == "Acme"


async def test_another_tenant_cannot_see_the_providers(
    client: httpx.AsyncClient, services: Services, idp: FakeOidcProvider, admin: User
) -> None:
    created = await create_provider(client, admin, idp)
    tenant_id, user_id = new_id(), new_id()
    async with services.db.write() as s:
        await s.execute(insert(tenants).values(id=tenant_id, slug="globex", name="Globex"))
        row = (
            await s.execute(
                insert(users)
                .values(id=user_id, tenant_id=tenant_id, email="boss@globex.example", role="admin")
                .returning(users)
            )
        ).one()
        account = Account(
            id=row.id, tenant_id=tenant_id, email=row.email, name=None, role="admin", created_at=row.created_at
        )
        tokens = await Accounts(s, services.passwords, services.token_signer()).start_session(
            account, "password", EventMetadata(), ip=None, agent=None
        )
    other = bearer(tokens.access_token)
    url = f"{ADMIN_URL}/{created['id']}"
    listed = await client.get(ADMIN_URL, headers=other)
    assert listed.status_code == 200
    assert listed.json()["data"] == []
    assert_problem(await client.get(url, headers=other), 404, "oidc_provider_not_found")
    assert_problem(await client.patch(url, json={"name": "mine"}, headers=other), 404, "oidc_provider_not_found")
    assert_problem(await client.delete(url, headers=other), 404, "oidc_provider_not_found")
    assert (await client.get(url, headers=admin.headers)).json()["name"] == "Acme"
    # Their own provider gets a globally unique slug too.
    idp.clients["g"] = Client("g", None)
    taken = await client.post(
        ADMIN_URL, json={"slug": "acme", "name": "G", "issuer": idp.issuer, "client_id": "g"}, headers=other
    )
    assert_problem(taken, 409, "oidc_provider_slug_taken")


async def test_providers_are_listed_newest_first_in_pages(
    client: httpx.AsyncClient, idp: FakeOidcProvider, admin: User
) -> None:
    ids = [(await create_provider(client, admin, idp, slug=f"p{i}"))["id"] for i in range(3)]
    first = await client.get(f"{ADMIN_URL}?limit=2", headers=admin.headers)
    assert first.status_code == 200, first.text
    page = first.json()
    assert page["object"] == "list"
    assert [p["id"] for p in page["data"]] == ids[::-1][:2]
    assert page["has_more"] is True
    assert 'rel="next"' in first.headers["link"]
    rest = await client.get(f"{ADMIN_URL}?limit=2&cursor={page['next_cursor']}", headers=admin.headers)
    assert [p["id"] for p in rest.json()["data"]] == [ids[0]]
    assert rest.json()["has_more"] is False
    assert_problem(await client.get(f"{ADMIN_URL}?cursor=bogus", headers=admin.headers), 400, "invalid_cursor")


async def test_production_refuses_plain_http_issuers(
    client: httpx.AsyncClient, services: Services, idp: FakeOidcProvider, admin: User
) -> None:
    services.settings = msgspec.structs.replace(services.settings, env="production")
    body = {"slug": "local", "name": "Local", "issuer": idp.issuer, "client_id": "c"}
    assert_problem(await client.post(ADMIN_URL, json=body, headers=admin.headers), 400, "validation_error")
