"""The two-user walk: every id-bearing operation in the committed OpenAPI document, called by a
second user against the first user's resources, must answer 404 (invisible == missing) and change
nothing. A new id-bearing route fails this test until it is added to ``CALLS`` below."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

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


# (method, path template) -> the request body the intruder sends (None: no body).
CALLS: dict[tuple[str, str], Any] = {
    ("GET", "/api/v1/prompts/{prompt_id}"): None,
    ("PATCH", "/api/v1/prompts/{prompt_id}"): {"name": "taken over"},
    ("DELETE", "/api/v1/prompts/{prompt_id}"): None,
    ("GET", "/api/v1/prompts/{prompt_id}/acl"): None,
    ("POST", "/api/v1/prompts/{prompt_id}/acl"): "grant-self",
    ("DELETE", "/api/v1/prompts/{prompt_id}/acl/{grant_id}"): None,
    ("GET", "/api/v1/groups/{group_id}"): None,
    ("POST", "/api/v1/groups/{group_id}/members"): "join-self",
    ("DELETE", "/api/v1/groups/{group_id}/members/{user_id}"): None,
    ("DELETE", "/api/v1/api-keys/{key_id}"): None,
    ("DELETE", "/api/v1/me/sessions/{session_id}"): None,
}


def test_every_id_bearing_operation_is_walked() -> None:
    missing = id_bearing_operations() - set(CALLS)
    assert not missing, f"add these operations to the two-user walk: {sorted(missing)}"
    assert not set(CALLS) - id_bearing_operations(), "CALLS names operations that no longer exist"


async def snapshot(client: httpx.AsyncClient, owner: User, ids: dict[str, str], key: str) -> dict[str, Any]:
    prompt = (await client.get(f"/api/v1/prompts/{ids['prompt_id']}", headers=owner.headers)).json()
    acl = (await client.get(f"/api/v1/prompts/{ids['prompt_id']}/acl", headers=owner.headers)).json()
    group = (await client.get(f"/api/v1/groups/{ids['group_id']}", headers=owner.headers)).json()
    key_ok = (await client.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"})).status_code
    sessions = (await client.get("/api/v1/me/sessions", headers=owner.headers)).json()["data"]
    return {"prompt": prompt, "acl": acl, "group": group, "key": key_ok, "sessions": sessions}


@pytest.mark.usefixtures("db")
async def test_a_second_user_gets_404_everywhere_and_changes_nothing(client: httpx.AsyncClient) -> None:
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
    assert grant.status_code == 201, grant.text
    assert member.status_code in (200, 201), member.text
    ids = {
        "prompt_id": prompt["id"],
        "grant_id": grant.json()["id"],
        "group_id": group["id"],
        "user_id": carol.id,
        "key_id": key["id"],
        "session_id": (await client.get("/api/v1/me", headers=h)).json()["session_id"],
    }
    before = await snapshot(client, ada, ids, key["key"])

    for (method, template), body in sorted(CALLS.items()):
        url = template.format(**ids)
        if body == "grant-self":
            body = {"grantee_type": "user", "grantee_id": bob.id, "role": "manager"}
        elif body == "join-self":
            body = {"user_id": bob.id, "role": "manager"}
        resp = await client.request(method, url, json=body, headers=bob.headers)
        assert resp.status_code == 404, f"{method} {template} answered {resp.status_code}: {resp.text}"
        assert resp.headers["content-type"].startswith(PROBLEM)
        assert resp.json()["code"].endswith("not_found"), f"{method} {template}: {resp.text}"

    assert await snapshot(client, ada, ids, key["key"]) == before
    mine = (await client.get("/api/v1/prompts", headers=bob.headers)).json()["data"]
    assert mine == []
    groups = (await client.get("/api/v1/groups", headers=bob.headers)).json()["data"]
    assert groups == []
    keys = (await client.get("/api/v1/api-keys", headers=bob.headers)).json()["data"]
    assert keys == []
