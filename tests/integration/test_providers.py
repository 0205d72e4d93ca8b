"""Providers and models over HTTP: permissions, write-only credentials bound to their host, the
outbound guard, the connection test, ACL sharing, tenant defaults, the registry resolving a model
to a working adapter, and providers declared from the environment."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest
from sqlalchemy import text

from api.services import Services
from domain.llm.messages import ChatRequest, UserMessage
from domain.llm.stream import Finished, TextDelta
from domain.shared.principal import Principal
from infra.db.engine import Database
from infra.llm.env_providers import declare_env_providers
from infra.llm.registry import ModelNotFound
from infra.settings import SecretStr, Settings
from tests.fakes.anthropic_server import running_anthropic_server
from tests.fakes.openai_server import FakeOpenAIServer, running_openai_server
from tests.integration.test_access import User, app, user  # noqa: F401  (app: cheap password hashing)
from tests.integration.test_http_platform import assert_problem

P = "/api/v1/providers"
M = "/api/v1/models"
SECRET = "sk-live-abcdefghijklmnop1234"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAIServer]:
    with running_openai_server() as server:
        yield server


async def allow_loopback(client: httpx.AsyncClient, admin: User) -> None:
    body = {"outbound_allow": ["127.0.0.1/32"]}
    resp = await client.patch("/api/v1/admin/settings", json=body, headers=admin.headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["outbound_allow"] == ["127.0.0.1/32"]


async def provider_of(client: httpx.AsyncClient, owner: User, fake: FakeOpenAIServer, **extra: Any) -> dict[str, Any]:
    body = {
        "name": "local",
        "kind": "openai_compatible",
        "base_url": fake.base_url,
        "api_key": SECRET,
        "headers": {"X-Secret-Header": "hdr-secret-value"},
        "config": {"query": {"api-version": "2024"}},
        **extra,
    }
    resp = await client.post(P, json=body, headers=owner.headers)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


async def model_of(client: httpx.AsyncClient, owner: User, provider_id: str, **extra: Any) -> dict[str, Any]:
    body = {"provider_id": provider_id, "name": "text", "upstream_id": "scenario:text", "kind": "chat", **extra}
    resp = await client.post(M, json=body, headers=owner.headers)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def principal_of(u: User, role: str = "user") -> Principal:
    return Principal(user_id=uuid.UUID(u.id), tenant_id=uuid.UUID(u.tenant_id), role=role)  # type: ignore[arg-type]


async def test_create_needs_the_permission_and_hides_secrets(
    client: httpx.AsyncClient, db: Database, fake: FakeOpenAIServer
) -> None:
    ada = await user(client, "ada@example.com")  # first account: admin
    bob = await user(client, "bob@example.com")
    await allow_loopback(client, ada)
    body = {"name": "x", "kind": "openai_compatible", "base_url": fake.base_url}
    assert_problem(await client.post(P, json=body, headers=bob.headers), 403, "forbidden")
    created = await provider_of(client, ada, fake)
    assert created["has_api_key"] is True
    assert created["api_key_hint"] == "1234"
    assert created["header_names"] == ["X-Secret-Header"]
    assert created["config"] == {"query": {"api-version": "2024"}}
    assert SECRET not in str(created)
    assert "hdr-secret-value" not in str(created)
    got = await client.get(f"{P}/{created['id']}", headers=ada.headers)
    assert got.headers["etag"] == '"1"'
    assert SECRET not in got.text
    # neither the row's columns nor any event carries the secret in clear
    async with db.read() as s:
        dumped = str((await s.execute(text("SELECT data FROM events"))).all())
        row = str((await s.execute(text("SELECT * FROM providers"))).all())
    assert SECRET not in dumped
    assert "hdr-secret-value" not in dumped
    assert SECRET not in row
    assert "hdr-secret-value" not in row
    # bob cannot see it until it is shared with him
    assert_problem(await client.get(f"{P}/{created['id']}", headers=bob.headers), 404, "provider_not_found")
    assert (await client.get(P, headers=bob.headers)).json()["data"] == []
    share = {"grantee_type": "user", "grantee_id": bob.id, "role": "viewer"}
    assert (await client.post(f"{P}/{created['id']}/acl", json=share, headers=ada.headers)).status_code == 201
    assert [p["id"] for p in (await client.get(P, headers=bob.headers)).json()["data"]] == [created["id"]]
    assert_problem(
        await client.patch(f"{P}/{created['id']}", json={"name": "mine"}, headers=bob.headers), 403, "forbidden"
    )


async def test_bad_input_is_a_problem(client: httpx.AsyncClient, db: Database, fake: FakeOpenAIServer) -> None:
    ada = await user(client, "ada@example.com")
    bad = [
        {"name": "x", "kind": "nope"},
        {"name": "", "kind": "openai"},
        {"name": "x", "kind": "openai", "base_url": "file:///etc/passwd"},
        {"name": "x", "kind": "openai", "headers": {"bad header": "v"}},
        {"name": "x", "kind": "openai", "config": {"unknown": 1}},
    ]
    for body in bad:
        resp = await client.post(P, json=body, headers=ada.headers)
        assert resp.status_code == 400, (body, resp.text)
    assert_problem(
        await client.post(P, json={"name": "x", "kind": "openai_compatible"}, headers=ada.headers),
        422,
        "base_url_required",
    )
    bedrock = {"name": "x", "kind": "bedrock"}
    assert_problem(await client.post(P, json=bedrock, headers=ada.headers), 422, "region_required")
    assert_problem(await client.get(f"{P}/not-a-uuid", headers=ada.headers), 400, "validation_error")
    assert_problem(await client.get(f"{M}?kind=banana", headers=ada.headers), 400, "validation_error")


async def test_private_base_urls_are_blocked_unless_allowed(
    client: httpx.AsyncClient, db: Database, fake: FakeOpenAIServer
) -> None:
    ada = await user(client, "ada@example.com")
    for url in (
        fake.base_url,
        "http://[::1]:9/v1",
        "http://[::ffff:127.0.0.1]/v1",
        "http://169.254.169.254/v1",
        "http://10.1.2.3/v1",
        "http://[fd00::1]/v1",
    ):
        body = {"name": "x", "kind": "openai_compatible", "base_url": url}
        assert_problem(await client.post(P, json=body, headers=ada.headers), 422, "outbound_blocked")
    assert_problem(
        await client.patch("/api/v1/admin/settings", json={"outbound_allow": ["not a host"]}, headers=ada.headers),
        422,
        "invalid_outbound_allow",
    )
    await allow_loopback(client, ada)
    created = await provider_of(client, ada, fake)
    moved = {"base_url": "http://10.0.0.1/v1", "api_key": "sk-other-key-000000", "headers": None}
    resp = await client.patch(f"{P}/{created['id']}", json=moved, headers=ada.headers)
    assert_problem(resp, 422, "outbound_blocked")


async def test_moving_credentials_to_another_host_needs_new_ones(
    client: httpx.AsyncClient, db: Database, fake: FakeOpenAIServer
) -> None:
    ada = await user(client, "ada@example.com")
    await allow_loopback(client, ada)
    created = await provider_of(client, ada, fake)
    url = f"{P}/{created['id']}"
    moved = fake.base_url.replace("127.0.0.1", "localhost")
    resp = await client.patch(url, json={"base_url": moved}, headers={**ada.headers, "If-Match": '"1"'})
    assert_problem(resp, 422, "credentials_host_mismatch")
    resp = await client.patch(url, json={"base_url": moved, "api_key": "sk-new-key-for-localhost"}, headers=ada.headers)
    assert_problem(resp, 422, "credentials_host_mismatch")  # the secret header must be resent too
    resp = await client.patch(url, json={"name": "renamed"}, headers={**ada.headers, "If-Match": '"7"'})
    assert resp.status_code == 412
    # the same host with another path keeps the credentials
    resp = await client.patch(url, json={"base_url": fake.base_url + "/"}, headers=ada.headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["has_api_key"] is True
    assert resp.json()["version"] == 2


async def test_the_connection_test_lists_models_and_reports_bad_keys(
    client: httpx.AsyncClient, db: Database, fake: FakeOpenAIServer
) -> None:
    ada = await user(client, "ada@example.com")
    await allow_loopback(client, ada)
    created = await provider_of(client, ada, fake)
    fake.reset()
    resp = await client.post(f"{P}/{created['id']}/test", headers=ada.headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["ok"] is True
    assert "scenario:text" in resp.json()["models"]
    call = fake.calls[-1]
    assert call.headers["authorization"] == f"Bearer {SECRET}"
    assert call.headers["x-secret-header"] == "hdr-secret-value"
    assert call.query == {"api-version": "2024"}
    await client.patch(f"{P}/{created['id']}", json={"api_key": "sk-wrong"}, headers=ada.headers)
    resp = await client.post(f"{P}/{created['id']}/test", headers=ada.headers)
    assert resp.status_code == 200
    assert resp.json()["ok"] is False
    assert resp.json()["error"]["kind"] == "authentication"
    # the admin withdraws the allow-list: the test is refused before any request
    await client.patch("/api/v1/admin/settings", json={"outbound_allow": []}, headers=ada.headers)
    assert_problem(await client.post(f"{P}/{created['id']}/test", headers=ada.headers), 422, "outbound_blocked")
    # unreachable (nothing listens on port 9) is a result, not a server error
    await allow_loopback(client, ada)
    moved = {"base_url": "http://127.0.0.1:9/v1", "api_key": SECRET, "headers": None}
    assert (await client.patch(f"{P}/{created['id']}", json=moved, headers=ada.headers)).status_code == 200
    resp = await client.post(f"{P}/{created['id']}/test", headers=ada.headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["ok"] is False
    assert resp.json()["error"]["kind"] == "connection"


async def test_models_defaults_and_the_registry(
    client: httpx.AsyncClient, db: Database, services: Services, fake: FakeOpenAIServer
) -> None:
    ada = await user(client, "ada@example.com")
    bob = await user(client, "bob@example.com")
    await allow_loopback(client, ada)
    provider = await provider_of(client, ada, fake)
    # bob may not add models to a provider he only views
    share = {"grantee_type": "user", "grantee_id": bob.id, "role": "viewer"}
    await client.post(f"{P}/{provider['id']}/acl", json=share, headers=ada.headers)
    body = {"provider_id": provider["id"], "name": "b", "upstream_id": "x", "kind": "chat"}
    assert_problem(await client.post(M, json=body, headers=bob.headers), 403, "forbidden")
    bad_price = {**body, "name": "neg", "pricing": {"input": "-1", "output": 1}}
    resp = await client.post(M, json=bad_price, headers=ada.headers)
    assert_problem(resp, 400, "validation_error")
    assert resp.json()["errors"][0]["pointer"] == "/pricing/input"
    model = await model_of(
        client,
        ada,
        provider["id"],
        context_window=128000,
        pricing={"input": "2.5", "output": 10, "cached_input": "1.25"},
        capabilities={"tools": True, "streaming_usage": True},
    )
    assert model["pricing"] == {"currency": "USD", "input": "2.5", "output": "10", "cached_input": "1.25"}
    embed = await model_of(client, ada, provider["id"], name="emb", upstream_id="e", kind="embedding", dimensions=8)
    listed = (await client.get(f"{M}?kind=embedding", headers=ada.headers)).json()["data"]
    assert [m["id"] for m in listed] == [embed["id"]]
    listed = (await client.get(f"{M}?provider_id={provider['id']}", headers=ada.headers)).json()["data"]
    assert len(listed) == 2
    assert (await client.get(M, headers=bob.headers)).json()["data"] == []

    # defaults: the kind must match
    settings_url = "/api/v1/admin/settings"
    resp = await client.patch(settings_url, json={"default_chat_model_id": embed["id"]}, headers=ada.headers)
    assert_problem(resp, 422, "invalid_default_model")
    resp = await client.patch(settings_url, json={"default_chat_model_id": str(uuid.uuid4())}, headers=ada.headers)
    assert_problem(resp, 422, "invalid_default_model")
    resp = await client.patch(
        settings_url,
        json={"default_chat_model_id": model["id"], "default_embedding_model_id": embed["id"]},
        headers=ada.headers,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["default_chat_model_id"] == model["id"]
    assert (await client.get(settings_url, headers=ada.headers)).json()["default_embedding_model_id"] == embed["id"]
    assert_problem(await client.patch(settings_url, json={"outbound_allow": []}, headers=bob.headers), 403, "forbidden")

    # the registry: viewer on the model, the adapter streams through the guarded client
    registry = services.llm_registry()
    async with db.read() as session:
        with pytest.raises(ModelNotFound):
            await registry.chat_model(session, principal_of(bob), uuid.UUID(model["id"]))
        chat, info = await registry.chat_model(session, principal_of(ada, "admin"), uuid.UUID(model["id"]))
        again, _ = await registry.chat_model(session, principal_of(ada, "admin"), uuid.UUID(model["id"]))
    assert again is chat  # cached per (provider, version, model, version)
    assert info.upstream_id == "scenario:text"
    assert info.context_window == 128000
    fake.reset()
    request = ChatRequest(model=info.upstream_id, messages=[UserMessage.text("hi")])
    events = [e async for e in chat.stream(request)]
    assert "".join(e.text for e in events if isinstance(e, TextDelta))
    assert isinstance(events[-1], Finished)
    assert fake.calls[-1].headers["authorization"] == f"Bearer {SECRET}"
    # a change of the provider builds a new adapter
    await client.patch(f"{P}/{provider['id']}", json={"name": "renamed"}, headers=ada.headers)
    async with db.read() as session:
        rebuilt, _ = await registry.chat_model(session, principal_of(ada, "admin"), uuid.UUID(model["id"]))
    assert rebuilt is not chat

    # delete needs the owner and If-Match
    resp = await client.delete(f"{M}/{model['id']}", headers={**ada.headers, "If-Match": '"9"'})
    assert resp.status_code == 412
    assert (await client.delete(f"{M}/{model['id']}", headers=ada.headers)).status_code == 204
    assert_problem(await client.delete(f"{P}/{provider['id']}", headers=bob.headers), 403, "forbidden")
    assert (await client.delete(f"{P}/{provider['id']}", headers=ada.headers)).status_code == 204
    assert_problem(await client.get(f"{M}/{embed['id']}", headers=ada.headers), 404, "model_not_found")


async def test_env_providers_are_declared_idempotently_and_visible_to_everyone(
    client: httpx.AsyncClient, db: Database, settings: Settings, fake: FakeOpenAIServer
) -> None:
    ada = await user(client, "ada@example.com")
    bob = await user(client, "bob@example.com")
    llm = msgspec.structs.replace(
        settings.llm, openai_compatible_base_url=fake.base_url, openai_compatible_api_key=SecretStr("sk-env-1111")
    )
    env_settings = msgspec.structs.replace(settings, llm=llm)
    assert await declare_env_providers(db, env_settings) == {"OpenAI-compatible (env)": "created"}
    assert await declare_env_providers(db, env_settings) == {"OpenAI-compatible (env)": "unchanged"}
    seen = (await client.get(P, headers=bob.headers)).json()["data"]
    assert [p["name"] for p in seen] == ["OpenAI-compatible (env)"]
    assert seen[0]["source"] == "env"
    assert seen[0]["api_key_hint"] is None
    provider_id = seen[0]["id"]
    assert_problem(await client.patch(f"{P}/{provider_id}", json={"name": "x"}, headers=ada.headers), 403, "forbidden")
    changed = msgspec.structs.replace(
        env_settings, llm=msgspec.structs.replace(llm, openai_compatible_api_key=SecretStr("sk-env-2222"))
    )
    assert await declare_env_providers(db, changed) == {"OpenAI-compatible (env)": "updated"}
    got = (await client.get(f"{P}/{provider_id}", headers=bob.headers)).json()
    assert got["version"] == 2
    async with db.read() as s:
        dumped = str((await s.execute(text("SELECT data FROM events"))).all())
    assert "sk-env-1111" not in dumped
    assert "sk-env-2222" not in dumped


async def test_an_anthropic_model_streams_through_the_registry(
    client: httpx.AsyncClient, db: Database, services: Services
) -> None:
    ada = await user(client, "ada@example.com")
    await allow_loopback(client, ada)
    with running_anthropic_server() as fake:
        body = {"name": "claude", "kind": "anthropic", "base_url": fake.base_url, "api_key": SECRET}
        provider = (await client.post(P, json=body, headers=ada.headers)).json()
        model = await model_of(client, ada, provider["id"], name="claude-text")
        async with db.read() as session:
            chat, _ = await services.llm_registry().chat_model(session, principal_of(ada), uuid.UUID(model["id"]))
        request = ChatRequest(model="scenario:text", messages=[UserMessage.text("hi")])
        events = [e async for e in chat.stream(request)]
        assert isinstance(events[-1], Finished), events[-1]
        sent = fake.headers[-1]  # this SDK sends the key as a bearer token; older ones as x-api-key
        assert SECRET in (sent.get("x-api-key"), sent.get("authorization", "").removeprefix("Bearer "))


async def test_create_honours_idempotency_keys(client: httpx.AsyncClient, db: Database) -> None:
    ada = await user(client, "ada@example.com")
    headers = {**ada.headers, "Idempotency-Key": "provider-1"}
    body = {"name": "openai", "kind": "openai", "api_key": SECRET}
    first = await client.post(P, json=body, headers=headers)
    again = await client.post(P, json=body, headers=headers)
    assert first.status_code == 201, first.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert SECRET not in again.text
    assert_problem(await client.post(P, json=body, headers=ada.headers), 409, "provider_name_taken")
