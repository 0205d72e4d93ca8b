"""Chat models over the OpenAI chat-completions streaming API, on the official ``openai`` SDK.

The same adapter serves every OpenAI-compatible server (vLLM, Ollama, LiteLLM, Groq, OpenRouter):
give it a ``base_url``, extra default headers / query parameters, and an API key only when the
server wants one. The SDK's own retries are off; ``infra.llm.streaming.resilient`` is the only
retry and timeout layer. No SDK type leaves this module.

The stream is the SDK's own (its SSE decoding, ``[DONE]``, in-stream error events as
``APIError``, timeouts and connection errors as its exceptions), asked for plain JSON objects
(``cast_to=object``) that ``Chunk`` then reads: building the SDK's pydantic chunk models costs
about 165 µs of CPU per chunk against about 35 µs for the plain stream (bench/chat measures it),
and a server streams thousands of chunks a second.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, cast

import msgspec
import openai
from openai import AsyncOpenAI, AsyncStream
from openai.types.chat import (
    ChatCompletionContentPartParam,
    ChatCompletionMessageParam,
    ChatCompletionMessageToolCallParam,
    ChatCompletionToolChoiceOptionParam,
    ChatCompletionToolParam,
)

from domain.llm.messages import (
    AssistantMessage,
    ChatRequest,
    ImagePart,
    Message,
    NamedTool,
    SystemMessage,
    TextPart,
    ToolResultMessage,
    UserMessage,
)
from domain.llm.ports import ChatModel
from domain.llm.stream import Failed, Finished, StopReason, StreamEvent, TextDelta, Usage
from infra.llm.streaming import (
    StreamPolicy,
    ToolCallAssembler,
    drain,
    failure_for_status,
    kind_for_status,
    resilient,
)

MaxTokensField = Literal["max_tokens", "max_completion_tokens"]

NO_API_KEY = "unused"
"""What the SDK gets as API key for servers that take none (it refuses to start without one)."""

_EMPTY: Mapping[str, str] = MappingProxyType({})

_STOP_REASONS: dict[str, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "content_filter",
}


def openai_client(
    *,
    api_key: str | None,
    base_url: str | None,
    headers: Mapping[str, str] = _EMPTY,
    query: Mapping[str, str] = _EMPTY,
    timeout_s: float = 600,
    max_retries: int = 0,
) -> AsyncOpenAI:
    """An SDK client for OpenAI or an OpenAI-compatible server (``api_key=None``: none is sent
    that means anything, and the ``OPENAI_API_KEY`` environment variable is never picked up)."""
    return AsyncOpenAI(
        api_key=api_key or NO_API_KEY,
        base_url=base_url or None,
        default_headers=dict(headers) or None,
        default_query=dict(query) or None,
        timeout=timeout_s,
        max_retries=max_retries,
    )


def provider_message(error: openai.APIError) -> str:
    """The provider's own error text from an SDK error's body: OpenAI's ``error.message`` (the SDK
    already unwraps ``error``), vLLM's top-level ``message``, Ollama's ``{"error": "..."}``."""
    body = error.body
    if isinstance(body, Mapping):
        for key in ("message", "detail", "error"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, Mapping) and isinstance(value.get("message"), str):
                return str(value["message"])
    if isinstance(body, str) and body.strip():
        return body.strip()
    return error.message


def failure_for_error(error: openai.OpenAIError) -> Failed:
    """Any SDK exception as a typed failure."""
    if isinstance(error, openai.APIStatusError):
        return failure_for_status(error.status_code, provider_message(error), dict(error.response.headers))
    if isinstance(error, openai.APITimeoutError):
        return Failed(kind="timeout", message="the request to the provider timed out")
    if isinstance(error, openai.APIConnectionError):
        cause = error.__cause__
        return Failed(kind="connection", message=f"connection to the provider failed: {cause or error.message}")
    if isinstance(error, openai.APIError):
        # An error event inside a 200 stream: ``{"error": {"message", "type", "code"}}``.
        message = provider_message(error)
        code = error.code
        if code is not None and code.isdigit():
            return Failed(kind=kind_for_status(int(code), message), message=message, status=int(code))
        marker = f"{error.type or ''} {code or ''}".lower()
        if "rate" in marker:
            return Failed(kind="rate_limited", message=message)
        if "server" in marker or "overload" in marker:
            return Failed(kind="overloaded", message=message)
        if "context" in marker:
            return Failed(kind="context_too_long", message=message)
        return Failed(kind="bad_response", message=message)
    return Failed(kind="bad_response", message=str(error) or type(error).__name__)


# -- the streamed chunk (what this adapter reads of ``chat.completion.chunk``) --------------------


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _CallDelta(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_CallDelta] | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    delta: _Delta = msgspec.field(default_factory=_Delta)
    finish_reason: str | None = None
    stop_reason: str | int | None = None  # vLLM: the stop string (or token id) that ended the turn


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None


class Chunk(msgspec.Struct):
    """One ``chat.completion.chunk``; unknown fields are ignored, wrong types refused."""

    choices: list[_Choice] = msgspec.field(default_factory=list)
    usage: _Usage | None = None


def read_chunk(data: object) -> Chunk:
    """A chunk from its decoded JSON; ``ValueError`` (``msgspec.ValidationError``) if it is not one."""
    return msgspec.convert(data, Chunk)


def _usage(usage: _Usage) -> Usage:
    details = usage.prompt_tokens_details
    cached = (details.cached_tokens if details is not None else None) or 0
    return Usage(
        input_tokens=usage.prompt_tokens or 0,
        output_tokens=usage.completion_tokens or 0,
        cached_input_tokens=cached,
    )


# -- request translation ---------------------------------------------------------------------


def _image_url(part: ImagePart) -> str:
    if part.data is not None:
        return f"data:{part.media_type};base64,{base64.b64encode(part.data).decode('ascii')}"
    if part.url:
        return part.url
    raise ValueError("an image part needs data or a url")


def _user_content(message: UserMessage) -> str | list[ChatCompletionContentPartParam]:
    if len(message.content) == 1 and isinstance(message.content[0], TextPart):
        return message.content[0].text  # plain strings work on every compatible server
    parts: list[ChatCompletionContentPartParam] = []
    for part in message.content:
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": part.text})
        else:
            parts.append({"type": "image_url", "image_url": {"url": _image_url(part)}})
    return parts


def tool_result_text(message: ToolResultMessage) -> str:
    """Chat completions has no error flag on tool results: a failed call says so in its text."""
    return f"Error: {message.content}" if message.is_error else message.content


def translate_message(message: Message) -> ChatCompletionMessageParam:
    if isinstance(message, SystemMessage):
        return {"role": "system", "content": message.content}
    if isinstance(message, UserMessage):
        return {"role": "user", "content": _user_content(message)}
    if isinstance(message, AssistantMessage):
        if not message.tool_calls:
            return {"role": "assistant", "content": message.content}
        calls: list[ChatCompletionMessageToolCallParam] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
            }
            for call in message.tool_calls
        ]
        return {"role": "assistant", "content": message.content or None, "tool_calls": calls}
    return {"role": "tool", "tool_call_id": message.tool_call_id, "content": tool_result_text(message)}


def translate_tools(request: ChatRequest) -> list[ChatCompletionToolParam]:
    tools: list[ChatCompletionToolParam] = []
    for tool in request.tools:
        definition: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
        if tool.description:
            definition["description"] = tool.description
        tools.append(cast(ChatCompletionToolParam, {"type": "function", "function": definition}))
    return tools


def translate_tool_choice(request: ChatRequest) -> ChatCompletionToolChoiceOptionParam:
    choice = request.tool_choice
    if isinstance(choice, NamedTool):
        return {"type": "function", "function": {"name": choice.name}}
    return choice


def translate_request(request: ChatRequest, max_tokens_field: MaxTokensField = "max_tokens") -> dict[str, Any]:
    """The chat-completions request body (without ``stream``) for ``request``."""
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [translate_message(m) for m in request.messages],
    }
    if request.tools:
        body["tools"] = translate_tools(request)
        body["tool_choice"] = translate_tool_choice(request)
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body[max_tokens_field] = request.max_tokens
    if request.stop:
        body["stop"] = list(request.stop)
    return body


# -- the model --------------------------------------------------------------------------------


class OpenAIChatModel:
    """A ``ChatModel`` on ``client.chat.completions.create(stream=True)``."""

    def __init__(
        self,
        client: AsyncOpenAI,
        *,
        policy: StreamPolicy = StreamPolicy(),
        max_tokens_field: MaxTokensField = "max_tokens",
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.policy = policy
        self.max_tokens_field: MaxTokensField = max_tokens_field
        self.extra_body = dict(extra_body or {})

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        return resilient(lambda: self._attempt(request), self.policy)

    async def aclose(self) -> None:
        await self.client.close()

    async def _attempt(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        try:
            body = translate_request(request, self.max_tokens_field)
        except ValueError as exc:
            yield Failed(kind="bad_request", message=str(exc))
            return
        turn = _Turn(request)
        body = {**body, "stream": True, "stream_options": {"include_usage": True}, **self.extra_body}
        try:
            stream = await self.client.post(
                "/chat/completions", body=body, cast_to=object, stream=True, stream_cls=AsyncStream[object]
            )
            async with stream:
                async for data in stream:
                    events = turn.feed(read_chunk(data))
                    if turn.done:
                        await drain(stream)  # before the terminal event: the consumer stops there
                    for event in events:
                        yield event
                    if turn.done:
                        return
        except openai.OpenAIError as exc:
            failure = failure_for_error(exc)
            if failure.kind == "connection" and turn.finish is not None:
                # The turn was complete; only the trailer (usage, [DONE]) was lost.
                for event in turn.end():
                    yield event
                return
            for event in turn.trailer():
                yield event
            yield failure
            return
        except ValueError as exc:  # a data line that is not JSON, or not a chunk
            for event in turn.trailer():
                yield event
            yield Failed(kind="bad_response", message=f"the provider sent an unreadable event: {exc}")
            return
        for event in turn.end():
            yield event


class _Broken(Exception):
    def __init__(self, failure: Failed) -> None:
        super().__init__(failure.message)
        self.failure = failure


class _Turn:
    """The state of one streamed turn: open tool calls, the held-back finish and usage."""

    def __init__(self, request: ChatRequest) -> None:
        self.request = request
        self.calls = ToolCallAssembler()
        self.called = False
        self.finish: StopReason | None = None
        self.usage: Usage | None = None
        self.done = False

    def feed(self, chunk: Chunk) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        try:
            self._feed(chunk, out)
        except _Broken as broken:
            return self._fail(out, broken.failure)
        if self.finish is not None and chunk.usage is not None and not chunk.choices:
            out.extend(self.end())  # the usage chunk after the finish: the turn is complete
        return out

    def end(self) -> list[StreamEvent]:
        """The stream is over: close what is open and finish (or fail if it never finished)."""
        out: list[StreamEvent] = []
        try:
            self._close_calls(out)
        except _Broken as broken:
            return self._fail(out, broken.failure)
        if self.finish is None:
            return self._fail(out, Failed(kind="connection", message="the stream ended before the turn finished"))
        self.done = True
        return [*out, *self.trailer(), Finished(stop_reason=self.finish)]

    def trailer(self) -> list[StreamEvent]:
        return [self.usage] if self.usage is not None else []

    def _fail(self, out: list[StreamEvent], failure: Failed) -> list[StreamEvent]:
        self.done = True
        return [*out, *self.trailer(), failure]

    def _feed(self, chunk: Chunk, out: list[StreamEvent]) -> None:
        if chunk.usage is not None:
            self.usage = _usage(chunk.usage)
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            delta = choice.delta
            text = delta.content or delta.refusal
            if text:
                self._close_calls(out)
                out.append(TextDelta(text))
            for call in delta.tool_calls or []:
                function = call.function
                if not self.calls.known(call.index):
                    self._close_calls(out)
                    name = (function.name if function else None) or ""
                    out.append(self.calls.start(call.index, call.id or f"call_{call.index}", name))
                    self.called = True
                if function is not None and function.arguments:
                    out.append(self.calls.delta(call.index, function.arguments))
            if choice.finish_reason is not None:
                self._close_calls(out)
                self.finish = self._stop_reason(choice.finish_reason, choice.stop_reason)

    def _close_calls(self, out: list[StreamEvent]) -> None:
        for event in self.calls.complete_all():
            if isinstance(event, Failed):
                raise _Broken(event)
            out.append(event)

    def _stop_reason(self, finish: str, matched: str | int | None) -> StopReason:
        if finish == "stop" and self.called:
            return "tool_use"  # some compatible servers say "stop" after tool calls
        if finish == "stop" and self.request.stop and matched in self.request.stop:
            return "stop_sequence"  # vLLM names the stop string it matched
        return _STOP_REASONS.get(finish, "end_turn")


def openai_chat_model(
    *,
    api_key: str | None,
    base_url: str | None,
    headers: Mapping[str, str] = _EMPTY,
    query: Mapping[str, str] = _EMPTY,
    policy: StreamPolicy = StreamPolicy(),
    timeout_s: float = 600,
    max_tokens_field: MaxTokensField | None = None,
    extra_body: Mapping[str, Any] | None = None,
) -> OpenAIChatModel:
    """The chat model for OpenAI (``base_url=None``) or any OpenAI-compatible server.

    ``max_tokens_field`` defaults to ``max_completion_tokens`` on OpenAI itself (its reasoning
    models refuse ``max_tokens``) and to ``max_tokens`` elsewhere (what compatible servers read).
    """
    client = openai_client(api_key=api_key, base_url=base_url, headers=headers, query=query, timeout_s=timeout_s)
    field: MaxTokensField = max_tokens_field or ("max_completion_tokens" if base_url is None else "max_tokens")
    return OpenAIChatModel(client, policy=policy, max_tokens_field=field, extra_body=extra_body)


if TYPE_CHECKING:
    _port: ChatModel = OpenAIChatModel(AsyncOpenAI(api_key=NO_API_KEY))
