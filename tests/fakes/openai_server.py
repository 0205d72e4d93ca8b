"""A small but real OpenAI-compatible server for tests, served by uvicorn on a loopback port in a
thread. It speaks the wire protocol the official SDK (and vLLM, Ollama, LiteLLM, Groq, OpenRouter)
use:

- ``POST /v1/chat/completions`` with ``stream: true``: ``data: <chat.completion.chunk json>``
  server-sent events (a role chunk, content / ``tool_calls`` deltas with ``index``, ``id`` and
  ``function.name`` on a call's first fragment and ``function.arguments`` fragments after, a
  ``finish_reason`` chunk, a usage chunk with ``choices: []`` when
  ``stream_options.include_usage`` was asked for, then ``data: [DONE]``);
- ``POST /v1/embeddings`` (float or base64 vectors; the ``data`` list comes back in reverse order,
  each item carrying its ``index``, so clients must order by index);
- ``POST /v1/rerank`` (the Cohere-compatible shape vLLM, Jina and LiteLLM serve).

Errors are ``{"error": {"message", "type", "param", "code"}}`` with the real status code (and
``retry-after`` when the scenario has one). The model id picks the behaviour:
``scenario:<name>`` for every scenario in ``tests.fakes.chat_scenarios.SCENARIOS``, plus
``scenario:midstream_error`` (one text chunk, then an ``{"error": ...}`` event inside the 200
stream, as OpenAI sends when it fails mid-answer), ``scenario:flaky`` (the first chat request
since ``reset()`` gets a 429 with ``retry-after: 0``, the next ones stream the ``text``
scenario) and ``scenario:slow`` (a text delta every 50 ms for 10 s; the moment the client goes
away is recorded in ``disconnects``). Any other model id streams the
``text`` scenario (embeddings and rerank: succeed).
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from tests.fakes.chat_scenarios import SCENARIOS, Scenario, agent
from tests.fakes.serving import ThreadedServer, read_body

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "content_filter": "content_filter",
}

_ERROR_SHAPES: dict[int, tuple[str, str | None, str | None]] = {
    400: ("invalid_request_error", "messages", "context_length_exceeded"),
    401: ("invalid_request_error", None, "invalid_api_key"),
    403: ("invalid_request_error", None, "model_not_allowed"),
    404: ("invalid_request_error", None, "model_not_found"),
    429: ("requests", None, "rate_limit_exceeded"),
    503: ("server_error", None, None),
}


class _Cut(Exception):
    """Raised inside the app after the response started: uvicorn drops the connection."""


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeOpenAIServer:
    calls: list[Recorded] = field(default_factory=list)
    disconnects: list[tuple[str, float]] = field(default_factory=list)
    """``(model, time.monotonic())`` for each streamed response whose client went away early."""
    origin: str = ""
    _flaky_failed: bool = False
    _runner: ThreadedServer | None = None

    @property
    def base_url(self) -> str:
        """What to give the SDK as ``base_url``."""
        return f"{self.origin}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The JSON bodies received, in order."""
        return [c.body for c in self.calls]

    def reset(self) -> None:
        self.calls.clear()
        self.disconnects.clear()
        self._flaky_failed = False

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._runner = ThreadedServer(self.app, "the fake OpenAI server")
        self.origin = self._runner.start()

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.stop()

    # -- ASGI ---------------------------------------------------------------------------------

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        raw = await read_body(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            await self._error(send, 400, "We could not parse the JSON body of your request.")
            return
        path = scope["path"]
        self.calls.append(Recorded(path=path, headers=headers, query=query, body=body))
        if scope["method"] == "GET" and path == "/v1/models":
            await self._models(headers, send)
        elif scope["method"] != "POST":
            await self._error(send, 405, "Method not allowed.")
        elif path == "/v1/chat/completions":
            await self._chat(body, receive, send)
        elif path == "/v1/embeddings":
            await self._embeddings(body, send)
        elif path == "/v1/rerank":
            await self._rerank(body, send)
        else:
            await self._error(send, 404, f"Invalid URL (POST {path})", code=None)

    # -- responses ----------------------------------------------------------------------------

    async def _models(self, headers: dict[str, str], send: Any) -> None:
        """The model list; the key ``sk-wrong`` is refused like OpenAI refuses a bad key."""
        if headers.get("authorization") == "Bearer sk-wrong":
            await self._error(send, 401, "Incorrect API key provided: sk-wrong.", code="invalid_api_key")
            return
        data = [{"id": f"scenario:{name}", "object": "model", "created": 0, "owned_by": "fake"} for name in SCENARIOS]
        await self._json(send, 200, {"object": "list", "data": data})

    @staticmethod
    def _agent(messages: list[dict[str, Any]]) -> Scenario:
        """``scenario:agent`` (tests.fakes.chat_scenarios.agent) from an OpenAI-style conversation."""
        last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
        after = messages[last + 1 :]

        def text(content: Any) -> str:
            if isinstance(content, list):
                return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")

        rounds = sum(1 for m in after if m.get("role") == "assistant" and m.get("tool_calls"))
        results = [text(m.get("content")) for m in after if m.get("role") == "tool"]
        return agent(text(messages[last].get("content")) if last >= 0 else "", rounds, results)

    @staticmethod
    def _scenario(model: str) -> tuple[str, Scenario | None]:
        name = model.removeprefix("scenario:") if model.startswith("scenario:") else "text"
        return name, SCENARIOS.get(name)

    async def _json(self, send: Any, status: int, data: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        payload = json.dumps(data).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"x-request-id", b"req_fake"),
                    *(headers or []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _error(
        self,
        send: Any,
        status: int,
        message: str,
        *,
        retry_after: str | None = None,
        code: str | None = "",
    ) -> None:
        kind, param, default_code = _ERROR_SHAPES.get(status, ("invalid_request_error", None, None))
        error = {"message": message, "type": kind, "param": param, "code": default_code if code == "" else code}
        extra = [(b"retry-after", retry_after.encode())] if retry_after is not None else []
        await self._json(send, status, {"error": error}, extra)

    async def _chat(self, body: dict[str, Any], receive: Any, send: Any) -> None:
        model = str(body.get("model", ""))
        if not isinstance(body.get("messages"), list) or not model:
            await self._error(send, 400, "Missing required parameter: 'messages'.", code="missing_required_parameter")
            return
        name, scenario = self._scenario(model)
        if name == "agent":
            scenario = self._agent(body["messages"])
        if name == "flaky":
            if not self._flaky_failed:
                self._flaky_failed = True
                await self._error(send, 429, "Rate limit reached", retry_after="0")
                return
            scenario = SCENARIOS["text"]
        elif name == "slow":
            scenario = Scenario(text=["tick"] * 200)
        elif name == "midstream_error":
            scenario = Scenario(text=["Hel"])
        if scenario is None:
            await self._error(send, 404, f"The model `{model}` does not exist")
            return
        if scenario.http_error is not None:
            await self._error(send, scenario.http_error, scenario.error_message, retry_after=scenario.retry_after)
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        gone = asyncio.Event()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    self.disconnects.append((model, time.monotonic()))
                    gone.set()
                    return

        watcher = asyncio.create_task(watch())
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                        (b"x-request-id", b"req_fake"),
                        (b"openai-processing-ms", b"12"),
                    ],
                }
            )
            await self._stream(name, model, scenario, include_usage, send, gone)
        finally:
            watcher.cancel()

    async def _stream(
        self, name: str, model: str, s: Scenario, include_usage: bool, send: Any, gone: asyncio.Event
    ) -> None:
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                out["usage"] = None
            return out

        async def event(data: dict[str, Any] | str) -> None:
            line = data if isinstance(data, str) else json.dumps(data)
            await send({"type": "http.response.body", "body": f"data: {line}\n\n".encode(), "more_body": True})

        await event(chunk({"role": "assistant", "content": "", "refusal": None}))
        for i, text in enumerate(s.text):
            if gone.is_set():
                return
            if s.cut_after is not None and i >= s.cut_after:
                raise _Cut("dropping the connection on purpose")
            if s.stall_after is not None and i >= s.stall_after:
                await asyncio.wait_for(gone.wait(), timeout=30)
                return
            if name == "slow" and i:
                await asyncio.sleep(0.05)
            await event(chunk({"content": text}))
        if name == "midstream_error":
            error = {"message": "The server had an error while processing your request.", "type": "server_error"}
            await event({"error": {**error, "param": None, "code": None}})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        for index, call in enumerate(s.tool_calls):
            function = {"name": call.name, "arguments": ""}
            first = {"index": index, "id": call.id, "type": "function", "function": function}
            await event(chunk({"tool_calls": [first]}))
            for fragment in call.fragments:
                await event(chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}))
        await event(chunk({}, _FINISH[s.finish]))
        if include_usage:
            usage = {
                "prompt_tokens": s.input_tokens,
                "completion_tokens": s.output_tokens,
                "total_tokens": s.input_tokens + s.output_tokens,
                "prompt_tokens_details": {"cached_tokens": s.cached_input_tokens, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
            }
            final = {**chunk({}), "choices": [], "usage": usage}
            await event(final)
        await event("[DONE]")
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    def vector(text: str) -> list[float]:
        """The deterministic embedding the fake gives ``text``."""
        return [float(len(text)), float(sum(map(ord, text)) % 997), 1.0]

    async def _embeddings(self, body: dict[str, Any], send: Any) -> None:
        model = str(body.get("model", ""))
        _, scenario = self._scenario(model)
        if scenario is not None and scenario.http_error is not None:
            await self._error(send, scenario.http_error, scenario.error_message, retry_after=scenario.retry_after)
            return
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
            await self._error(send, 400, "'input' : input must be a string or an array of strings", code=None)
            return
        data = []
        for index, text in enumerate(inputs):
            vector = self.vector(text)
            encoded: Any = vector
            if body.get("encoding_format") == "base64":
                encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(len(t.split()) or 1 for t in inputs)
        await self._json(
            send,
            200,
            {
                "object": "list",
                "data": list(reversed(data)),
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    @staticmethod
    def relevance(query: str, document: str) -> float:
        """The deterministic score the fake gives ``document`` for ``query``: shared words."""
        q = set(query.lower().split())
        d = set(document.lower().split())
        return round(len(q & d) / (len(q) or 1), 4)

    async def _rerank(self, body: dict[str, Any], send: Any) -> None:
        model = str(body.get("model", ""))
        _, scenario = self._scenario(model)
        if scenario is not None and scenario.http_error is not None:
            await self._error(send, scenario.http_error, scenario.error_message, retry_after=scenario.retry_after)
            return
        query, documents, top_n = body.get("query"), body.get("documents"), body.get("top_n")
        if not isinstance(query, str) or not isinstance(documents, list):
            await self._error(send, 400, "query and documents are required", code=None)
            return
        scored = sorted(
            ({"index": i, "relevance_score": self.relevance(query, str(d))} for i, d in enumerate(documents)),
            key=lambda r: -float(r["relevance_score"]),
        )
        if isinstance(top_n, int):
            scored = scored[:top_n]
        tokens = len(query.split()) * len(documents) + sum(len(str(d).split()) for d in documents)
        await self._json(
            send,
            200,
            {"id": "rerank-fake", "model": model, "results": scored, "usage": {"total_tokens": tokens}},
        )


@contextmanager
def running_openai_server() -> Iterator[FakeOpenAIServer]:
    server = FakeOpenAIServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
