"""MCP servers over HTTP: registering HTTP and stdio servers, write-only secrets bound to their host,
the outbound guard, stdio for instance admins only, ACL sharing, the tools listing and refresh
against a real MCP server (tests/fakes/mcp_server.py), ETags, and the directory the gateway uses."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar
from redis.asyncio import Redis
from sqlalchemy import text

from api.app import create_app
from api.services import Services
from domain.shared.principal import Principal
from infra.db.engine import Database
from infra.identity.passwords import PasswordHasher
from infra.mcp.directory import DbServerDirectory
from infra.secrets.service import load_kek
from infra.settings import Settings
from tests.fakes.mcp_server import running_mcp_http_server
from tests.integration.test_access import User, user
from tests.integration.test_auth import events_of
from tests.integration.test_http_platform import assert_problem
from tests.integration.test_route_walk import other_tenant_admin

S = "/api/v1/mcp-servers"
HEADER_SECRET = "hdr-secret-value-9876"
TOKEN_SECRET = "bearer-secret-token-5432"
ENV_SECRET = "env-secret-value-1234"
STDIO = {
    "name": "local tools",
    "transport": "stdio",
    "command": sys.executable,
    "args": ["-m", "tests.fakes.mcp_server"],
    "env": {"FAKE_SECRET": ENV_SECRET},
}


@pytest.fixture(scope="module")
def mcp_url() -> Iterator[str]:
    with running_mcp_http_server() as server:
        yield str(server.url)


@pytest.fixture
async def services(settings: Settings, db: Database, redis: Redis) -> AsyncIterator[Services]:
    # LITESKILL_OUTBOUND_ALLOW=127.0.0.1: the loopback fake is reachable; other private targets are not.
    loopback = msgspec.structs.replace(
        settings, llm=msgspec.structs.replace(settings.llm, outbound_allow=("127.0.0.1",))
    )
    svc = Services(settings=loopback, db=db, redis=redis, passwords=PasswordHasher(memory_kib=1024, time_cost=1))
    yield svc
    if svc.mcp is not None:
        await svc.mcp.aclose()


@pytest.fixture
def app(services: Services) -> Litestar:
    return create_app(services.settings, services=services)


async def http_server(client: httpx.AsyncClient, owner: User, url: str, **extra: Any) -> dict[str, Any]:
    body = {
        "name": "fake",
        "transport": "streamable_http",
        "url": url,
        "headers": {"X-Api-Secret": HEADER_SECRET},
        "bearer_token": TOKEN_SECRET,
        **extra,
    }
    resp = await client.post(S, json=body, headers=owner.headers)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


async def share(client: httpx.AsyncClient, owner: User, server_id: str, who: User, role: str) -> None:
    body = {"grantee_type": "user", "grantee_id": who.id, "role": role}
    resp = await client.post(f"{S}/{server_id}/acl", json=body, headers=owner.headers)
    assert resp.status_code in (200, 201), resp.text  # 200: an existing grant's role changed


async def dump(db: Database) -> str:
    async with db.read() as s:
        events = str((await s.execute(text("SELECT data, metadata FROM events"))).all())
        rows = str((await s.execute(text("SELECT * FROM mcp_servers"))).all())
    return events + rows


def directory_of(services: Services) -> DbServerDirectory:
    return DbServerDirectory(services.db, load_kek(services.settings), services.settings.llm.outbound_allow)


def principal_of(u: User) -> Principal:
    return Principal(user_id=uuid.UUID(u.id), tenant_id=uuid.UUID(u.tenant_id), role="user")


async def test_an_http_server_keeps_its_secrets_and_lists_its_tools(
    client: httpx.AsyncClient, db: Database, mcp_url: str
) -> None:
    ada = await user(client, "ada@example.com")
    created = await http_server(client, ada, mcp_url)
    assert created["object"] == "mcp_server"
    assert created["header_names"] == ["X-Api-Secret"]
    assert created["has_bearer_token"] is True
    assert created["env_names"] == []
    assert created["credential_host"] == mcp_url.split("/")[2]
    assert created["approval"] == "manual"
    assert created["version"] == 1
    got = await client.get(f"{S}/{created['id']}", headers=ada.headers)
    assert got.status_code == 200
    assert got.headers["etag"] == '"1"'
    listed = (await client.get(S, headers=ada.headers)).json()
    assert [s["id"] for s in listed["data"]] == [created["id"]]

    tools = await client.get(f"{S}/{created['id']}/tools", headers=ada.headers)
    assert tools.status_code == 200, tools.text
    by_name = {t["name"]: t for t in tools.json()["data"]}
    assert {"echo", "add", "weather", "fail", "hang", "big"} <= set(by_name)
    echo = by_name["echo"]
    assert echo["object"] == "mcp_tool"
    assert echo["input_schema"]["properties"]["text"]["type"] == "string"
    assert echo["approval"] == "manual"
    assert echo["qualified_name"].endswith("echo")

    for text_ in (str(created), got.text, tools.text, str(listed), await dump(db)):
        assert HEADER_SECRET not in text_
        assert TOKEN_SECRET not in text_
    [event] = await events_of(db, "mcp.server_created.v1")
    assert event["data"]["secrets"] == ["bearer_token", "headers"]
    assert event["stream_id"] == f"mcp_server-{created['id']}"


async def test_stdio_servers_are_for_instance_admins(client: httpx.AsyncClient, db: Database) -> None:
    ada = await user(client, "ada@example.com")  # first account: the instance admin
    bob = await user(client, "bob@example.com")
    assert_problem(await client.post(S, json=STDIO, headers=bob.headers), 403, "forbidden")
    zed = await other_tenant_admin(client, ada)  # a tenant admin, but not of the instance
    assert_problem(await client.post(S, json=STDIO, headers=zed.headers), 403, "forbidden")

    resp = await client.post(S, json=STDIO, headers=ada.headers)
    assert resp.status_code == 201, resp.text
    server = resp.json()
    assert server["env_names"] == ["FAKE_SECRET"]
    assert server["command"] == sys.executable
    assert server["url"] is None
    assert server["credential_host"] is None
    assert ENV_SECRET not in resp.text
    assert ENV_SECRET not in await dump(db)

    tools = await client.get(f"{S}/{server['id']}/tools", headers=ada.headers)
    assert tools.status_code == 200, tools.text
    assert "echo" in {t["name"] for t in tools.json()["data"]}

    # an editor who is not an instance admin may use it but not change it
    await share(client, ada, server["id"], bob, "editor")
    assert (await client.get(f"{S}/{server['id']}/tools", headers=bob.headers)).status_code == 200
    patched = await client.patch(f"{S}/{server['id']}", json={"args": ["-c", "print(1)"]}, headers=bob.headers)
    assert_problem(patched, 403, "forbidden")
    assert (await client.get(f"{S}/{server['id']}", headers=ada.headers)).json()["args"] == STDIO["args"]
    ok = await client.patch(f"{S}/{server['id']}", json={"approval": "auto"}, headers=ada.headers)
    assert ok.status_code == 200, ok.text


async def test_a_user_cannot_turn_an_http_server_into_a_program(
    client: httpx.AsyncClient, db: Database, mcp_url: str
) -> None:
    await user(client, "ada@example.com")
    bob = await user(client, "bob@example.com")
    mine = await http_server(client, bob, mcp_url)
    body = {"transport": "stdio", "command": "/bin/sh", "args": ["-c", "id"]}
    assert_problem(await client.patch(f"{S}/{mine['id']}", json=body, headers=bob.headers), 403, "forbidden")
    assert (await client.get(f"{S}/{mine['id']}", headers=bob.headers)).json()["transport"] == "streamable_http"


async def test_sharing_through_the_acl(
    client: httpx.AsyncClient, db: Database, services: Services, mcp_url: str
) -> None:
    ada = await user(client, "ada@example.com")
    bob = await user(client, "bob@example.com")
    server = await http_server(client, ada, mcp_url)
    sid = server["id"]
    for method, path in (("GET", ""), ("GET", "/tools"), ("POST", "/refresh"), ("DELETE", "")):
        assert_problem(
            await client.request(method, f"{S}/{sid}{path}", headers=bob.headers), 404, "mcp_server_not_found"
        )
    assert_problem(
        await client.patch(f"{S}/{sid}", json={"name": "mine"}, headers=bob.headers), 404, "mcp_server_not_found"
    )
    assert (await client.get(S, headers=bob.headers)).json()["data"] == []
    assert await directory_of(services).configs(principal_of(bob), None) == []

    await share(client, ada, sid, bob, "viewer")
    assert [s["id"] for s in (await client.get(S, headers=bob.headers)).json()["data"]] == [sid]
    assert (await client.get(f"{S}/{sid}/tools", headers=bob.headers)).status_code == 200
    assert_problem(await client.post(f"{S}/{sid}/refresh", headers=bob.headers), 403, "forbidden")
    assert_problem(await client.patch(f"{S}/{sid}", json={"name": "x"}, headers=bob.headers), 403, "forbidden")

    await share(client, ada, sid, bob, "editor")
    refreshed = await client.post(f"{S}/{sid}/refresh", headers=bob.headers)
    assert refreshed.status_code == 200, refreshed.text
    assert "echo" in {t["name"] for t in refreshed.json()["data"]}
    [event] = await events_of(db, "mcp.server_tools_refreshed.v1")
    assert "echo" in event["data"]["tools"]
    assert event["metadata"]["actor"] == f"user:{bob.id}"
    assert_problem(await client.delete(f"{S}/{sid}", headers=bob.headers), 403, "forbidden")


async def test_the_outbound_guard_checks_urls(client: httpx.AsyncClient, db: Database, mcp_url: str) -> None:
    ada = await user(client, "ada@example.com")
    blocked = [
        "https://10.1.2.3/mcp",  # private
        "https://169.254.169.254/latest",  # link-local (cloud metadata)
        "https://[::1]/mcp",  # loopback not on the allow-list
        "http://93.184.216.34/mcp",  # public, but plain http to a host nobody allow-listed
        "https://user:pw@example.com/mcp",  # credentials in the URL
    ]
    for url in blocked:
        body = {"name": "x", "transport": "sse", "url": url}
        assert_problem(await client.post(S, json=body, headers=ada.headers), 422, "outbound_blocked")
    server = await http_server(client, ada, mcp_url)
    patched = await client.patch(f"{S}/{server['id']}", json={"url": "https://10.1.2.3/mcp"}, headers=ada.headers)
    assert_problem(patched, 422, "outbound_blocked")
    # a tenant admin's allow-list lets one private host through
    allow = await client.patch("/api/v1/admin/settings", json={"outbound_allow": ["10.1.2.3"]}, headers=ada.headers)
    assert allow.status_code == 200, allow.text
    ok = await client.post(
        S, json={"name": "y", "transport": "sse", "url": "http://10.1.2.3:9/sse"}, headers=ada.headers
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["transport"] == "sse"


async def test_secrets_are_bound_to_their_host(client: httpx.AsyncClient, db: Database, mcp_url: str) -> None:
    ada = await user(client, "ada@example.com")
    server = await http_server(client, ada, mcp_url)
    moved = mcp_url.replace("127.0.0.1", "localhost")
    resp = await client.patch(f"{S}/{server['id']}", json={"url": moved}, headers=ada.headers)
    body = assert_problem(resp, 422, "credentials_host_mismatch")
    assert "bearer_token" in body["detail"]
    assert "headers" in body["detail"]
    resp = await client.patch(
        f"{S}/{server['id']}",
        json={"url": moved, "headers": {"X-Other": "v"}, "bearer_token": None},
        headers=ada.headers,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["credential_host"] == moved.split("/")[2]
    assert resp.json()["header_names"] == ["X-Other"]
    assert resp.json()["has_bearer_token"] is False
    [event] = await events_of(db, "mcp.server_updated.v1")
    assert event["data"]["changed"] == ["url", "headers", "bearer_token"]
    assert "X-Other" not in str(event)
    assert HEADER_SECRET not in await dump(db)


async def test_disabled_and_unreachable_servers_are_problems(
    client: httpx.AsyncClient, db: Database, services: Services, mcp_url: str
) -> None:
    ada = await user(client, "ada@example.com")
    server = await http_server(client, ada, mcp_url)
    off = await client.patch(f"{S}/{server['id']}", json={"enabled": False}, headers=ada.headers)
    assert off.status_code == 200
    assert off.json()["enabled"] is False
    assert_problem(await client.get(f"{S}/{server['id']}/tools", headers=ada.headers), 409, "mcp_server_disabled")
    assert_problem(await client.post(f"{S}/{server['id']}/refresh", headers=ada.headers), 409, "mcp_server_disabled")
    assert await directory_of(services).configs(principal_of(ada), None) == []

    origin = "/".join(mcp_url.split("/")[:3])
    dead = await http_server(client, ada, f"{origin}/nothing-here", name="dead")
    assert_problem(await client.get(f"{S}/{dead['id']}/tools", headers=ada.headers), 502, "mcp_unavailable")
    assert_problem(await client.post(f"{S}/{dead['id']}/refresh", headers=ada.headers), 502, "mcp_unavailable")
    closed = await http_server(client, ada, "http://127.0.0.1:9/mcp", name="closed")
    assert_problem(await client.get(f"{S}/{closed['id']}/tools", headers=ada.headers), 502, "mcp_unavailable")
    assert await events_of(db, "mcp.server_tools_refreshed.v1") == []


async def test_allowed_tools_and_approval_shape_the_listing(
    client: httpx.AsyncClient, db: Database, mcp_url: str
) -> None:
    ada = await user(client, "ada@example.com")
    server = await http_server(
        client, ada, mcp_url, approval="deny", allowed_tools=["echo", "add"], tool_approval={"echo": "auto"}
    )
    tools = (await client.get(f"{S}/{server['id']}/tools", headers=ada.headers)).json()["data"]
    assert {t["name"]: t["approval"] for t in tools} == {"echo": "auto", "add": "deny"}
    everything = await client.patch(f"{S}/{server['id']}", json={"allowed_tools": None}, headers=ada.headers)
    assert everything.json()["allowed_tools"] is None
    tools = (await client.get(f"{S}/{server['id']}/tools", headers=ada.headers)).json()["data"]
    assert {"echo", "add", "weather", "big"} <= {t["name"] for t in tools}


async def test_etags_guard_changes_and_deletes(client: httpx.AsyncClient, db: Database, mcp_url: str) -> None:
    ada = await user(client, "ada@example.com")
    server = await http_server(client, ada, mcp_url)
    url = f"{S}/{server['id']}"
    stale = await client.patch(url, json={"name": "n"}, headers={**ada.headers, "If-Match": '"7"'})
    assert_problem(stale, 412, "precondition_failed")
    ok = await client.patch(url, json={"name": "n"}, headers={**ada.headers, "If-Match": '"1"'})
    assert ok.status_code == 200, ok.text
    assert ok.headers["etag"] == '"2"'
    same = await client.patch(url, json={"name": "n", "headers": {"X-Api-Secret": HEADER_SECRET}}, headers=ada.headers)
    assert same.status_code == 200
    assert same.headers["etag"] == '"2"'
    assert_problem(await client.delete(url, headers={**ada.headers, "If-Match": '"1"'}), 412, "precondition_failed")
    gone = await client.delete(url, headers={**ada.headers, "If-Match": '"2"'})
    assert gone.status_code == 204
    assert_problem(await client.get(url, headers=ada.headers), 404, "mcp_server_not_found")
    assert [e["data"]["version"] for e in await events_of(db, "mcp.server_deleted.v1")] == [2]
    async with db.read() as s:
        grants = await s.scalar(text("SELECT count(*) FROM acl_grants WHERE entity_type = 'mcp_server'"))
    assert grants == 0


async def test_bad_input_is_a_problem(client: httpx.AsyncClient, db: Database, mcp_url: str) -> None:
    ada = await user(client, "ada@example.com")
    bad: list[tuple[dict[str, Any], int, str]] = [
        ({"name": "x", "transport": "websocket", "url": mcp_url}, 400, "validation_error"),
        ({"name": "", "transport": "sse", "url": mcp_url}, 400, "validation_error"),
        ({"name": "x", "transport": "sse", "url": "file:///etc/passwd"}, 400, "validation_error"),
        ({"name": "x", "transport": "sse", "url": mcp_url, "headers": {"bad header": "v"}}, 400, "validation_error"),
        ({"name": "x", "transport": "sse", "url": mcp_url, "approval": "maybe"}, 400, "validation_error"),
        ({"name": "x", "transport": "sse", "url": mcp_url, "call_timeout_s": 0}, 400, "validation_error"),
        ({"name": "x", "transport": "sse", "url": mcp_url, "allowed_tools": ["a b"]}, 400, "validation_error"),
        ({"name": "x", "transport": "sse", "url": mcp_url, "surprise": 1}, 400, "validation_error"),
        ({"name": "x", "transport": "stdio", "command": "x", "env": {"1BAD": "v"}}, 400, "validation_error"),
        ({"name": "x", "transport": "sse"}, 422, "url_required"),
        ({"name": "x", "transport": "stdio"}, 422, "command_required"),
        ({"name": "x", "transport": "sse", "url": mcp_url, "command": "ls"}, 422, "invalid_transport_fields"),
        ({"name": "x", "transport": "stdio", "command": "ls", "url": mcp_url}, 422, "invalid_transport_fields"),
    ]
    for body, status, code in bad:
        assert_problem(await client.post(S, json=body, headers=ada.headers), status, code)
    server = await http_server(client, ada, mcp_url)
    assert_problem(
        await client.post(S, json={"name": "fake", "transport": "sse", "url": mcp_url}, headers=ada.headers),
        409,
        "mcp_server_name_taken",
    )
    url = f"{S}/{server['id']}"
    for body, status, code in [
        ({"url": None}, 422, "url_required"),
        ({"command": "ls"}, 422, "invalid_transport_fields"),
        ({"enabled": "yes"}, 400, "validation_error"),
        ({"tool_approval": {"echo": "sometimes"}}, 400, "validation_error"),
    ]:
        assert_problem(await client.patch(url, json=body, headers=ada.headers), status, code)
    assert (await client.get(f"{S}/not-a-uuid", headers=ada.headers)).status_code in (400, 404)
    assert_problem(await client.get(f"{S}/{uuid.uuid4()}/tools", headers=ada.headers), 404, "mcp_server_not_found")
    assert_problem(await client.get(S, headers={}), 401, "unauthenticated")


async def test_the_directory_gives_the_gateway_decrypted_configs(
    client: httpx.AsyncClient, db: Database, services: Services, mcp_url: str
) -> None:
    ada = await user(client, "ada@example.com")
    bob = await user(client, "bob@example.com")
    first = await http_server(client, ada, mcp_url, name="a")
    second = await http_server(client, ada, mcp_url, name="b", headers=None, bearer_token=None)
    stdio = (await client.post(S, json=STDIO, headers=ada.headers)).json()
    allow = await client.patch("/api/v1/admin/settings", json={"outbound_allow": ["10.9.9.9"]}, headers=ada.headers)
    assert allow.status_code == 200
    directory = directory_of(services)
    configs = {str(c.id): c for c in await directory.configs(principal_of(ada), None)}
    assert set(configs) == {first["id"], second["id"], stdio["id"]}
    a = configs[first["id"]]
    assert a.headers == {"X-Api-Secret": HEADER_SECRET}
    assert a.bearer_token == TOKEN_SECRET
    assert a.url == mcp_url
    assert set(a.outbound_allow) == {"127.0.0.1", "10.9.9.9/32"}
    assert configs[second["id"]].headers == {}
    assert configs[second["id"]].bearer_token is None
    assert configs[stdio["id"]].env == {"FAKE_SECRET": ENV_SECRET}
    assert configs[stdio["id"]].args == STDIO["args"]
    only = await directory.configs(principal_of(ada), [uuid.UUID(second["id"])])
    assert [str(c.id) for c in only] == [second["id"]]
    assert await directory.configs(principal_of(ada), []) == []
    assert await directory.configs(principal_of(bob), None) == []
    await share(client, ada, first["id"], bob, "viewer")
    assert [str(c.id) for c in await directory.configs(principal_of(bob), None)] == [first["id"]]
