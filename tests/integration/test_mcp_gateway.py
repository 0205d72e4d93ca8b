"""The MCP tool gateway against real MCP servers: the test server (tests/fakes/mcp_server.py) over stdio
and over streamable HTTP on a loopback port, and the published ``mcp-server-time`` over stdio.

Covers qualified names, argument validation, the per-call timeout (and that a timed-out call leaves
the pooled session usable), the result size limit, allowed_tools / deny, the outbound guard, stdio
restart after a crash, a dead or hanging server not blocking another, shutdown leaving no child
process, and the ledger (tool_calls row + audit event)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from domain.mcp.types import CallContext, McpServerConfig, ToolResult
from domain.shared.principal import Principal
from infra.db.engine import Database
from infra.db.tables.mcp import tool_calls
from infra.mcp.gateway import McpGateway, McpUnavailable
from infra.mcp.ledger import DbRecorder
from tests.fakes.mcp_server import STDIO_ARGS, RunningMcpServer, running_mcp_http_server
from tests.integration.test_auth import events_of

TENANT = uuid.uuid4()
PRINCIPAL = Principal(user_id=uuid.uuid4(), tenant_id=TENANT, role="user")


class Directory:
    """An in-memory ServerDirectory: the enabled servers, filtered by the selection."""

    def __init__(self, *configs: McpServerConfig) -> None:
        self.servers = list(configs)

    async def configs(self, principal: Principal, server_ids: Sequence[uuid.UUID] | None) -> list[McpServerConfig]:
        return [
            c
            for c in self.servers
            if c.enabled and c.tenant_id == principal.tenant_id and (server_ids is None or c.id in server_ids)
        ]


def stdio(name: str = "Local tools", **kw: Any) -> McpServerConfig:
    return McpServerConfig(
        id=uuid.uuid4(), tenant_id=TENANT, name=name, transport="stdio", command=sys.executable, args=STDIO_ARGS, **kw
    )


def http(url: str, name: str = "Remote tools", **kw: Any) -> McpServerConfig:
    kw.setdefault("outbound_allow", ("127.0.0.1",))
    return McpServerConfig(id=uuid.uuid4(), tenant_id=TENANT, name=name, transport="streamable_http", url=url, **kw)


@pytest.fixture(scope="module")
def mcp_http() -> Iterator[RunningMcpServer]:
    with running_mcp_http_server() as server:
        yield server


@pytest.fixture
async def gateways() -> AsyncIterator[list[McpGateway]]:
    made: list[McpGateway] = []
    yield made
    for gateway in made:
        await gateway.aclose()


def gateway_for(made: list[McpGateway], *configs: McpServerConfig, **kw: Any) -> McpGateway:
    gateway = McpGateway(Directory(*configs), **kw)
    made.append(gateway)
    return gateway


def children() -> list[int]:
    """Live child processes of this one running the test MCP server."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and "tests.fakes.mcp_server" in cmdline:
            out.append(int(entry.name))
    return out


def ok(result: ToolResult) -> ToolResult:
    assert result.status == "ok", result
    assert not result.is_error
    return result


async def test_lists_namespaced_tools_of_both_transports(
    mcp_http: RunningMcpServer, gateways: list[McpGateway]
) -> None:
    a, b = stdio(), http(mcp_http.url)
    gateway = gateway_for(gateways, a, b)
    tools = await gateway.list_tools(PRINCIPAL, None)
    names = {t.qualified_name for t in tools}
    assert {"local-tools__echo", "remote-tools__echo", "local-tools__weather", "remote-tools__hang"} <= names
    assert len(names) == len(tools)
    echo = next(t for t in tools if t.qualified_name == "remote-tools__echo")
    assert (echo.server_id, echo.server_name, echo.name) == (b.id, "Remote tools", "echo")
    assert echo.input_schema["required"] == ["text"]
    assert echo.description == "Return the text unchanged."
    only_a = await gateway.list_tools(PRINCIPAL, [a.id])
    assert {t.server_id for t in only_a} == {a.id}
    # Both servers' echo answer under their own names.
    assert ok(await gateway.call(PRINCIPAL, "local-tools__echo", {"text": "one"})).text == "one"
    assert ok(await gateway.call(PRINCIPAL, "remote-tools__echo", {"text": "two"})).text == "two"


async def test_same_slug_servers_get_distinct_names_that_resolve(
    mcp_http: RunningMcpServer, gateways: list[McpGateway]
) -> None:
    a, b = http(mcp_http.url, name="Search"), http(mcp_http.url, name="search!")
    gateway = gateway_for(gateways, a, b)
    tools = [t for t in await gateway.list_tools(PRINCIPAL, None) if t.name == "echo"]
    assert len({t.qualified_name for t in tools}) == 2
    for tool in tools:
        assert tool.qualified_name == f"search-{tool.server_id.hex[:6]}__echo"
    # Alone in a selection a server keeps the short name, and the call still resolves to it.
    assert [t.qualified_name for t in await gateway.list_tools(PRINCIPAL, [a.id]) if t.name == "echo"] == [
        "search__echo"
    ]
    ambiguous = await gateway.call(PRINCIPAL, "search__echo", {"text": "x"})
    assert ambiguous.status == "not_found"
    assert ok(await gateway.call(PRINCIPAL, tools[1].qualified_name, {"text": "x"})).text == "x"


@pytest.mark.parametrize("transport", ["stdio", "streamable_http"])
async def test_results_text_structured_and_errors(
    transport: str, mcp_http: RunningMcpServer, gateways: list[McpGateway]
) -> None:
    config = stdio(name="T") if transport == "stdio" else http(mcp_http.url, name="T")
    gateway = gateway_for(gateways, config)
    echo = ok(await gateway.call(PRINCIPAL, "t__echo", {"text": "hello"}))
    assert echo.text == "hello"
    assert echo.duration_ms >= 0
    assert ok(await gateway.call(PRINCIPAL, "t__add", {"a": 2, "b": 40})).structured == {"result": 42}
    weather = ok(await gateway.call(PRINCIPAL, "t__weather", {"city": "Oslo"}))
    assert weather.structured == {"city": "Oslo", "temperature_c": 21.5, "conditions": "sunny"}
    failed = await gateway.call(PRINCIPAL, "t__fail", {})
    assert (failed.status, failed.is_error) == ("error", True)
    assert "always fails" in failed.text


async def test_invalid_arguments_are_refused_before_calling(
    mcp_http: RunningMcpServer, gateways: list[McpGateway]
) -> None:
    gateway = gateway_for(gateways, http(mcp_http.url, name="T"))
    wrong_type = await gateway.call(PRINCIPAL, "t__add", {"a": "two", "b": 1})
    assert (wrong_type.status, wrong_type.is_error) == ("invalid_arguments", True)
    assert "integer" in wrong_type.text
    missing = await gateway.call(PRINCIPAL, "t__echo", {})
    assert missing.status == "invalid_arguments"
    assert "'text' is a required property" in missing.text
    not_object = await gateway.call(PRINCIPAL, "t__echo", ["x"])  # type: ignore[arg-type]
    assert not_object.status == "invalid_arguments"
    # The server would have answered a wrong type with an error of its own, not this status.
    assert ok(await gateway.call(PRINCIPAL, "t__add", {"a": 2, "b": 1})).structured == {"result": 3}


async def test_not_found_filtered_disabled_and_denied(mcp_http: RunningMcpServer, gateways: list[McpGateway]) -> None:
    limited = http(
        mcp_http.url,
        name="Limited",
        allowed_tools=["echo", "add"],
        approval="auto",
        tool_approval={"add": "deny"},
    )
    off = http(mcp_http.url, name="Off", enabled=False)
    gateway = gateway_for(gateways, limited, off)
    listed = {t.qualified_name for t in await gateway.list_tools(PRINCIPAL, None)}
    assert listed == {"limited__echo"}
    assert (await gateway.call(PRINCIPAL, "limited__big", {"n": 1})).status == "not_found"
    assert (await gateway.call(PRINCIPAL, "limited__nope", {})).status == "not_found"
    assert (await gateway.call(PRINCIPAL, "off__echo", {"text": "x"})).status == "not_found"
    denied = await gateway.call(PRINCIPAL, "limited__add", {"a": 1, "b": 2})
    assert (denied.status, denied.is_error) == ("denied", True)
    other = Principal(user_id=uuid.uuid4(), tenant_id=uuid.uuid4(), role="admin")
    assert (await gateway.call(other, "limited__echo", {"text": "x"})).status == "not_found"
    assert ok(await gateway.call(PRINCIPAL, "limited__echo", {"text": "x"})).text == "x"


@pytest.mark.parametrize("transport", ["stdio", "streamable_http"])
async def test_timeout_does_not_poison_the_pooled_session(
    transport: str, mcp_http: RunningMcpServer, gateways: list[McpGateway]
) -> None:
    config = stdio(name="T", call_timeout_s=0.6) if transport == "stdio" else http(mcp_http.url, name="T")
    gateway = gateway_for(gateways, config)
    ok(await gateway.call(PRINCIPAL, "t__echo", {"text": "warm"}))
    hung = await gateway.call(PRINCIPAL, "t__hang", {}, timeout_s=None if transport == "stdio" else 0.5)
    assert (hung.status, hung.is_error) == ("timeout", True)
    assert ok(await gateway.call(PRINCIPAL, "t__echo", {"text": "after"})).text == "after"
    assert len(gateway._connections) == 1


async def test_result_size_limit(mcp_http: RunningMcpServer, gateways: list[McpGateway]) -> None:
    gateway = gateway_for(gateways, http(mcp_http.url, name="T"), max_result_bytes=10_000)
    assert len(ok(await gateway.call(PRINCIPAL, "t__big", {"n": 4_000})).text) == 4_000
    too_big = await gateway.call(PRINCIPAL, "t__big", {"n": 20_000})
    assert (too_big.status, too_big.is_error, too_big.structured) == ("too_large", True, None)
    assert "10000" in too_big.text


async def test_connections_are_reused(gateways: list[McpGateway]) -> None:
    gateway = gateway_for(gateways, stdio(name="T"))
    first = ok(await gateway.call(PRINCIPAL, "t__pid", {})).structured
    second = ok(await gateway.call(PRINCIPAL, "t__pid", {})).structured
    assert first == second
    assert len(children()) >= 1


async def test_stdio_process_is_restarted_after_a_crash(gateways: list[McpGateway]) -> None:
    gateway = gateway_for(gateways, stdio(name="T"))
    structured = ok(await gateway.call(PRINCIPAL, "t__pid", {})).structured
    assert structured is not None
    pid = structured["result"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pid in children() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    again = ok(await gateway.call(PRINCIPAL, "t__pid", {})).structured
    assert again is not None
    assert again["result"] != pid


async def test_dead_and_hanging_servers_do_not_block_others(
    mcp_http: RunningMcpServer, gateways: list[McpGateway]
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)  # accepts the connection, never answers
        writer.close()

    hanging_server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = hanging_server.sockets[0].getsockname()[1]
    try:
        hanging = http(f"http://127.0.0.1:{port}/mcp", name="Hanging")
        dead = http("http://127.0.0.1:1/mcp", name="Dead")
        healthy = http(mcp_http.url, name="Healthy")
        gateway = gateway_for(gateways, hanging, dead, healthy, connect_timeout_s=2)

        slow = asyncio.create_task(gateway.call(PRINCIPAL, "hanging__echo", {"text": "x"}))
        gone = asyncio.create_task(gateway.call(PRINCIPAL, "dead__echo", {"text": "x"}))
        fine = await gateway.call(PRINCIPAL, "healthy__echo", {"text": "x"})
        assert fine.status == "ok", fine
        assert not slow.done()  # the healthy server answered while the hanging one still waits
        assert (await gone).status == "unavailable"
        assert (await slow).status == "unavailable"
        # The listing leaves the unreachable servers out instead of failing.
        listed = {t.server_name for t in await gateway.list_tools(PRINCIPAL, [dead.id, healthy.id])}
        assert listed == {"Healthy"}
        with pytest.raises(McpUnavailable):
            await gateway.server_tools(dead, refresh=True)
    finally:
        hanging_server.close()


async def test_outbound_guard_blocks_unlisted_private_hosts(
    mcp_http: RunningMcpServer, gateways: list[McpGateway]
) -> None:
    config = http(mcp_http.url, name="T", outbound_allow=())
    gateway = gateway_for(gateways, config)
    with pytest.raises(McpUnavailable) as caught:
        await gateway.server_tools(config)
    assert "not allowed" in caught.value.detail
    assert (await gateway.call(PRINCIPAL, "t__echo", {"text": "x"})).status == "unavailable"


async def test_aclose_leaves_no_child_process(gateways: list[McpGateway]) -> None:
    gateway = McpGateway(Directory(stdio(name="A"), stdio(name="B")))
    pids = set()
    for name in ("a__pid", "b__pid"):
        structured = ok(await gateway.call(PRINCIPAL, name, {})).structured
        assert structured is not None
        pids.add(structured["result"])
    assert pids <= set(children())
    await gateway.aclose()
    assert not pids & set(children())
    assert (await gateway.call(PRINCIPAL, "a__pid", {})).status == "unavailable"


async def test_published_time_server_over_stdio(gateways: list[McpGateway]) -> None:
    config = McpServerConfig(
        id=uuid.uuid4(),
        tenant_id=TENANT,
        name="time",
        transport="stdio",
        command=sys.executable,
        args=["-m", "mcp_server_time"],
    )
    gateway = gateway_for(gateways, config)
    names = {t.qualified_name for t in await gateway.list_tools(PRINCIPAL, None)}
    assert "time__get_current_time" in names
    result = ok(await gateway.call(PRINCIPAL, "time__get_current_time", {"timezone": "UTC"}))
    assert result.structured is not None
    assert result.structured["timezone"] == "UTC"
    year = int(result.structured["datetime"][:4])
    assert year >= 2025
    assert (await gateway.call(PRINCIPAL, "time__get_current_time", {})).status == "invalid_arguments"


async def test_calls_are_recorded_and_audited(
    db: Database, mcp_http: RunningMcpServer, gateways: list[McpGateway]
) -> None:
    config = http(mcp_http.url, name="Ledger")
    gateway = gateway_for(gateways, config, recorder=DbRecorder(db))
    principal = Principal(user_id=uuid.uuid4(), tenant_id=uuid.uuid4(), role="user")
    gateway.directory = Directory(McpServerConfig(**{**_fields(config), "tenant_id": principal.tenant_id}))
    run_id = uuid.uuid4()
    ok(
        await gateway.call(
            principal, "ledger__echo", {"text": "hi", "api_key": "sk-very-secret"}, context=CallContext(run_id=run_id)
        )
    )
    await gateway.call(principal, "ledger__big", {"n": 2_000})
    await gateway.call(principal, "ledger__add", {"a": "x", "b": 1})
    async with db.read() as session:
        rows = (
            await session.execute(
                select(tool_calls).where(tool_calls.c.tenant_id == principal.tenant_id).order_by(tool_calls.c.id)
            )
        ).all()
        assert [(r.tool, r.status, r.is_error) for r in rows] == [
            ("echo", "ok", False),
            ("big", "ok", False),
            ("add", "invalid_arguments", True),
        ]
        echo = rows[0]
        assert (echo.user_id, echo.server_id, echo.server_name, echo.run_id) == (
            principal.user_id,
            config.id,
            "Ledger",
            run_id,
        )
        assert echo.arguments == {"text": "hi", "api_key": "[redacted]"}
        assert echo.result_summary == "hi"
        assert len(rows[1].result_summary) == 500
        calls = {str(r.call_id) for r in rows}
    events = [e for e in await events_of(db, "mcp.tool_called.v1") if e["data"]["call_id"] in calls]
    assert sorted(e["stream_id"] for e in events) == sorted(f"tool_call-{c}" for c in calls)
    first = next(e for e in events if e["stream_id"] == f"tool_call-{echo.call_id}")
    assert (first["data"]["status"], first["data"]["tool"]) == ("ok", "echo")
    assert first["metadata"]["actor"] == principal.actor
    assert "sk-very-secret" not in str(events)


def _fields(config: McpServerConfig) -> dict[str, Any]:
    return {f: getattr(config, f) for f in config.__struct_fields__}


async def test_the_older_sse_transport_lists_calls_and_times_out_like_the_others(
    gateways: list[McpGateway],
) -> None:
    with running_mcp_http_server(transport="sse") as server:
        config = McpServerConfig(
            id=uuid.uuid4(),
            tenant_id=TENANT,
            name="Legacy tools",
            transport="sse",
            url=server.url,
            outbound_allow=("127.0.0.1",),
        )
        gateway = gateway_for(gateways, config)
        names = {t.qualified_name for t in await gateway.list_tools(PRINCIPAL, None)}
        assert {"legacy-tools__echo", "legacy-tools__add"} <= names
        assert ok(await gateway.call(PRINCIPAL, "legacy-tools__echo", {"text": "over sse"})).text == "over sse"
        added = ok(await gateway.call(PRINCIPAL, "legacy-tools__add", {"a": 2, "b": 3}))
        assert added.structured == {"result": 5}
        hung = await gateway.call(PRINCIPAL, "legacy-tools__hang", {}, timeout_s=0.5)
        assert hung.status == "timeout"
        assert ok(await gateway.call(PRINCIPAL, "legacy-tools__echo", {"text": "still"})).text == "still"
