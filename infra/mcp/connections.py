"""Pooled MCP client connections: one per (server id, version), each owned by a background task.

The SDK's transports and ``ClientSession`` are anyio context managers whose task groups must be
entered and exited in the same task, so each connection runs in its own asyncio task that enters
them, publishes the initialised session and waits until it is told to close; callers send requests
through the published session from their own tasks (the session's dispatcher correlates answers).

A connection whose transport ended (a stdio process that crashed, an HTTP session that failed) is
noticed before the next request and replaced. HTTP transports get an ``httpx2`` client behind the
outbound guard (``guarded_client2``), so every request, redirects included, is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx2
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from domain.mcp.types import McpServerConfig
from infra.net.outbound import OutboundGuard, guarded_client2, url_host

log = logging.getLogger(__name__)


class ConnectFailed(Exception):
    """The server could not be reached or did not complete the MCP handshake."""


def _http_client(config: McpServerConfig, guard: OutboundGuard) -> httpx2.AsyncClient:
    secrets = bool(config.headers) or config.bearer_token is not None
    client = guarded_client2(
        guard.with_allow(config.outbound_allow),
        credential_host=url_host(config.url or "") if secrets else None,
        timeout_s=300,
        follow_redirects=False,
    )
    client.headers.update(config.headers)
    if config.bearer_token:
        client.headers["Authorization"] = f"Bearer {config.bearer_token}"
    return client


class Connection:
    """One live MCP session with one server, owned by a background task."""

    def __init__(self, config: McpServerConfig, guard: OutboundGuard) -> None:
        self.config = config
        self.guard = guard
        self.session: ClientSession | None = None
        self.error: BaseException | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"mcp-connection-{self.config.id}")

    @property
    def alive(self) -> bool:
        """Started, not stopped, not failed, and its transport has not ended."""
        if self._task is None or self._task.done() or self._stop.is_set() or self.error is not None:
            return False
        if self.session is None:
            return True  # still connecting
        dispatcher = getattr(self.session, "_dispatcher", None)
        return not getattr(dispatcher, "_closed", False)

    async def ready(self, timeout_s: float) -> ClientSession:
        """The initialised session; ``ConnectFailed`` if connecting failed, ``TimeoutError`` if it took
        longer than ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            await self._ready.wait()
        if self.session is None:
            raise ConnectFailed(str(self.error) if self.error else "connection closed") from self.error
        return self.session

    async def _run(self) -> None:
        try:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(self._transport(stack))
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                self.session = session
                self._ready.set()
                await self._stop.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - anything ending the transport ends the connection
            self.error = exc
            self.session = None
            log.info("MCP connection to %s ended: %r", self.config.name, exc)
        finally:
            self._ready.set()

    def _transport(self, stack: contextlib.AsyncExitStack) -> Any:
        config = self.config
        if config.transport == "stdio":
            if not config.command:
                raise ConnectFailed("the server has no command")
            params = StdioServerParameters(command=config.command, args=list(config.args), env=dict(config.env) or None)
            return stdio_client(params)
        if not config.url:
            raise ConnectFailed("the server has no URL")
        if config.transport == "sse":

            def factory(
                headers: dict[str, str] | None = None,
                timeout: httpx2.Timeout | None = None,
                auth: httpx2.Auth | None = None,
            ) -> httpx2.AsyncClient:
                client = _http_client(config, self.guard)
                if headers:
                    client.headers.update(headers)
                if timeout is not None:
                    client.timeout = timeout
                if auth is not None:
                    client.auth = auth
                return client

            return sse_client(config.url, httpx_client_factory=factory)
        client = _http_client(config, self.guard)
        stack.push_async_callback(client.aclose)
        return streamable_http_client(config.url, http_client=client)

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Tell the owner task to leave its contexts (terminating a stdio process) and wait for it."""
        self._stop.set()
        task = self._task
        if task is None or task.done():
            return
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
