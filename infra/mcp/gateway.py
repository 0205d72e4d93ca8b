"""The MCP tool gateway (``domain.mcp.ports.ToolGateway``): lists the tools of the servers a caller may
use under provider-safe qualified names, and calls them with the arguments validated against the
tool's input schema, a per-call timeout and a result size limit, returning a typed ``ToolResult``
(never raising for a failed call). Every call that reaches a known tool is handed to the recorder
(infra.mcp.ledger) with who made it, the server, the tool, the arguments and the outcome.

Connections are pooled per (server id, version) (infra.mcp.connections) and reused; a slow or dead
server only costs the calls made to it: connecting and calling are bounded by timeouts and run in
the caller's task, so other servers' calls and the event loop go on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jsonschema  # type: ignore[import-untyped]  # (no stubs; a dependency of mcp)
import msgspec
from jsonschema.validators import validator_for  # type: ignore[import-untyped]
from mcp import types as mt
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

from domain.mcp import naming
from domain.mcp.approval import server_approval
from domain.mcp.ports import ServerDirectory, ToolGateway
from domain.mcp.types import CallContext, McpServerConfig, ToolInfo, ToolResult, ToolStatus
from domain.shared.ids import new_id
from domain.shared.principal import Principal
from infra.mcp.calls import McpUnavailable, ToolCallRecord, ToolCallRecorder
from infra.mcp.connections import ConnectFailed, Connection
from infra.net.outbound import OutboundGuard, blocked_cause

log = logging.getLogger(__name__)

DEFAULT_MAX_RESULT_BYTES = 256 * 1024


@dataclass(slots=True)
class _Listing:
    tools: list[mt.Tool]
    at: float


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


class McpGateway:
    def __init__(
        self,
        directory: ServerDirectory,
        *,
        recorder: ToolCallRecorder | None = None,
        guard: OutboundGuard | None = None,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        connect_timeout_s: float = 10.0,
        tools_ttl_s: float = 30.0,
    ) -> None:
        self.directory = directory
        self.recorder = recorder
        self.guard = guard or OutboundGuard()
        self.max_result_bytes = max_result_bytes
        self.connect_timeout_s = connect_timeout_s
        self.tools_ttl_s = tools_ttl_s
        self._connections: dict[tuple[uuid.UUID, int], Connection] = {}
        self._listings: dict[tuple[uuid.UUID, int], _Listing] = {}
        self._validators: dict[tuple[uuid.UUID, int, str], Any] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- connections ---------------------------------------------------------------------------

    def _connection(self, config: McpServerConfig) -> Connection:
        if self._closed:
            raise ConnectFailed("the MCP gateway is shut down")
        key = (config.id, config.version)
        conn = self._connections.get(key)
        if conn is not None and conn.alive:
            return conn
        if conn is not None:
            self._retire(conn)
        for (server_id, version), old in list(self._connections.items()):
            if server_id == config.id and version != config.version:  # an edited server: drop the old one
                del self._connections[(server_id, version)]
                self._retire(old)
        conn = Connection(config, self.guard)
        conn.start()
        self._connections[key] = conn
        return conn

    def _retire(self, conn: Connection) -> None:
        key = (conn.config.id, conn.config.version)
        if self._connections.get(key) is conn:
            del self._connections[key]
        task = asyncio.create_task(conn.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _session(self, config: McpServerConfig, timeout_s: float) -> Any:
        conn = self._connection(config)
        try:
            return conn, await conn.ready(timeout_s)
        except ConnectFailed:
            self._retire(conn)
            raise

    # -- tools ---------------------------------------------------------------------------------

    async def _tools(
        self, config: McpServerConfig, *, refresh: bool = False, timeout_s: float | None = None
    ) -> list[mt.Tool]:
        key = (config.id, config.version)
        cached = self._listings.get(key)
        if cached is not None and not refresh and time.monotonic() - cached.at < self.tools_ttl_s:
            return cached.tools
        limit = timeout_s if timeout_s is not None else self.connect_timeout_s
        try:
            async with asyncio.timeout(limit):
                _, session = await self._session(config, limit)
                tools: list[mt.Tool] = []
                cursor: str | None = None
                for _ in range(100):
                    params = mt.PaginatedRequestParams(cursor=cursor) if cursor else None
                    page = await session.list_tools(params=params)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
        except TimeoutError as exc:
            raise McpUnavailable(f"The MCP server {config.name!r} did not answer in time.") from exc
        except (ConnectFailed, MCPError, OSError) as exc:
            raise McpUnavailable(self._unavailable_detail(config, exc)) from exc
        self._listings[key] = _Listing(tools=tools, at=time.monotonic())
        return tools

    @staticmethod
    def _unavailable_detail(config: McpServerConfig, exc: BaseException) -> str:
        blocked = blocked_cause(exc)
        if blocked is not None:
            return f"The MCP server {config.name!r} is not reachable: {blocked.detail}"
        return f"The MCP server {config.name!r} is not reachable ({exc})."

    @staticmethod
    def _allowed(config: McpServerConfig, tool: str) -> bool:
        if config.allowed_tools is not None and tool not in config.allowed_tools:
            return False
        return server_approval(config.approval, config.tool_approval, tool) != "deny"

    @staticmethod
    def _info(config: McpServerConfig, tool: mt.Tool, qualified: str) -> ToolInfo:
        annotations = tool.annotations.model_dump(mode="json", exclude_none=True) if tool.annotations else {}
        return ToolInfo(
            server_id=config.id,
            server_name=config.name,
            name=tool.name,
            qualified_name=qualified,
            title=tool.title or (tool.annotations.title if tool.annotations else None),
            description=tool.description or "",
            input_schema=dict(tool.input_schema or {}),
            annotations=annotations,
            approval=server_approval(config.approval, config.tool_approval, tool.name),
        )

    async def server_tools(self, config: McpServerConfig, *, refresh: bool = False) -> list[ToolInfo]:
        """Every tool ``config``'s server offers (no filtering), cached briefly; ``McpUnavailable``
        when the server cannot be reached."""
        tools = await self._tools(config, refresh=refresh)
        names = naming.qualify((config.id, config.name, tool.name) for tool in tools)
        return [self._info(config, tool, name) for tool, name in zip(tools, names, strict=True)]

    async def list_tools(self, principal: Principal, selection: Sequence[uuid.UUID] | None) -> list[ToolInfo]:
        """The tools of the selected servers the principal may use; a server that cannot be reached is
        left out (and logged) rather than failing the listing."""
        configs = await self.directory.configs(principal, selection)
        listings = await asyncio.gather(*(self._tools(c) for c in configs), return_exceptions=True)
        pairs: list[tuple[McpServerConfig, mt.Tool]] = []
        for config, listing in zip(configs, listings, strict=True):
            if isinstance(listing, BaseException):
                if not isinstance(listing, McpUnavailable):
                    raise listing
                log.warning("MCP server %s left out of the tool list: %s", config.name, listing.detail)
                continue
            pairs.extend((config, tool) for tool in listing if self._allowed(config, tool.name))
        names = naming.qualify((c.id, c.name, tool.name) for c, tool in pairs)
        return [self._info(c, tool, name) for (c, tool), name in zip(pairs, names, strict=True)]

    async def _resolve(
        self, principal: Principal, qualified: str
    ) -> tuple[McpServerConfig | None, mt.Tool | None, ToolResult | None]:
        """The server and tool a qualified name stands for, looking only at servers whose slug the
        name starts with (so an unrelated dead server cannot slow the call)."""
        configs = [
            c for c in await self.directory.configs(principal, None) if qualified.startswith(naming.slug(c.name))
        ]
        matches: list[tuple[McpServerConfig, mt.Tool]] = []
        for config in configs:
            try:
                tools = await self._tools(config)
            except McpUnavailable as exc:
                if len(configs) == 1:
                    return config, None, ToolResult(status="unavailable", is_error=True, text=exc.detail)
                continue
            for tool in tools:
                base, with_id = naming.candidates(config.id, config.name, tool.name)
                if qualified == with_id:
                    return config, tool, None
                if qualified == base:
                    matches.append((config, tool))
        if len(matches) == 1:
            return matches[0][0], matches[0][1], None
        detail = f"Several tools are named {qualified!r}." if matches else f"There is no tool named {qualified!r}."
        return None, None, ToolResult(status="not_found", is_error=True, text=detail)

    # -- calls ---------------------------------------------------------------------------------

    def _validator(self, config: McpServerConfig, tool: mt.Tool) -> Any:
        key = (config.id, config.version, tool.name)
        validator = self._validators.get(key)
        if validator is None:
            schema = dict(tool.input_schema or {"type": "object"})
            cls = validator_for(schema, default=jsonschema.Draft202012Validator)
            cls.check_schema(schema)
            validator = cls(schema)
            self._validators[key] = validator
        return validator

    def _check_arguments(self, config: McpServerConfig, tool: mt.Tool, arguments: Any) -> str | None:
        if not isinstance(arguments, dict):
            return "The arguments must be a JSON object."
        try:
            validator = self._validator(config, tool)
        except jsonschema.SchemaError as exc:
            return f"The tool's input schema is invalid: {exc.message}"
        error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path)
        return f"Invalid arguments{f' at {where}' if where else ''}: {error.message}"

    def _result(self, raw: mt.CallToolResult, started: float) -> ToolResult:
        parts: list[str] = []
        for block in raw.content:
            if isinstance(block, mt.TextContent):
                parts.append(block.text)
            elif isinstance(block, mt.EmbeddedResource) and isinstance(block.resource, mt.TextResourceContents):
                parts.append(block.resource.text)
            else:
                parts.append(f"[{block.type} content]")
        text = "\n".join(parts)
        structured = raw.structured_content
        size = len(text.encode()) + (len(json.dumps(structured).encode()) if structured is not None else 0)
        if size > self.max_result_bytes:
            return ToolResult(
                status="too_large",
                is_error=True,
                text=f"The tool's result is {size} bytes, over the limit of {self.max_result_bytes}.",
                duration_ms=_elapsed_ms(started),
            )
        status: ToolStatus = "error" if raw.is_error else "ok"
        return ToolResult(
            status=status,
            is_error=bool(raw.is_error),
            text=text,
            structured=dict(structured) if isinstance(structured, dict) else None,
            duration_ms=_elapsed_ms(started),
        )

    async def call(
        self,
        principal: Principal,
        tool: str,
        arguments: dict[str, Any],
        *,
        timeout_s: float | None = None,
        context: CallContext = CallContext(),
    ) -> ToolResult:
        started = time.perf_counter()
        config, mcp_tool, failure = await self._resolve(principal, tool)
        if config is None:
            assert failure is not None
            return failure
        name = mcp_tool.name if mcp_tool is not None else tool
        if failure is None and mcp_tool is not None:
            failure = self._precheck(config, mcp_tool, arguments)
        result = failure or await self._invoke(config, name, arguments, timeout_s, started)
        if failure is not None:
            result = msgspec.structs.replace(result, duration_ms=_elapsed_ms(started))
        await self._record(principal, config, name, arguments, result, context)
        return result

    def _precheck(self, config: McpServerConfig, tool: mt.Tool, arguments: Any) -> ToolResult | None:
        if config.allowed_tools is not None and tool.name not in config.allowed_tools:
            return ToolResult(status="not_found", is_error=True, text=f"The tool {tool.name!r} is not enabled.")
        if server_approval(config.approval, config.tool_approval, tool.name) == "deny":
            return ToolResult(status="denied", is_error=True, text=f"Calls of {tool.name!r} are denied.")
        problem = self._check_arguments(config, tool, arguments)
        if problem is not None:
            return ToolResult(status="invalid_arguments", is_error=True, text=problem)
        return None

    async def _invoke(
        self, config: McpServerConfig, tool: str, arguments: dict[str, Any], timeout_s: float | None, started: float
    ) -> ToolResult:
        limit = min(timeout_s, config.call_timeout_s) if timeout_s is not None else config.call_timeout_s
        conn: Connection | None = None
        try:
            # Connecting is bounded by the connect timeout, the request by the call's own; the outer
            # limit is a backstop (the SDK's timeout fires first and cancels the request).
            async with asyncio.timeout(self.connect_timeout_s + limit + 1.0):
                conn, session = await self._session(config, self.connect_timeout_s)
                raw = await session.call_tool(tool, arguments, read_timeout_seconds=limit)
        except MCPError as exc:
            if exc.error.code == REQUEST_TIMEOUT:
                return self._timeout(limit, started)
            if exc.error.code == CONNECTION_CLOSED and conn is not None:
                self._retire(conn)
                return self._unavailable(config, exc, started)
            return ToolResult(status="error", is_error=True, text=exc.error.message, duration_ms=_elapsed_ms(started))
        except TimeoutError:
            return self._timeout(limit, started)
        except (ConnectFailed, OSError) as exc:
            return self._unavailable(config, exc, started)
        except RuntimeError as exc:  # the SDK's output-schema check of a result
            return ToolResult(status="error", is_error=True, text=str(exc), duration_ms=_elapsed_ms(started))
        return self._result(raw, started)

    @staticmethod
    def _timeout(limit: float, started: float) -> ToolResult:
        return ToolResult(
            status="timeout",
            is_error=True,
            text=f"The tool did not answer within {limit:g} s.",
            duration_ms=_elapsed_ms(started),
        )

    def _unavailable(self, config: McpServerConfig, exc: BaseException, started: float) -> ToolResult:
        return ToolResult(
            status="unavailable",
            is_error=True,
            text=self._unavailable_detail(config, exc),
            duration_ms=_elapsed_ms(started),
        )

    async def _record(
        self,
        principal: Principal,
        config: McpServerConfig,
        tool: str,
        arguments: dict[str, Any],
        result: ToolResult,
        context: CallContext,
    ) -> None:
        if self.recorder is None:
            return
        call = ToolCallRecord(
            call_id=new_id(),
            principal=principal,
            server_id=config.id,
            server_name=config.name,
            tool=tool,
            arguments=arguments if isinstance(arguments, dict) else {"value": arguments},
            result=result,
            context=context,
        )
        try:
            await self.recorder.record(call)
        except Exception:  # the call happened; a ledger failure must not turn it into an error
            log.exception("could not record the MCP tool call %s on %s", tool, config.name)

    async def aclose(self) -> None:
        """Close every pooled connection (stdio processes included)."""
        self._closed = True
        connections = list(self._connections.values())
        self._connections.clear()
        await asyncio.gather(*(c.aclose() for c in connections), return_exceptions=True)
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)


if TYPE_CHECKING:  # the adapter implements the port (checked by mypy)
    _check: type[ToolGateway] = McpGateway
