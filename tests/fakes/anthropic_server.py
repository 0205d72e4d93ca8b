"""A small but real Anthropic Messages API for tests, served by uvicorn on a loopback port in a thread.

``POST /v1/messages`` with ``"stream": true`` answers the scenario named by the request's model
(``model="scenario:<name>"``, see tests/fakes/chat_scenarios.py) in Anthropic's own SSE protocol:
``message_start`` (usage with cache reads and writes), ``content_block_start`` / ``_delta`` /
``_stop`` for text and ``tool_use`` blocks (arguments as ``input_json_delta`` fragments, starting
with the empty fragment the real API sends), ``ping`` events in between, ``message_delta`` (stop
reason and output tokens) and ``message_stop``. HTTP errors carry the API's error body
``{"type": "error", "error": {"type": ..., "message": ...}}`` and ``retry-after``.

Besides the shared scenarios it speaks:

- ``flaky``: the first request since ``reset()`` gets 429 with ``retry-after: 0``, later ones ``text``;
- ``slow``: a text delta every 50 ms for 10 s, recording when the client disconnected;
- ``overloaded_529``: Anthropic's own overload answer, 529 ``overloaded_error``;
- ``stream_error``: one text delta, then ``event: error`` (``overloaded_error``) inside the 200 stream;
- ``no_stop``: the ``text`` scenario whose body ends cleanly after ``message_delta`` (no ``message_stop``);
- ``bad_tool_json``: a tool call whose argument fragments are not JSON;
- ``cache_write``: ``text`` with input split into uncached, cache-read and cache-write tokens.

A request without an API key (``x-api-key`` or a bearer token) gets 401 ``authentication_error``.
Every request body is recorded in ``requests`` (headers in ``headers``, query strings in
``queries``); ``disconnects`` holds
``(scenario, monotonic time)`` for each streaming request whose client went away early.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.chat_scenarios import SCENARIOS, Scenario, ToolCallScript, agent
from tests.fakes.serving import ThreadedServer, read_body

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
STOP_REASONS = {"content_filter": "refusal"}

EXTRA: dict[str, Scenario] = {
    "overloaded_529": Scenario(http_error=529, error_message="Overloaded"),
    "no_stop": SCENARIOS["text"],
    "stream_error": Scenario(text=["Hel"]),
    "bad_tool_json": Scenario(tool_calls=[ToolCallScript("call_9", "broken", ['{"a":', " nope"])], finish="tool_use"),
    "cache_write": Scenario(text=["ok"], input_tokens=30, cached_input_tokens=10, output_tokens=1),
}
CACHE_WRITE_TOKENS = {"cache_write": 15}
"""Tokens the scenario reports as ``cache_creation_input_tokens`` (part of its ``input_tokens``)."""


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def error_body(status: int, message: str) -> bytes:
    kind = ERROR_TYPES.get(status, "api_error")
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


@dataclass
class FakeAnthropicServer:
    base_url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    disconnects: list[tuple[str, float]] = field(default_factory=list)
    flaky_seen: int = 0
    _runner: ThreadedServer | None = None

    def reset(self) -> None:
        self.requests.clear()
        self.headers.clear()
        self.paths.clear()
        self.queries.clear()
        self.disconnects.clear()
        self.flaky_seen = 0

    def wait_for_disconnect(self, timeout_s: float) -> float | None:
        """The monotonic time the first early disconnect was seen, waiting up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.disconnects:
                return self.disconnects[0][1]
            time.sleep(0.01)
        return self.disconnects[0][1] if self.disconnects else None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._runner = ThreadedServer(self.app, "the fake Anthropic server", http="h11")
        self.base_url = self._runner.start()

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.stop(force=True)

    # -- ASGI ---------------------------------------------------------------------------------

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        raw = await read_body(receive)
        self.paths.append(scope["path"])
        self.queries.append(scope["query_string"].decode())
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.headers.append(headers)
        if scope["method"] != "POST" or scope["path"] != "/v1/messages":
            await self._error(send, 404, f"Not found: {scope['path']}")
            return
        if not headers.get("x-api-key") and not headers.get("authorization", "").removeprefix("Bearer ").strip():
            await self._error(send, 401, "x-api-key header is required")
            return
        try:
            body = json.loads(raw)
        except ValueError:
            await self._error(send, 400, "The request body is not valid JSON")
            return
        self.requests.append(body)
        model = str(body.get("model", ""))
        name = model.removeprefix("scenario:")
        if not model.startswith("scenario:"):
            await self._error(send, 404, f"model: {model}")
            return
        if not body.get("stream"):
            await self._error(send, 400, "this fake only streams")
            return
        if not isinstance(body.get("max_tokens"), int):
            await self._error(send, 400, "max_tokens: Field required")
            return
        if name == "flaky":
            self.flaky_seen += 1
            if self.flaky_seen == 1:
                await self._error(send, 429, "Rate limit reached", retry_after="0")
                return
            name = "text"
        if name == "slow":
            await self._slow(send, receive)
            return
        scenario = self._agent(body["messages"]) if name == "agent" else SCENARIOS.get(name) or EXTRA.get(name)
        if scenario is None:
            await self._error(send, 404, f"model: {model}")
            return
        if scenario.http_error is not None:
            await self._error(send, scenario.http_error, scenario.error_message, scenario.retry_after)
            return
        await self._stream(name, model, scenario, send, receive)

    @staticmethod
    def _agent(messages: list[dict[str, Any]]) -> Scenario:
        """``scenario:agent`` (tests.fakes.chat_scenarios.agent) from an Anthropic-style
        conversation: tool results come back as ``tool_result`` blocks of a user message."""

        def blocks(m: dict[str, Any]) -> list[dict[str, Any]]:
            content = m.get("content")
            return [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])

        def text(value: Any) -> str:
            if isinstance(value, list):
                return "".join(str(b.get("text", "")) for b in value if isinstance(b, dict))
            return str(value or "")

        asks = [
            i
            for i, m in enumerate(messages)
            if m.get("role") == "user" and any(b.get("type") == "text" for b in blocks(m))
        ]
        last = asks[-1] if asks else -1
        after = messages[last + 1 :]
        rounds = sum(
            1 for m in after if m.get("role") == "assistant" and any(b.get("type") == "tool_use" for b in blocks(m))
        )
        results = [text(b.get("content")) for m in after for b in blocks(m) if b.get("type") == "tool_result"]
        script = text([b for b in blocks(messages[last]) if b.get("type") == "text"]) if last >= 0 else ""
        return agent(script, rounds, results)

    async def _error(self, send: Any, status: int, message: str, retry_after: str | None = None) -> None:
        headers = [(b"content-type", b"application/json"), (b"request-id", f"req_{secrets.token_hex(8)}".encode())]
        if retry_after is not None:
            headers.append((b"retry-after", retry_after.encode()))
        if status in (429, 500, 503, 529):
            headers.append((b"x-should-retry", b"true"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": error_body(status, message)})

    @staticmethod
    async def _start_sse(send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"request-id", f"req_{secrets.token_hex(8)}".encode()),
                ],
            }
        )

    @staticmethod
    def _message_start(model: str, scenario: Scenario, cache_write: int = 0) -> bytes:
        uncached = scenario.input_tokens - scenario.cached_input_tokens - cache_write
        message = {
            "id": f"msg_{secrets.token_hex(8)}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": uncached,
                "cache_creation_input_tokens": cache_write,
                "cache_read_input_tokens": scenario.cached_input_tokens,
                "output_tokens": 1,
            },
        }
        return sse("message_start", {"type": "message_start", "message": message})

    def _watch(self, name: str, receive: Any, done: asyncio.Event) -> asyncio.Task[None]:
        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    if not done.is_set():
                        self.disconnects.append((name, time.monotonic()))
                    return

        return asyncio.ensure_future(watch())

    async def _stream(self, name: str, model: str, s: Scenario, send: Any, receive: Any) -> None:
        done = asyncio.Event()
        watcher = self._watch(name, receive, done)
        try:
            await self._start_sse(send)

            async def emit(event: str, data: dict[str, Any]) -> None:
                await send({"type": "http.response.body", "body": sse(event, data), "more_body": True})

            await send(
                {
                    "type": "http.response.body",
                    "body": self._message_start(model, s, CACHE_WRITE_TOKENS.get(name, 0)),
                    "more_body": True,
                }
            )
            await emit("ping", {"type": "ping"})
            index = 0
            if s.text:
                await emit(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
                )
                for n, fragment in enumerate(s.text):
                    if s.cut_after is not None and n == s.cut_after:
                        return  # uvicorn closes the connection mid-body: no final chunk, no message_stop
                    if s.stall_after is not None and n == s.stall_after:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(asyncio.shield(watcher), 10)
                        return
                    await emit(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "text_delta", "text": fragment},
                        },
                    )
                    if n == 0:
                        await emit("ping", {"type": "ping"})
                if name == "stream_error":
                    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
                    await emit("error", error)
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
                await emit("content_block_stop", {"type": "content_block_stop", "index": index})
                index += 1
            for call in s.tool_calls:
                block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
                await emit(
                    "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
                )
                for fragment in ["", *call.fragments]:
                    delta = {"type": "input_json_delta", "partial_json": fragment}
                    await emit("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
                await emit("ping", {"type": "ping"})
                await emit("content_block_stop", {"type": "content_block_stop", "index": index})
                index += 1
            stop = STOP_REASONS.get(s.finish, s.finish)
            await emit(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": s.output_tokens},
                },
            )
            if name == "no_stop":
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await emit("message_stop", {"type": "message_stop"})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            done.set()
            watcher.cancel()

    async def _slow(self, send: Any, receive: Any) -> None:
        done = asyncio.Event()
        watcher = self._watch("slow", receive, done)
        try:
            await self._start_sse(send)
            await send(
                {
                    "type": "http.response.body",
                    "body": self._message_start("scenario:slow", Scenario()),
                    "more_body": True,
                }
            )
            start = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
            await send({"type": "http.response.body", "body": sse("content_block_start", start), "more_body": True})
            deadline = time.monotonic() + 10
            n = 0
            while time.monotonic() < deadline and not watcher.done():
                delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f"t{n} "}}
                await send({"type": "http.response.body", "body": sse("content_block_delta", delta), "more_body": True})
                n += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(watcher), 0.05)
        finally:
            done.set()
            watcher.cancel()


@contextlib.contextmanager
def running_anthropic_server() -> Iterator[FakeAnthropicServer]:
    server = FakeAnthropicServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
