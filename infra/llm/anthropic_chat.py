"""The Anthropic Messages API as a ``ChatModel``, on the official SDK's async client.

One attempt opens ``POST /v1/messages`` with ``stream=true`` and turns the raw SSE events into the
neutral stream: text deltas, tool calls (``tool_use`` blocks with ``input_json_delta`` fragments),
one normalised ``Usage`` (input tokens include the cache reads and writes) and ``Finished`` on
``message_stop``. The SDK's retries are off; ``resilient`` is the only retry and timeout layer.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, Literal, cast

import httpx2
from anthropic import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AsyncAnthropic,
)
from anthropic.types import (
    ContentBlockParam,
    InputJSONDelta,
    MessageParam,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
    RawMessageStreamEvent,
    TextBlockParam,
    ToolChoiceParam,
    ToolParam,
    ToolResultBlockParam,
    ToolUseBlock,
)
from anthropic.types import TextDelta as RawTextDelta

from domain.llm.messages import (
    AssistantMessage,
    ChatRequest,
    ImagePart,
    NamedTool,
    SystemMessage,
    TextPart,
    ToolResultMessage,
    UserMessage,
)
from domain.llm.ports import ChatModel
from domain.llm.stream import Failed, Finished, StopReason, StreamEvent, TextDelta, Usage
from infra.llm.streaming import StreamPolicy, ToolCallAssembler, drain, failure_for_status, resilient

DEFAULT_MAX_TOKENS = 4096

_STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "tool_use": "tool_use",
    "stop_sequence": "stop_sequence",
    "refusal": "content_filter",
    "pause_turn": "end_turn",
    "model_context_window_exceeded": "max_tokens",
}

# The status an error ``type`` stands for when it arrives inside a 200 stream (``event: error``).
_ERROR_TYPE_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


class TranslationError(ValueError):
    """The request holds something the Messages API cannot carry."""


# -- request translation ---------------------------------------------------------------------------


def _image_block(part: ImagePart) -> ContentBlockParam:
    if part.data is not None:
        if part.media_type not in _IMAGE_TYPES:
            raise TranslationError(f"image type {part.media_type!r} is not supported (jpeg, png, gif, webp)")
        media_type = cast(Literal["image/jpeg", "image/png", "image/gif", "image/webp"], part.media_type)
        data = base64.b64encode(part.data).decode("ascii")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if part.url:
        return {"type": "image", "source": {"type": "url", "url": part.url}}
    raise TranslationError("an image needs data or a url")


def _user_content(message: UserMessage) -> list[ContentBlockParam]:
    blocks: list[ContentBlockParam] = []
    for part in message.content:
        if isinstance(part, TextPart):
            blocks.append({"type": "text", "text": part.text})
        else:
            blocks.append(_image_block(part))
    return blocks


def _assistant_content(message: AssistantMessage) -> list[ContentBlockParam]:
    blocks: list[ContentBlockParam] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": dict(call.arguments)})
    return blocks


def _tool_result(message: ToolResultMessage) -> ToolResultBlockParam:
    block: ToolResultBlockParam = {"type": "tool_result", "tool_use_id": message.tool_call_id}
    if message.content:
        block["content"] = message.content
    if message.is_error:
        block["is_error"] = True
    return block


def translate_messages(request: ChatRequest) -> list[MessageParam]:
    """Non-system messages as Anthropic turns: consecutive tool results share one user turn."""
    out: list[MessageParam] = []
    results: list[ContentBlockParam] = []

    def flush() -> None:
        if results:
            out.append({"role": "user", "content": list(results)})
            results.clear()

    for message in request.messages:
        if isinstance(message, ToolResultMessage):
            results.append(_tool_result(message))
            continue
        flush()
        if isinstance(message, SystemMessage):
            continue
        if isinstance(message, UserMessage):
            out.append({"role": "user", "content": _user_content(message)})
        elif isinstance(message, AssistantMessage):
            content = _assistant_content(message)
            if content:  # the API refuses an empty assistant turn
                out.append({"role": "assistant", "content": content})
    flush()
    return out


def _tool_choice(request: ChatRequest) -> ToolChoiceParam:
    choice = request.tool_choice
    if isinstance(choice, NamedTool):
        return {"type": "tool", "name": choice.name}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    return {"type": "auto"}


def request_params(request: ChatRequest, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> dict[str, Any]:
    """The keyword arguments of ``messages.create`` for ``request`` (raises TranslationError)."""
    params: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens or default_max_tokens,
        "messages": translate_messages(request),
    }
    system = request.system
    if system:
        system_blocks: list[TextBlockParam] = [{"type": "text", "text": system}]
        params["system"] = system_blocks
    if request.tools:
        tools: list[ToolParam] = []
        for tool in request.tools:
            definition: ToolParam = {"name": tool.name, "input_schema": dict(tool.input_schema)}
            if tool.description:
                definition["description"] = tool.description
            tools.append(definition)
        params["tools"] = tools
        params["tool_choice"] = _tool_choice(request)
    if request.stop:
        params["stop_sequences"] = list(request.stop)
    if request.temperature is not None:
        # This SDK version has no ``temperature`` keyword; the API still takes the field.
        params["extra_body"] = {"temperature": request.temperature}
    return params


# -- stream translation ----------------------------------------------------------------------------


class _Turn:
    """Folds the raw Messages events of one response into neutral events."""

    def __init__(self) -> None:
        self.calls = ToolCallAssembler()
        self.input_tokens = 0
        self.cache_read = 0
        self.cache_write = 0
        self.output_tokens = 0
        self.usage_seen = False
        self.stop_reason: StopReason | None = None
        self.done = False

    def _take_usage(self, usage: Any) -> None:
        for attr, name in (
            ("input_tokens", "input_tokens"),
            ("cache_read_input_tokens", "cache_read"),
            ("cache_creation_input_tokens", "cache_write"),
            ("output_tokens", "output_tokens"),
        ):
            value = getattr(usage, attr, None)
            if isinstance(value, int):
                setattr(self, name, value)

    def usage(self) -> Usage:
        total = self.input_tokens + self.cache_read + self.cache_write
        return Usage(input_tokens=total, output_tokens=self.output_tokens, cached_input_tokens=self.cache_read)

    def _close_calls(self) -> list[StreamEvent]:
        return list(self.calls.complete_all())

    def feed(self, event: RawMessageStreamEvent) -> list[StreamEvent]:
        if isinstance(event, RawMessageStartEvent):
            self._take_usage(event.message.usage)
            return []
        if isinstance(event, RawContentBlockStartEvent):
            block = event.content_block
            if isinstance(block, ToolUseBlock):
                out: list[StreamEvent] = self._close_calls()
                out.append(self.calls.start(event.index, block.id, block.name))
                return out
            return []
        if isinstance(event, RawContentBlockDeltaEvent):
            delta = event.delta
            if isinstance(delta, RawTextDelta):
                return [TextDelta(delta.text)] if delta.text else []
            if isinstance(delta, InputJSONDelta) and self.calls.known(event.index):
                return [self.calls.delta(event.index, delta.partial_json)] if delta.partial_json else []
            return []
        if isinstance(event, RawContentBlockStopEvent):
            return [self.calls.complete(event.index)] if self.calls.known(event.index) else []
        if isinstance(event, RawMessageDeltaEvent):
            self._take_usage(event.usage)
            self.usage_seen = True
            if event.delta.stop_reason is not None:
                self.stop_reason = _STOP_REASONS.get(event.delta.stop_reason, "end_turn")
            return self._close_calls()
        if isinstance(event, RawMessageStopEvent):
            self.done = True
            out = self._close_calls()
            if self.usage_seen:
                out.append(self.usage())
            out.append(Finished(stop_reason=self.stop_reason or "end_turn"))
            return out
        return []

    def failed(self, failure: Failed) -> list[StreamEvent]:
        """The terminal events for a failure: the usage first when the provider reported it."""
        return [self.usage(), failure] if self.usage_seen else [failure]


def _error_message(exc: APIStatusError) -> str:
    if exc.api_message:
        return exc.api_message
    body = exc.body
    if isinstance(body, str) and body.strip():
        return body.strip()
    return exc.message


def failure_for_exception(exc: Exception) -> Failed:
    """Map an SDK or transport exception to the neutral failure."""
    if isinstance(exc, APIStatusError):
        message = _error_message(exc)
        status = exc.status_code
        if status < 400:  # an ``event: error`` inside a 200 stream: the body's type tells the cause
            mapped = _ERROR_TYPE_STATUS.get(str(exc.type or ""), 500)
            failure = failure_for_status(mapped, message)
            return Failed(kind=failure.kind, message=failure.message)
        return failure_for_status(status, message, dict(exc.response.headers))
    if isinstance(exc, APITimeoutError | httpx2.TimeoutException):
        return Failed(kind="timeout", message=str(exc) or "the request to the provider timed out")
    if isinstance(exc, APIConnectionError | httpx2.TransportError):
        return Failed(kind="connection", message=str(exc) or "the connection to the provider failed")
    return Failed(kind="bad_response", message=f"the provider's response could not be read: {exc}"[:2000])


class AnthropicChatModel:
    def __init__(
        self, client: AsyncAnthropic, policy: StreamPolicy | None = None, default_max_tokens: int = DEFAULT_MAX_TOKENS
    ) -> None:
        self.client = client
        self.policy = policy or StreamPolicy()
        self.default_max_tokens = default_max_tokens

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        return resilient(lambda: self._attempt(request), self.policy)

    async def _attempt(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        try:
            params = request_params(request, self.default_max_tokens)
        except TranslationError as exc:
            yield Failed(kind="bad_request", message=str(exc))
            return
        turn = _Turn()
        try:
            upstream = await self.client.messages.create(**params, stream=True)
        except (APIError, httpx2.HTTPError, ValueError) as exc:
            yield failure_for_exception(exc)
            return
        async with upstream:
            try:
                async for event in upstream:
                    outs = turn.feed(event)
                    if turn.done:
                        await drain(upstream)  # before the terminal event: the consumer stops there
                    for out in outs:
                        yield out
                        if isinstance(out, Failed):
                            return
                    if turn.done:
                        return
            except (APIError, httpx2.HTTPError, ValueError) as exc:
                for out in turn.failed(failure_for_exception(exc)):
                    yield out
                return
        # The body ended without ``message_stop``: the connection was cut short.
        for out in turn.failed(Failed(kind="connection", message="the provider's stream ended before message_stop")):
            yield out


def anthropic_chat_model(
    *,
    api_key: str | None,
    base_url: str | None,
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
    policy: StreamPolicy | None = None,
    timeout_s: float = 600,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
) -> ChatModel:
    """An Anthropic chat model (``base_url`` None: the public API; the SDK's retries are off)."""
    client = AsyncAnthropic(
        api_key=api_key,
        base_url=base_url,
        default_headers=dict(headers or {}),
        default_query=dict(query or {}),
        timeout=timeout_s,
        max_retries=0,
    )
    return AnthropicChatModel(client, policy, default_max_tokens)
