"""A real MCP server for tests, built with the mcp SDK (``MCPServer``).

Tools: ``echo`` (text), ``add`` (structured content), ``weather`` (structured content with an output
schema), ``fail`` (an ``isError`` result), ``hang`` (never answers), ``big`` (``n`` characters), ``pid``
(the serving process's id, so tests can kill a stdio server).

Served over stdio (``python -m tests.fakes.mcp_server``) or over streamable HTTP on a loopback port
(``running_mcp_http_server()``, uvicorn in a daemon thread).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TypedDict

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from tests.fakes.serving import ThreadedServer


class Weather(TypedDict):
    city: str
    temperature_c: float
    conditions: str


def build_server(name: str = "liteskill-test") -> MCPServer:
    server = MCPServer(name, log_level="ERROR")

    @server.tool(description="Return the text unchanged.")
    def echo(text: str) -> str:
        return text

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="The (made-up) weather in a city.")
    def weather(city: str) -> Weather:
        return Weather(city=city, temperature_c=21.5, conditions="sunny")

    @server.tool(description="Always fails.")
    def fail() -> str:
        raise ToolError("this tool always fails")

    @server.tool(description="Never answers.")
    async def hang() -> str:
        await anyio.sleep_forever()
        return ""  # pragma: no cover

    @server.tool(description="Return n characters.")
    def big(n: int) -> str:
        return "x" * n

    @server.tool(description="The serving process's id.")
    def pid() -> int:
        return os.getpid()

    return server


class RunningMcpServer:
    def __init__(self, runner: ThreadedServer, path: str) -> None:
        self._runner = runner
        self.origin = runner.origin
        self.url = f"{runner.origin}{path}"

    def stop(self) -> None:
        self._runner.stop(force=True)


@contextlib.contextmanager
def running_mcp_http_server(
    name: str = "liteskill-test", path: str = "/mcp", transport: str = "streamable_http"
) -> Iterator[RunningMcpServer]:
    """Serve the test server on 127.0.0.1 (a free port) until the block ends: over streamable HTTP
    at ``path``, or over the older HTTP+SSE transport (``transport="sse"``, events at ``/sse``)."""
    server = build_server(name)
    if transport == "sse":
        app, path = server.sse_app(), "/sse"
    else:
        app = server.streamable_http_app(streamable_http_path=path)
    runner = ThreadedServer(app, "the MCP test server", lifespan="on", timeout_graceful_shutdown=1)
    runner.start()
    running = RunningMcpServer(runner, path)
    try:
        yield running
    finally:
        running.stop()


STDIO_COMMAND = sys.executable
STDIO_ARGS = ["-m", "tests.fakes.mcp_server"]
"""How to start this server over stdio (run from the repository root)."""


if __name__ == "__main__":
    build_server().run("stdio")
