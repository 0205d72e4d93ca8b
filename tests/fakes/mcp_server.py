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
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import TypedDict

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError


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
    def __init__(self, server: uvicorn.Server, thread: threading.Thread, origin: str, path: str) -> None:
        self._server = server
        self._thread = thread
        self.origin = origin
        self.url = f"{origin}{path}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@contextlib.contextmanager
def running_mcp_http_server(name: str = "liteskill-test", path: str = "/mcp") -> Iterator[RunningMcpServer]:
    """Serve the test server over streamable HTTP on 127.0.0.1 (a free port) until the block ends."""
    app = build_server(name).streamable_http_app(streamable_http_path=path)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(app, log_level="critical", access_log=False, lifespan="on", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the MCP test server did not start")
        time.sleep(0.01)
    running = RunningMcpServer(server, thread, origin, path)
    try:
        yield running
    finally:
        server.force_exit = True
        running.stop()
        sock.close()


STDIO_COMMAND = sys.executable
STDIO_ARGS = ["-m", "tests.fakes.mcp_server"]
"""How to start this server over stdio (run from the repository root)."""


if __name__ == "__main__":
    build_server().run("stdio")
