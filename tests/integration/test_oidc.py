"""OpenID Connect sign-in end to end against a real (fake) provider on a loopback port: the API
runs in process, the browser's leg to the provider goes over real HTTP, and the API's code
exchange and key fetches go over real HTTP too. The providers' administration:
test_oidc_providers.py."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import msgspec
import pytest
from litestar import Litestar
from sqlalchemy import text

from api.app import create_app
from api.services import Services
from infra.db.engine import Database
from infra.identity.passwords import PasswordHasher
from infra.settings import Settings
from tests.fakes.oidc_provider import Client, FakeOidcProvider, FakeUser
from tests.integration.test_access import User, user
from tests.integration.test_auth import bearer, events_of
from tests.integration.test_http_platform import assert_problem

ADMIN_URL = "/api/v1/admin/oidc-providers"
SECRET = "very-secret-client-value-4242"
APP_ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def provider_server() -> Iterator[FakeOidcProvider]:
    fake = FakeOidcProvider()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def idp(provider_server: FakeOidcProvider) -> FakeOidcProvider:
    provider_server.reset()
    return provider_server


@pytest.fixture
def app(settings: Settings, services: Services) -> Litestar:
    services.passwords = PasswordHasher(memory_kib=1024, time_cost=1)
    services.settings = msgspec.structs.replace(
        settings, http=msgspec.structs.replace(settings.http, cors_origins=(APP_ORIGIN,))
    )
    return create_app(services.settings, services=services)


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    """The browser's leg to the identity provider: real HTTP, redirects not followed."""
    async with httpx.AsyncClient(timeout=10) as c:
        yield c


@pytest.fixture
async def admin(client: httpx.AsyncClient, db: Database) -> User:
    return await user(client, "root@example.com")  # the first account is the tenant's admin


async def create_provider(
    client: httpx.AsyncClient,
    admin: User,
    idp: FakeOidcProvider,
    slug: str = "acme",
    secret: str | None = SECRET,
    client_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    client_id = client_id or f"liteskill-{slug}"
    idp.clients[client_id] = Client(client_id, secret)
    body: dict[str, Any] = {"slug": slug, "name": slug.title(), "issuer": idp.issuer, "client_id": client_id, **extra}
    if secret is not None:
        body["client_secret"] = secret
    resp = await client.post(ADMIN_URL, json=body, headers=admin.headers)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


async def authorize(client: httpx.AsyncClient, slug: str, **params: str) -> httpx.Response:
    query = f"?{urlencode(params)}" if params else ""
    return await client.get(f"/api/v1/auth/oidc/{slug}/authorize{query}")


async def to_callback(
    client: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    slug: str,
    *,
    tamper: dict[str, str] | None = None,
    **params: str,
) -> tuple[str, str]:
    """Start the sign-in and let the provider answer: (callback path with query, state)."""
    start = await authorize(client, slug, **params)
    assert start.status_code == 302, start.text
    location = start.headers["location"]
    if tamper:
        parts = urlsplit(location)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()} | tamper
        location = f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(query)}"
    at_idp = await browser.get(location)
    assert at_idp.status_code == 302, at_idp.text
    back = urlsplit(at_idp.headers["location"])
    assert back.path == f"/api/v1/auth/oidc/{slug}/callback"
    return f"{back.path}?{back.query}", parse_qs(back.query)["state"][0]


async def login(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, slug: str = "acme", **params: str
) -> httpx.Response:
    callback, _ = await to_callback(client, browser, slug, **params)
    return await client.get(callback)


async def count(db: Database, sql: str, **params: Any) -> int:
    async with db.read() as s:
        return int((await s.execute(text(sql), params)).scalar_one())


async def test_sign_in_creates_the_account_then_links_the_same_user(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, db: Database, idp: FakeOidcProvider, admin: User
) -> None:
    provider = await create_provider(client, admin, idp)
    start = await authorize(client, "acme")
    assert start.status_code == 302
    location = urlsplit(start.headers["location"])
    q = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{idp.issuer}/authorize"
    assert q["response_type"] == "code"
    assert q["client_id"] == "liteskill-acme"
    assert q["redirect_uri"] == "http://testserver.local/api/v1/auth/oidc/acme/callback" == provider["redirect_uri"]
    assert q["scope"] == "openid email profile"
    assert q["code_challenge_method"] == "S256"
    assert len(q["state"]) >= 43
    assert len(q["nonce"]) >= 43
    assert len(q["code_challenge"]) == 43

    first = await login(client, browser)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["user"]["email"] == "ada@idp.example"
    assert body["user"]["name"] == "Ada IdP"
    assert body["user"]["role"] == "user"
    assert body["user"]["tenant_id"] == admin.tenant_id
    assert body["refresh_token"].startswith("lsr_")
    me = await client.get("/api/v1/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json()["user"]["id"] == body["user"]["id"]
    # A confidential client authenticates with HTTP Basic; the PKCE verifier goes along.
    sent = idp.token_requests[-1]
    assert sent["authorization"].startswith("Basic ")
    assert "client_id" not in sent["form"]
    assert sent["form"]["code_verifier"]

    second = await login(client, browser)
    assert second.status_code == 200, second.text
    assert second.json()["user"]["id"] == body["user"]["id"]
    assert second.json()["refresh_token"] != body["refresh_token"]
    linked = await events_of(db, "identity.oidc_identity_linked.v1")
    assert [(e["data"]["user_id"], e["data"]["subject"]) for e in linked] == [(body["user"]["id"], "user-1")]
    started = [e for e in await events_of(db, "identity.session_started.v1") if e["data"]["method"] == "oidc"]
    assert len(started) == 2
    assert await count(db, "SELECT count(*) FROM users WHERE password_hash IS NULL") == 1
    assert await count(db, "SELECT count(*) FROM user_identities") == 1


async def test_a_public_client_proves_itself_with_pkce_only(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, idp: FakeOidcProvider, admin: User
) -> None:
    created = await create_provider(client, admin, idp, secret=None)
    assert created["has_client_secret"] is False
    resp = await login(client, browser)
    assert resp.status_code == 200, resp.text
    sent = idp.token_requests[-1]
    assert sent["authorization"] is None
    assert sent["form"]["client_id"] == "liteskill-acme"


async def test_a_wrong_pkce_verifier_is_refused_by_the_provider(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, db: Database, idp: FakeOidcProvider, admin: User
) -> None:
    await create_provider(client, admin, idp)
    # The challenge the provider sees is not the one of the verifier the API holds.
    callback, _ = await to_callback(client, browser, "acme", tamper={"code_challenge": "A" * 43})
    assert_problem(await client.get(callback), 401, "oidc_login_failed")
    failed = await events_of(db, "identity.oidc_login_failed.v1")
    assert [e["data"]["reason"] for e in failed] == ["token_exchange_failed"]
    assert await count(db, "SELECT count(*) FROM user_identities") == 0


async def test_return_to_redirects_with_a_single_use_code(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, idp: FakeOidcProvider, admin: User
) -> None:
    await create_provider(client, admin, idp)
    resp = await login(client, browser, return_to=f"{APP_ORIGIN}/signed-in?next=%2Fchats")
    assert resp.status_code == 302, resp.text
    target = urlsplit(resp.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}?{target.query}" == f"{APP_ORIGIN}/signed-in?next=%2Fchats"
    assert target.fragment.startswith("code=")
    assert "access_token" not in resp.headers["location"]
    code = target.fragment.removeprefix("code=")
    exchanged = await client.post("/api/v1/auth/oidc/exchange", json={"code": code})
    assert exchanged.status_code == 200, exchanged.text
    assert exchanged.json()["user"]["email"] == "ada@idp.example"
    assert (await client.get("/api/v1/me", headers=bearer(exchanged.json()["access_token"]))).status_code == 200
    replay = await client.post("/api/v1/auth/oidc/exchange", json={"code": code})
    assert_problem(replay, 401, "unauthenticated")
    assert_problem(await client.post("/api/v1/auth/oidc/exchange", json={"code": "nope"}), 401, "unauthenticated")
    assert_problem(await client.post("/api/v1/auth/oidc/exchange", json={}), 400, "validation_error")
    # The API's own origin is allowed too.
    own = await authorize(client, "acme", return_to="http://testserver.local/done")
    assert own.status_code == 302


BAD_RETURN_TO = [
    "https://evil.example/cb",
    "//evil.example/cb",
    "/relative",
    "https://app.example@evil.example/",
    "javascript:alert(1)",
    "https://app.example.evil.example/",
    "http://app.example/",  # another scheme is another origin
    "https://app.example:8443/",  # another port too
]


async def test_return_to_must_be_on_an_allowed_origin(
    client: httpx.AsyncClient, idp: FakeOidcProvider, admin: User
) -> None:
    await create_provider(client, admin, idp)
    for return_to in BAD_RETURN_TO:
        assert_problem(await authorize(client, "acme", return_to=return_to), 400, "invalid_return_to")
    assert (await authorize(client, "acme", return_to=f"{APP_ORIGIN}:443/x")).status_code == 302


async def test_sign_in_routes_are_rate_limited_per_ip(client: httpx.AsyncClient, services: Services) -> None:
    limit = services.settings.auth_rate_per_ip
    for _ in range(limit):
        assert_problem(await client.post("/api/v1/auth/oidc/exchange", json={"code": "x"}), 401, "unauthenticated")
    limited = assert_problem(await client.post("/api/v1/auth/oidc/exchange", json={"code": "x"}), 429, "rate_limited")
    assert limited["status"] == 429
    assert_problem(await client.get("/api/v1/auth/oidc/acme/authorize"), 429, "rate_limited")
    assert_problem(await client.get("/api/v1/auth/oidc/acme/callback?code=a&state=b"), 429, "rate_limited")


async def test_state_is_single_use_and_bound_to_its_provider(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, idp: FakeOidcProvider, admin: User
) -> None:
    await create_provider(client, admin, idp, slug="acme")
    await create_provider(client, admin, idp, slug="other")
    unknown = await client.get("/api/v1/auth/oidc/acme/callback?code=x&state=made-up")
    assert_problem(unknown, 400, "invalid_oidc_state")
    assert_problem(await client.get("/api/v1/auth/oidc/acme/callback?code=x"), 400, "invalid_oidc_state")

    callback, _ = await to_callback(client, browser, "acme")
    assert (await client.get(callback)).status_code == 200
    assert_problem(await client.get(callback), 400, "invalid_oidc_state")  # replayed

    # A state started for "acme" does not finish a sign-in at "other" (and is spent by trying).
    callback, _ = await to_callback(client, browser, "acme")
    assert_problem(await client.get(callback.replace("/acme/", "/other/")), 400, "invalid_oidc_state")
    assert_problem(await client.get(callback), 400, "invalid_oidc_state")


async def test_an_error_from_the_provider_is_a_400(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, idp: FakeOidcProvider, admin: User
) -> None:
    await create_provider(client, admin, idp)
    idp.tweaks["authorize_error"] = "access_denied"
    body = assert_problem(await login(client, browser), 400, "oidc_error")
    assert "access_denied" in body["detail"]


@pytest.mark.parametrize(
    "tweak",
    [
        {"nonce": "not-the-nonce"},
        {"aud": "someone-else"},
        {"aud": ["someone-else", "liteskill-acme"]},  # several audiences need azp == client id
        {"aud": "liteskill-acme", "azp": "someone-else"},
        {"iss": "https://impostor.example"},
        {"exp_offset": -300},
        {"foreign_key": True},
        {"foreign_key": True, "foreign_kid": "unknown-kid"},
        {"alg": "none"},
        {"alg": "HS256"},
    ],
    ids=["nonce", "aud", "aud-list-no-azp", "azp", "iss", "expired", "bad-signature", "unknown-kid", "none", "hs256"],
)
async def test_a_defective_id_token_is_refused(
    client: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    db: Database,
    idp: FakeOidcProvider,
    admin: User,
    tweak: dict[str, Any],
) -> None:
    await create_provider(client, admin, idp)
    idp.tweaks.update(tweak)
    body = assert_problem(await login(client, browser), 401, "oidc_login_failed")
    assert "nonce" not in body["detail"]
    assert "signature" not in body["detail"]
    assert await count(db, "SELECT count(*) FROM user_identities") == 0
    assert await count(db, "SELECT count(*) FROM users") == 1  # the admin only
    failed = await events_of(db, "identity.oidc_login_failed.v1")
    assert [e["data"]["reason"] for e in failed] == ["id_token_invalid"]
    assert failed[0]["metadata"]["tenant_id"] == admin.tenant_id


async def test_an_id_token_with_several_audiences_and_our_azp_is_accepted(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, idp: FakeOidcProvider, admin: User
) -> None:
    await create_provider(client, admin, idp)
    idp.tweaks.update({"aud": ["liteskill-acme", "api://other"], "azp": "liteskill-acme"})
    resp = await login(client, browser)
    assert resp.status_code == 200, resp.text


async def test_closed_registration_refuses_new_identities_but_not_linked_ones(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, db: Database, idp: FakeOidcProvider, admin: User
) -> None:
    await create_provider(client, admin, idp)
    linked = await login(client, browser)
    assert linked.status_code == 200, linked.text
    async with db.write() as s:
        await s.execute(text("UPDATE tenants SET registration_open = false"))
    again = await login(client, browser)
    assert again.status_code == 200, again.text
    assert again.json()["user"]["id"] == linked.json()["user"]["id"]
    idp.user = FakeUser(sub="user-2", email="newcomer@idp.example")
    assert_problem(await login(client, browser), 403, "registration_closed")
    assert await count(db, "SELECT count(*) FROM users WHERE email = 'newcomer@idp.example'") == 0


async def test_an_existing_email_is_not_taken_over(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, db: Database, idp: FakeOidcProvider, admin: User
) -> None:
    await create_provider(client, admin, idp)
    idp.user = FakeUser(sub="attacker", email="ROOT@example.com")
    body = assert_problem(await login(client, browser), 409, "account_exists")
    assert "password" in body["detail"]
    assert await count(db, "SELECT count(*) FROM user_identities") == 0
    assert await count(db, "SELECT count(*) FROM auth_sessions WHERE user_id = :u", u=uuid.UUID(admin.id)) == 1


async def test_unverified_email_makes_no_account(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, db: Database, idp: FakeOidcProvider, admin: User
) -> None:
    await create_provider(client, admin, idp)
    idp.user = FakeUser(sub="u3", email="claims@idp.example", email_verified=False)
    assert_problem(await login(client, browser), 403, "oidc_email_unverified")
    assert await count(db, "SELECT count(*) FROM users") == 1


async def test_a_disabled_user_cannot_sign_in(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, db: Database, idp: FakeOidcProvider, admin: User
) -> None:
    await create_provider(client, admin, idp)
    first = await login(client, browser)
    assert first.status_code == 200
    async with db.write() as s:
        await s.execute(text("UPDATE users SET disabled_at = now() WHERE email = 'ada@idp.example'"))
    assert_problem(await login(client, browser), 401, "oidc_login_failed")
    failed = await events_of(db, "identity.oidc_login_failed.v1")
    assert [e["data"]["reason"] for e in failed] == ["disabled"]


async def test_unknown_or_disabled_providers_are_404(
    client: httpx.AsyncClient, idp: FakeOidcProvider, admin: User
) -> None:
    created = await create_provider(client, admin, idp)
    assert_problem(await authorize(client, "nope"), 404, "oidc_provider_not_found")
    assert_problem(await client.get("/api/v1/auth/oidc/nope/callback?code=a&state=b"), 404, "oidc_provider_not_found")
    assert_problem(await authorize(client, "BAD!"), 400, "validation_error")
    patched = await client.patch(f"{ADMIN_URL}/{created['id']}", json={"enabled": False}, headers=admin.headers)
    assert patched.status_code == 200
    assert patched.json()["enabled"] is False
    assert_problem(await authorize(client, "acme"), 404, "oidc_provider_not_found")
