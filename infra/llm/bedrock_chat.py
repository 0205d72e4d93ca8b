"""Amazon Bedrock chat models through the Converse API (boto3 ``bedrock-runtime``
``converse_stream``), plus what the Bedrock embedding and rerank adapters share: lazily built
boto3 clients (botocore retries off) and botocore error -> ``Failed`` mapping.

boto3 is synchronous, so each attempt reads the event stream in a dedicated daemon thread that
hands events to the event loop through an ``asyncio.Queue``; closing the attempt shuts the
socket down and closes the botocore ``EventStream``, which ends the thread promptly.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]

from domain.llm.messages import (
    ChatRequest,
)
from domain.llm.ports import ChatModel
from domain.llm.stream import Failed, Finished, StopReason, StreamEvent, TextDelta, Usage
from infra.llm.bedrock_errors import failure_for_exception
from infra.llm.bedrock_request import converse_params
from infra.llm.streaming import (
    StreamPolicy,
    ToolCallAssembler,
    resilient,
)

# -- clients ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BedrockAccount:
    """Where and as whom to call Bedrock: explicit keys (optionally with a session token), or a
    named profile, or (neither) the default AWS credential chain."""

    region: str
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None


class BedrockClients:
    """boto3 clients for one account, built on first use (building a session reads files and
    may fail: that happens inside a call, where it becomes a ``Failed``). Clients are
    thread-safe; botocore's own retries are off."""

    def __init__(
        self,
        account: BedrockAccount,
        *,
        read_timeout_s: float = 600,
        connect_timeout_s: float = 10,
        max_pool_connections: int = 10,
    ) -> None:
        self.account = account
        self._config = Config(
            # total_max_attempts counts the first request: 1 = no retries (``max_attempts`` would
            # count retries only).
            retries={"total_max_attempts": 1, "mode": "standard"},
            read_timeout=read_timeout_s,
            connect_timeout=connect_timeout_s,
            max_pool_connections=max_pool_connections,
            user_agent_extra="liteskill",
        )
        self._lock = threading.Lock()
        self._session: Any = None
        self._clients: dict[str, Any] = {}

    def get(self, service: str) -> Any:
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                if self._session is None:
                    a = self.account
                    self._session = boto3.session.Session(
                        aws_access_key_id=a.access_key_id,
                        aws_secret_access_key=a.secret_access_key,
                        aws_session_token=a.session_token,
                        profile_name=a.profile,
                        region_name=a.region,
                    )
                client = self._session.client(service, endpoint_url=self.account.endpoint_url, config=self._config)
                self._clients[service] = client
            return client


# -- the stream ---------------------------------------------------------------------------------

_STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
    "model_context_window_exceeded": "max_tokens",
}
_BAD_STOPS = frozenset({"malformed_model_output", "malformed_tool_use"})

_END = object()


def _close_stream(stream: Any) -> None:
    """Shut the socket down first (a thread blocked reading it wakes up at once), then close
    the botocore EventStream (and with it the HTTP response)."""
    raw = getattr(stream, "_raw_stream", None)
    shutdown = getattr(raw, "shutdown", None)
    if shutdown is not None:
        with contextlib.suppress(Exception):
            shutdown()
    with contextlib.suppress(Exception):
        stream.close()


class _Pump:
    """Opens the stream and iterates it in a daemon thread, handing each event (then ``_END``,
    or a ``Failed``) to the event loop's queue."""

    def __init__(self, open_stream: Callable[[], Any], loop: asyncio.AbstractEventLoop) -> None:
        self._open = open_stream
        self._loop = loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None

    def start(self) -> None:
        threading.Thread(target=self._run, name="bedrock-stream", daemon=True).start()

    def _put(self, item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            self._loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def _run(self) -> None:
        stream: Any = None
        try:
            stream = self._open()
            with self._lock:
                if self._closed.is_set():
                    return
                self._stream = stream
            for event in stream:
                if self._closed.is_set():
                    return
                self._put(event)
            self._put(_END)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a Failed event
            if not self._closed.is_set():
                self._put(failure_for_exception(exc))
        finally:
            if stream is not None:
                _close_stream(stream)

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            stream = self._stream
        if stream is not None:
            _close_stream(stream)


class _Translator:
    """Converse stream events -> neutral events; holds the finish until usage arrived."""

    def __init__(self) -> None:
        self.tools = ToolCallAssembler()
        self.stop: str | None = None
        self.usage: Usage | None = None

    def feed(self, event: Mapping[str, Any]) -> tuple[list[StreamEvent], bool]:
        out: list[StreamEvent] = []
        if "contentBlockStart" in event:
            body = event["contentBlockStart"]
            tool = (body.get("start") or {}).get("toolUse")
            if tool is not None:
                out.extend(self.tools.complete_all())
                out.append(self.tools.start(body["contentBlockIndex"], tool["toolUseId"], tool["name"]))
        elif "contentBlockDelta" in event:
            body = event["contentBlockDelta"]
            delta = body.get("delta") or {}
            index = body.get("contentBlockIndex", 0)
            if delta.get("text"):
                out.append(TextDelta(text=delta["text"]))
            elif "toolUse" in delta:
                if not self.tools.known(index):
                    return [Failed(kind="bad_response", message="tool input for a block that was not started")], True
                out.append(self.tools.delta(index, delta["toolUse"].get("input", "")))
        elif "contentBlockStop" in event:
            index = event["contentBlockStop"].get("contentBlockIndex", 0)
            if self.tools.known(index):
                out.append(self.tools.complete(index))
        elif "messageStop" in event:
            out.extend(self.tools.complete_all())
            self.stop = str(event["messageStop"].get("stopReason") or "end_turn")
            if self.usage is not None:
                out.extend(self.terminal())
        elif "metadata" in event:
            usage = event["metadata"].get("usage") or {}
            cache_read = int(usage.get("cacheReadInputTokens") or 0)
            cache_write = int(usage.get("cacheWriteInputTokens") or 0)
            self.usage = Usage(
                input_tokens=int(usage.get("inputTokens") or 0) + cache_read + cache_write,
                output_tokens=int(usage.get("outputTokens") or 0),
                cached_input_tokens=cache_read,
            )
            if self.stop is not None:
                out.extend(self.terminal())
        return out, any(isinstance(e, Failed | Finished) for e in out)

    def terminal(self, failure: Failed | None = None) -> list[StreamEvent]:
        out: list[StreamEvent] = [self.usage] if self.usage is not None else []
        if failure is not None and self.stop is None:
            out.append(failure)
        elif self.stop in _BAD_STOPS:
            out.append(Failed(kind="bad_response", message=f"the model stopped with {self.stop}"))
        elif self.stop is None:
            out.append(Failed(kind="connection", message="the Bedrock stream ended before the model finished"))
        else:
            out.append(Finished(stop_reason=_STOP_REASONS.get(self.stop, "end_turn")))
        return out


class BedrockChatModel:
    """``ChatModel`` on Bedrock's Converse API; ``request.model`` is the model or inference
    profile id (or ARN)."""

    def __init__(self, clients: BedrockClients, policy: StreamPolicy = StreamPolicy()) -> None:
        self.clients = clients
        self.policy = policy

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        return resilient(lambda: self._attempt(request), self.policy)

    async def _attempt(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        try:
            params = converse_params(request)
        except ValueError as exc:  # UnsupportedContent, or a data URL that is not base64
            yield Failed(kind="bad_request", message=str(exc))
            return

        def open_stream() -> Any:
            return self.clients.get("bedrock-runtime").converse_stream(**params)["stream"]

        pump = _Pump(open_stream, asyncio.get_running_loop())
        pump.start()
        translator = _Translator()
        try:
            while True:
                item = await pump.queue.get()
                if item is _END:
                    for event in translator.terminal():
                        yield event
                    return
                if isinstance(item, Failed):
                    for event in translator.terminal(item):
                        yield event
                    return
                events, done = translator.feed(item)
                for event in events:
                    yield event
                if done:
                    return
        finally:
            pump.close()


def bedrock_chat_model(
    *,
    region: str,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    session_token: str | None = None,
    profile: str | None = None,
    endpoint_url: str | None = None,
    policy: StreamPolicy = StreamPolicy(),
    timeout_s: float = 600,
    connect_timeout_s: float = 10,
) -> ChatModel:
    """A Bedrock chat model. ``timeout_s`` bounds each socket read (the policy's idle and
    overall timeouts govern the stream itself)."""
    account = BedrockAccount(
        region=region,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        session_token=session_token,
        profile=profile,
        endpoint_url=endpoint_url,
    )
    clients = BedrockClients(account, read_timeout_s=timeout_s, connect_timeout_s=connect_timeout_s)
    return BedrockChatModel(clients, policy)
