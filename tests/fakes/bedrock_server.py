"""A small but real Amazon Bedrock endpoint for tests: an asyncio HTTP/1.1 server on a loopback
port, run in its own thread, speaking Bedrock's wire protocol.

- ``POST /model/{modelId}/converse-stream``: ``application/vnd.amazon.eventstream`` in chunked
  transfer encoding, one binary AWS event-stream frame per chunk (prelude with total and header
  lengths and its CRC32, string headers ``:event-type`` / ``:content-type`` / ``:message-type``,
  a JSON payload, the message CRC32): messageStart, contentBlockStart (tool use),
  contentBlockDelta (text or tool-input fragments), contentBlockStop, messageStop, metadata.
  Mid-stream errors are ``:message-type: exception`` frames.
- ``POST /model/{modelId}/invoke``: Titan text embeddings v2 (``{"inputText"}`` ->
  ``{"embedding", "inputTextTokenCount"}``).
- ``POST /rerank`` (bedrock-agent-runtime): scores each inline text document by the query words
  it contains.

Errors are AWS rest-json errors: the status, ``x-amzn-ErrorType: <Code>:<namespace>`` and a
``{"message": ...}`` body. The scenario comes from the model id (``scenario:<name>``, see
tests/fakes/chat_scenarios.py, plus the Bedrock-only ``EXTRA`` scenarios of tests/fakes/bedrock_wire.py); for invoke and
rerank, a ``scenario:<name>`` model id with an ``http_error`` answers that error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from tests.fakes.bedrock_wire import (
    ERROR_CODES,
    EXTRA,
    STOP_REASONS,
    BedrockScenario,
    event_frame,
    exception_frame,
    scenario_for,
)
from tests.fakes.chat_scenarios import SCENARIOS

# -- the server ---------------------------------------------------------------------------------


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


_MODEL_PATH = re.compile(r"^/model/(?P<model>[^/]+)/(?P<action>converse-stream|invoke)$")


class FakeBedrockServer:
    """Start with ``start()`` (or use ``running_bedrock_server()``); ``reset()`` between tests."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.disconnected = threading.Event()
        """Set when a client dropped a streaming response before its end (``slow``, ``stall``)."""
        self.disconnected_at: float | None = None
        self.flaky_count = 0
        self.base_url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def requests(self) -> list[Any]:
        """The JSON bodies received, in order."""
        return [c.body for c in self.calls]

    def reset(self) -> None:
        self.calls.clear()
        self.disconnected.clear()
        self.disconnected_at = None
        self.flaky_count = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fake-bedrock", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake Bedrock server did not start")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=5)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    # -- HTTP ------------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self._writers.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    raw = await reader.readline()
                    if raw in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = raw.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                keep_open = await self._route(method, unquote(target.split("?", 1)[0]), headers, body, reader, writer)
                if not keep_open:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._handlers.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _route(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        self.calls.append(Call(method, path, headers, parsed))
        match = _MODEL_PATH.match(path)
        if method == "POST" and match and match["action"] == "converse-stream":
            return await self._converse_stream(match["model"], reader, writer)
        if method == "POST" and match and match["action"] == "invoke":
            return await self._invoke(match["model"], parsed, writer)
        if method == "POST" and path == "/rerank":
            return await self._rerank(parsed, writer)
        await self._error(writer, 404, "UnknownOperationException", f"no route for {method} {path}")
        return True

    async def _respond(
        self, writer: asyncio.StreamWriter, status: int, body: dict[str, Any], extra: dict[str, str] | None = None
    ) -> None:
        payload = json.dumps(body).encode()
        head = [
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
            "x-amzn-RequestId: 00000000-0000-0000-0000-000000000000",
            *(f"{k}: {v}" for k, v in (extra or {}).items()),
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        await writer.drain()

    async def _error(
        self, writer: asyncio.StreamWriter, status: int, code: str, message: str, retry_after: str | None = None
    ) -> None:
        extra = {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
        if retry_after is not None:
            extra["Retry-After"] = retry_after
        await self._respond(writer, status, {"message": message}, extra)

    async def _scenario_error(self, writer: asyncio.StreamWriter, model: str) -> bool:
        """Answer a ``scenario:<name>`` model's HTTP error, if it has one."""
        name = model.removeprefix("scenario:")
        if not model.startswith("scenario:") or (name not in SCENARIOS and name not in EXTRA):
            return False
        s = scenario_for(name)
        if s.base.http_error is None:
            return False
        code = s.error_code or ERROR_CODES.get(s.base.http_error, "InternalServerException")
        await self._error(writer, s.base.http_error, code, s.base.error_message, s.base.retry_after)
        return True

    # -- converse-stream -------------------------------------------------------------------------

    async def _converse_stream(self, model: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        name = model.removeprefix("scenario:")
        if name not in SCENARIOS and name not in EXTRA and name not in ("slow", "flaky"):
            await self._error(writer, 404, "ResourceNotFoundException", f"unknown scenario {name!r}")
            return True
        if name == "flaky":
            self.flaky_count += 1
            if self.flaky_count == 1:
                await self._error(writer, 429, "ThrottlingException", "Too many requests", retry_after="0")
                return True
        if await self._scenario_error(writer, model):
            return True
        head = (
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: application/vnd.amazon.eventstream\r\n"
            "Transfer-Encoding: chunked\r\n"
            "Connection: close\r\n"
            "x-amzn-RequestId: 00000000-0000-0000-0000-000000000000\r\n\r\n"
        )
        writer.write(head.encode())
        watcher = asyncio.ensure_future(self._watch_disconnect(reader))
        try:
            if name == "slow":
                await self._slow(writer, watcher)
            else:
                await self._scripted(scenario_for(name), writer, watcher)
            return False  # a streamed response ends its connection
        except ConnectionError:
            self._mark_disconnected()
            return False
        finally:
            watcher.cancel()

    async def _watch_disconnect(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(1024):
                pass
        self._mark_disconnected()

    def _mark_disconnected(self) -> None:
        if not self.disconnected.is_set():
            self.disconnected_at = time.monotonic()
            self.disconnected.set()

    @staticmethod
    async def _chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()

    async def _slow(self, writer: asyncio.StreamWriter, watcher: asyncio.Future[None]) -> None:
        await self._chunk(writer, event_frame("messageStart", {"role": "assistant"}))
        deadline = time.monotonic() + 10
        n = 0
        while time.monotonic() < deadline and not watcher.done():
            delta = {"contentBlockIndex": 0, "delta": {"text": f"t{n}"}}
            await self._chunk(writer, event_frame("contentBlockDelta", delta))
            n += 1
            await asyncio.sleep(0.05)

    async def _scripted(self, bs: BedrockScenario, writer: asyncio.StreamWriter, watcher: asyncio.Future[None]) -> None:
        s = bs.base
        await self._chunk(writer, event_frame("messageStart", {"role": "assistant"}))
        block = 0
        for i, piece in enumerate(s.text):
            if s.cut_after is not None and i == s.cut_after:
                writer.close()  # no terminating chunk: the response ends prematurely
                return
            if s.stall_after is not None and i == s.stall_after:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(watcher), 10)
                return
            delta = {"contentBlockIndex": block, "delta": {"text": piece}}
            await self._chunk(writer, event_frame("contentBlockDelta", delta))
        if bs.stream_exception is not None:
            await self._chunk(writer, exception_frame(*bs.stream_exception))
            await self._chunk(writer, b"")
            return
        if s.text:
            await self._chunk(writer, event_frame("contentBlockStop", {"contentBlockIndex": block}))
            block += 1
        for call in s.tool_calls:
            start = {"contentBlockIndex": block, "start": {"toolUse": {"toolUseId": call.id, "name": call.name}}}
            await self._chunk(writer, event_frame("contentBlockStart", start))
            for fragment in call.fragments:
                delta = {"contentBlockIndex": block, "delta": {"toolUse": {"input": fragment}}}
                await self._chunk(writer, event_frame("contentBlockDelta", delta))
            await self._chunk(writer, event_frame("contentBlockStop", {"contentBlockIndex": block}))
            block += 1
        stop = bs.stop_reason or STOP_REASONS[s.finish]
        await self._chunk(writer, event_frame("messageStop", {"stopReason": stop}))
        if bs.metadata:
            usage: dict[str, int] = {
                "inputTokens": s.input_tokens - s.cached_input_tokens,
                "outputTokens": s.output_tokens,
                "totalTokens": s.input_tokens + s.output_tokens,
            }
            if s.cached_input_tokens:
                usage["cacheReadInputTokens"] = s.cached_input_tokens
                usage["cacheWriteInputTokens"] = 0
            await self._chunk(writer, event_frame("metadata", {"usage": usage, "metrics": {"latencyMs": 42}}))
        await self._chunk(writer, b"")
        return

    # -- invoke (Titan text embeddings v2) and rerank ---------------------------------------------

    async def _invoke(self, model: str, body: Any, writer: asyncio.StreamWriter) -> bool:
        if await self._scenario_error(writer, model):
            return True
        if not isinstance(body, dict) or not isinstance(body.get("inputText"), str) or not body["inputText"]:
            await self._error(writer, 400, "ValidationException", "Malformed input request: inputText is required")
            return True
        text: str = body["inputText"]
        dimensions = int(body.get("dimensions", 4))
        vector = [float(len(text)), float(sum(map(ord, text)) % 997), *([0.5] * max(dimensions - 2, 0))][:dimensions]
        await self._respond(writer, 200, {"embedding": vector, "inputTextTokenCount": len(text.split())})
        return True

    async def _rerank(self, body: Any, writer: asyncio.StreamWriter) -> bool:
        try:
            config = body["rerankingConfiguration"]["bedrockRerankingConfiguration"]
            arn: str = config["modelConfiguration"]["modelArn"]
            query: str = body["queries"][0]["textQuery"]["text"]
            documents: list[str] = [s["inlineDocumentSource"]["textDocument"]["text"] for s in body["sources"]]
        except (KeyError, IndexError, TypeError):
            await self._error(writer, 400, "ValidationException", "Malformed rerank request")
            return True
        if await self._scenario_error(writer, arn.rsplit("/", 1)[-1]):
            return True
        words = set(query.lower().split())
        scored = [
            {"index": i, "relevanceScore": len(words & set(d.lower().split())) / max(len(words), 1)}
            for i, d in enumerate(documents)
        ]
        scored.sort(key=lambda r: -r["relevanceScore"])
        limit = config.get("numberOfResults") or len(scored)
        await self._respond(writer, 200, {"results": scored[:limit]})
        return True


@contextlib.contextmanager
def running_bedrock_server() -> Iterator[FakeBedrockServer]:
    server = FakeBedrockServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
