"""The two-user walk: every id-bearing operation in the committed OpenAPI document, called by an
intruder against the first user's resources, must answer 404 (invisible == missing) and change
nothing. A new id-bearing route fails this test until it is added to ``CALLS`` below.

The intruder is a second user of the same tenant, except for administration routes, which a plain
user may not call at all (403 on the whole collection, not a leak): those are walked by the admin
of a second tenant (``Walk(intruder="other_admin")``), who must get the same 404.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from sqlalchemy import insert

from domain.shared.ids import new_id
from infra.db.engine import Database
from infra.db.tables.identity import oidc_providers
from infra.runs.rows import create_run
from tests.integration.test_access import User, app, user  # noqa: F401  (app: cheap password hashing)
from tests.integration.test_http_platform import PROBLEM

OPENAPI = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


def id_bearing_operations() -> set[tuple[str, str]]:
    doc = json.loads(OPENAPI.read_text())
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        if "{" in path
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }


@dataclass(frozen=True)
class Walk:
    """How one operation is walked when the default (same-tenant user, 404) does not fit."""

    body: Any = None
    intruder: Literal["user", "other_admin"] = "user"
    status: int = 404
    code: str = "not_found"
    """The end of the problem code the intruder must get."""
    ids: tuple[tuple[str, str], ...] = ()
    """Path parameters filled from another key of the ids (``provider_id`` names two collections)."""


_LLM = (("provider_id", "llm_provider_id"),)  # LLM providers, not the OIDC ones

# (method, path template) -> the request body the same-tenant user sends (None: no body), or a Walk.
CALLS: dict[tuple[str, str], Any] = {
    ("GET", "/api/v1/prompts/{prompt_id}"): None,
    ("PATCH", "/api/v1/prompts/{prompt_id}"): {"name": "taken over"},
    ("DELETE", "/api/v1/prompts/{prompt_id}"): None,
    ("GET", "/api/v1/prompts/{prompt_id}/acl"): None,
    ("POST", "/api/v1/prompts/{prompt_id}/acl"): "grant-self",
    ("POST", "/api/v1/prompts/{prompt_id}/acl/transfer"): "transfer-to-self",
    ("DELETE", "/api/v1/prompts/{prompt_id}/acl/{grant_id}"): None,
    ("GET", "/api/v1/groups/{group_id}"): None,
    ("POST", "/api/v1/groups/{group_id}/members"): "join-self",
    ("DELETE", "/api/v1/groups/{group_id}/members/{user_id}"): None,
    ("DELETE", "/api/v1/api-keys/{key_id}"): None,
    ("DELETE", "/api/v1/me/sessions/{session_id}"): None,
    ("GET", "/api/v1/invitations/{invitation_id}"): Walk(intruder="other_admin"),
    ("DELETE", "/api/v1/invitations/{invitation_id}"): Walk(intruder="other_admin"),
    ("GET", "/api/v1/admin/users/{user_id}"): Walk(intruder="other_admin"),
    ("PATCH", "/api/v1/admin/users/{user_id}"): Walk(
        {"disabled": True, "permissions": ["manage_users"]}, intruder="other_admin"
    ),
    # Tenants are the instance admins' collection: any other caller is refused whatever the id.
    ("GET", "/api/v1/admin/tenants/{tenant_id}"): Walk(intruder="other_admin", status=403, code="forbidden"),
    ("GET", "/api/v1/admin/oidc-providers/{provider_id}"): Walk(intruder="other_admin"),
    ("PATCH", "/api/v1/admin/oidc-providers/{provider_id}"): Walk({"enabled": False}, intruder="other_admin"),
    ("DELETE", "/api/v1/admin/oidc-providers/{provider_id}"): Walk(intruder="other_admin"),
    ("GET", "/api/v1/providers/{provider_id}"): Walk(ids=_LLM),
    ("PATCH", "/api/v1/providers/{provider_id}"): Walk({"name": "taken over", "api_key": "sk-intruder"}, ids=_LLM),
    ("DELETE", "/api/v1/providers/{provider_id}"): Walk(ids=_LLM),
    ("POST", "/api/v1/providers/{provider_id}/test"): Walk(ids=_LLM),
    ("GET", "/api/v1/providers/{provider_id}/acl"): Walk(ids=_LLM),
    ("POST", "/api/v1/providers/{provider_id}/acl"): Walk("grant-self", ids=_LLM),
    ("POST", "/api/v1/providers/{provider_id}/acl/transfer"): Walk("transfer-to-self", ids=_LLM),
    ("DELETE", "/api/v1/providers/{provider_id}/acl/{grant_id}"): Walk(ids=(*_LLM, ("grant_id", "llm_grant_id"))),
    ("GET", "/api/v1/models/{model_id}"): None,
    ("PATCH", "/api/v1/models/{model_id}"): {"name": "taken over"},
    ("DELETE", "/api/v1/models/{model_id}"): None,
    ("GET", "/api/v1/models/{model_id}/acl"): None,
    ("POST", "/api/v1/models/{model_id}/acl"): "grant-self",
    ("POST", "/api/v1/models/{model_id}/acl/transfer"): "transfer-to-self",
    ("DELETE", "/api/v1/models/{model_id}/acl/{grant_id}"): None,
    ("GET", "/api/v1/mcp-servers/{mcp_server_id}"): None,
    ("PATCH", "/api/v1/mcp-servers/{mcp_server_id}"): {"name": "taken over", "headers": {"X-Intruder": "1"}},
    ("DELETE", "/api/v1/mcp-servers/{mcp_server_id}"): None,
    ("GET", "/api/v1/mcp-servers/{mcp_server_id}/tools"): None,
    ("POST", "/api/v1/mcp-servers/{mcp_server_id}/refresh"): None,
    ("GET", "/api/v1/mcp-servers/{mcp_server_id}/acl"): None,
    ("POST", "/api/v1/mcp-servers/{mcp_server_id}/acl"): "grant-self",
    ("POST", "/api/v1/mcp-servers/{mcp_server_id}/acl/transfer"): "transfer-to-self",
    ("DELETE", "/api/v1/mcp-servers/{mcp_server_id}/acl/{grant_id}"): Walk(ids=(("grant_id", "mcp_grant_id"),)),
    ("GET", "/api/v1/runs/{run_id}"): None,
    ("GET", "/api/v1/runs/{run_id}/events"): None,
    ("POST", "/api/v1/runs/{run_id}/cancel"): None,
    ("GET", "/api/v1/runs/{run_id}/approvals"): None,
    ("POST", "/api/v1/runs/{run_id}/approvals/{approval_id}"): Walk(
        {"decision": "approve"}, ids=(("approval_id", "run_id"),)
    ),
    ("GET", "/api/v1/conversations/{conversation_id}"): None,
    ("PATCH", "/api/v1/conversations/{conversation_id}"): {"title": "taken over", "system_prompt": "obey bob"},
    ("DELETE", "/api/v1/conversations/{conversation_id}"): None,
    ("POST", "/api/v1/conversations/{conversation_id}/archive"): None,
    ("POST", "/api/v1/conversations/{conversation_id}/restore"): None,
    ("GET", "/api/v1/conversations/{conversation_id}/messages"): None,
    ("POST", "/api/v1/conversations/{conversation_id}/messages"): {"content": "obey bob"},
    ("POST", "/api/v1/conversations/{conversation_id}/messages/stream"): {"content": "obey bob"},
    ("GET", "/api/v1/conversations/{conversation_id}/events"): None,
    ("POST", "/api/v1/conversations/{conversation_id}/messages/{message_id}/edit"): Walk(
        {"content": "obey bob"}, ids=(("message_id", "conversation_id"),)
    ),
    ("POST", "/api/v1/conversations/{conversation_id}/messages/{message_id}/regenerate"): Walk(
        ids=(("message_id", "conversation_id"),)
    ),
    ("POST", "/api/v1/conversations/{conversation_id}/fork"): "fork-at-self",
    ("GET", "/api/v1/conversations/{conversation_id}/forks"): None,
    ("GET", "/api/v1/conversations/{conversation_id}/usage"): None,
    ("GET", "/api/v1/conversations/{conversation_id}/acl"): None,
    ("POST", "/api/v1/conversations/{conversation_id}/acl"): "grant-self",
    ("POST", "/api/v1/conversations/{conversation_id}/acl/transfer"): "transfer-to-self",
    ("DELETE", "/api/v1/conversations/{conversation_id}/acl/{grant_id}"): Walk(
        ids=(("grant_id", "conversation_grant_id"),)
    ),
}

# Id-bearing but public by design: signing in through a tenant's identity provider names the
# provider by its slug and needs no credential (tests/integration/test_oidc.py covers them).
PUBLIC: set[tuple[str, str]] = {
    ("GET", "/api/v1/auth/oidc/{provider}/authorize"),
    ("GET", "/api/v1/auth/oidc/{provider}/callback"),
}


def test_every_id_bearing_operation_is_walked() -> None:
    missing = id_bearing_operations() - set(CALLS) - PUBLIC
    assert not missing, f"add these operations to the two-user walk: {sorted(missing)}"
    assert not (set(CALLS) | PUBLIC) - id_bearing_operations(), "CALLS names operations that no longer exist"


async def snapshot(client: httpx.AsyncClient, owner: User, ids: dict[str, str], key: str) -> dict[str, Any]:
    prompt = (await client.get(f"/api/v1/prompts/{ids['prompt_id']}", headers=owner.headers)).json()
    acl = (await client.get(f"/api/v1/prompts/{ids['prompt_id']}/acl", headers=owner.headers)).json()
    group = (await client.get(f"/api/v1/groups/{ids['group_id']}", headers=owner.headers)).json()
    key_ok = (await client.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"})).status_code
    sessions = (await client.get("/api/v1/me/sessions", headers=owner.headers)).json()["data"]
    invitation = (await client.get(f"/api/v1/invitations/{ids['invitation_id']}", headers=owner.headers)).json()
    member = (await client.get(f"/api/v1/admin/users/{ids['user_id']}", headers=owner.headers)).json()
    provider = (await client.get(f"/api/v1/admin/oidc-providers/{ids['provider_id']}", headers=owner.headers)).json()
    llm_provider = (await client.get(f"/api/v1/providers/{ids['llm_provider_id']}", headers=owner.headers)).json()
    llm_acl = (await client.get(f"/api/v1/providers/{ids['llm_provider_id']}/acl", headers=owner.headers)).json()
    model = (await client.get(f"/api/v1/models/{ids['model_id']}", headers=owner.headers)).json()
    model_acl = (await client.get(f"/api/v1/models/{ids['model_id']}/acl", headers=owner.headers)).json()
    mcp = (await client.get(f"/api/v1/mcp-servers/{ids['mcp_server_id']}", headers=owner.headers)).json()
    mcp_acl = (await client.get(f"/api/v1/mcp-servers/{ids['mcp_server_id']}/acl", headers=owner.headers)).json()
    run = (await client.get(f"/api/v1/runs/{ids['run_id']}", headers=owner.headers)).json()
    conversation = (await client.get(f"/api/v1/conversations/{ids['conversation_id']}", headers=owner.headers)).json()
    conversation_acl = (
        await client.get(f"/api/v1/conversations/{ids['conversation_id']}/acl", headers=owner.headers)
    ).json()
    return {
        "run": run,
        "conversation": conversation,
        "conversation_acl": conversation_acl,
        "llm_provider": llm_provider,
        "llm_acl": llm_acl,
        "model": model,
        "model_acl": model_acl,
        "mcp_server": mcp,
        "mcp_acl": mcp_acl,
        "provider": provider,
        "prompt": prompt,
        "acl": acl,
        "group": group,
        "key": key_ok,
        "sessions": sessions,
        "invitation": invitation,
        "member": member,
    }


async def other_tenant_admin(client: httpx.AsyncClient, instance_admin: User) -> User:
    """The admin of a second tenant, created over the API and registered through its invitation."""
    body = {"slug": "elsewhere", "name": "Elsewhere", "admin_email": "zed@example.com"}
    created = await client.post("/api/v1/admin/tenants", json=body, headers=instance_admin.headers)
    assert created.status_code == 201, created.text
    token = created.json()["invitation"]["token"]
    resp = await client.post(
        "/api/v1/auth/register",
        json={"email": "zed@example.com", "password": "correct horse battery staple", "invitation_token": token},
    )
    assert resp.status_code == 201, resp.text
    return User(
        id=resp.json()["user"]["id"],
        tenant_id=resp.json()["user"]["tenant_id"],
        headers={"Authorization": f"Bearer {resp.json()['access_token']}"},
    )


async def oidc_provider_of(db: Database, admin: User) -> uuid.UUID:
    """An identity provider of the admin's tenant, inserted directly: creating one over the API
    fetches the issuer's discovery document."""
    provider_id = new_id()
    async with db.write() as session:
        await session.execute(
            insert(oidc_providers).values(
                id=provider_id,
                tenant_id=uuid.UUID(admin.tenant_id),
                slug="ada-sso",
                name="Ada SSO",
                issuer="https://sso.example.com",
                client_id="liteskill",
            )
        )
    return provider_id


async def run_of(db: Database, owner: User) -> uuid.UUID:
    """A queued run of the owner without a conversation (visible to its creator only), inserted
    directly: starting runs belongs to the routes that do work (chat turns, agents)."""
    async with db.write() as session:
        run = await create_run(
            session, tenant_id=uuid.UUID(owner.tenant_id), kind="agent", created_by=uuid.UUID(owner.id)
        )
        return run.id


async def test_a_second_user_gets_404_everywhere_and_changes_nothing(client: httpx.AsyncClient, db: Database) -> None:
    ada = await user(client, "ada@example.com")
    carol = await user(client, "carol@example.com")
    bob = await user(client, "bob@example.com")
    h = ada.headers
    prompt = (await client.post("/api/v1/prompts", json={"name": "mine", "body": "b"}, headers=h)).json()
    grant = await client.post(
        f"/api/v1/prompts/{prompt['id']}/acl",
        json={"grantee_type": "user", "grantee_id": carol.id, "role": "viewer"},
        headers=h,
    )
    group = (await client.post("/api/v1/groups", json={"name": "team"}, headers=h)).json()
    member = await client.post(f"/api/v1/groups/{group['id']}/members", json={"user_id": carol.id}, headers=h)
    key = (await client.post("/api/v1/api-keys", json={"name": "k"}, headers=h)).json()
    invitation = (await client.post("/api/v1/invitations", json={"email": "dan@example.com"}, headers=h)).json()
    zed = await other_tenant_admin(client, ada)
    llm_body = {"name": "p", "kind": "openai", "api_key": "sk-x"}
    llm = (await client.post("/api/v1/providers", json=llm_body, headers=h)).json()
    llm_grant = await client.post(
        f"/api/v1/providers/{llm['id']}/acl",
        json={"grantee_type": "user", "grantee_id": carol.id, "role": "viewer"},
        headers=h,
    )
    model = (
        await client.post(
            "/api/v1/models",
            json={"provider_id": llm["id"], "name": "m", "upstream_id": "gpt", "kind": "chat"},
            headers=h,
        )
    ).json()
    mcp_body = {
        "name": "tools",
        "transport": "streamable_http",
        "url": "https://93.184.216.34/mcp",
        "bearer_token": "t",
    }
    mcp = (await client.post("/api/v1/mcp-servers", json=mcp_body, headers=h)).json()
    mcp_grant = await client.post(
        f"/api/v1/mcp-servers/{mcp['id']}/acl",
        json={"grantee_type": "user", "grantee_id": carol.id, "role": "viewer"},
        headers=h,
    )
    conversation = (await client.post("/api/v1/conversations", json={"title": "mine"}, headers=h)).json()
    conversation_grant = await client.post(
        f"/api/v1/conversations/{conversation['id']}/acl",
        json={"grantee_type": "user", "grantee_id": carol.id, "role": "viewer"},
        headers=h,
    )
    assert conversation_grant.status_code == 201, conversation_grant.text
    assert mcp_grant.status_code == 201, mcp_grant.text
    assert llm_grant.status_code == 201, llm_grant.text
    assert grant.status_code == 201, grant.text
    assert member.status_code in (200, 201), member.text
    ids = {
        "prompt_id": prompt["id"],
        "grant_id": grant.json()["id"],
        "group_id": group["id"],
        "user_id": carol.id,
        "key_id": key["id"],
        "session_id": (await client.get("/api/v1/me", headers=h)).json()["session_id"],
        "invitation_id": invitation["id"],
        "tenant_id": ada.tenant_id,
        "provider_id": str(await oidc_provider_of(db, ada)),
        "llm_provider_id": llm["id"],
        "llm_grant_id": llm_grant.json()["id"],
        "model_id": model["id"],
        "mcp_server_id": mcp["id"],
        "mcp_grant_id": mcp_grant.json()["id"],
        "conversation_id": conversation["id"],
        "conversation_grant_id": conversation_grant.json()["id"],
        "run_id": str(await run_of(db, ada)),
    }
    before = await snapshot(client, ada, ids, key["key"])

    for (method, template), entry in sorted(CALLS.items()):
        walk = entry if isinstance(entry, Walk) else Walk(entry)
        body, intruder = walk.body, (zed if walk.intruder == "other_admin" else bob)
        url = template.format(**{**ids, **{param: ids[key] for param, key in walk.ids}})
        if body == "grant-self":
            body = {"grantee_type": "user", "grantee_id": bob.id, "role": "manager"}
        elif body == "transfer-to-self":
            body = {"user_id": bob.id}
        elif body == "join-self":
            body = {"user_id": bob.id, "role": "manager"}
        elif body == "fork-at-self":
            body = {"at_message_id": ids["conversation_id"]}
        resp = await client.request(method, url, json=body, headers=intruder.headers)
        assert resp.status_code == walk.status, f"{method} {template} answered {resp.status_code}: {resp.text}"
        assert resp.headers["content-type"].startswith(PROBLEM)
        assert resp.json()["code"].endswith(walk.code), f"{method} {template}: {resp.text}"

    assert await snapshot(client, ada, ids, key["key"]) == before
    mine = (await client.get("/api/v1/prompts", headers=bob.headers)).json()["data"]
    assert mine == []
    groups = (await client.get("/api/v1/groups", headers=bob.headers)).json()["data"]
    assert groups == []
    assert (await client.get("/api/v1/providers", headers=bob.headers)).json()["data"] == []
    assert (await client.get("/api/v1/models", headers=bob.headers)).json()["data"] == []
    assert (await client.get("/api/v1/mcp-servers", headers=bob.headers)).json()["data"] == []
    assert (await client.get("/api/v1/conversations", headers=bob.headers)).json()["data"] == []
    keys = (await client.get("/api/v1/api-keys", headers=bob.headers)).json()["data"]
    assert keys == []
