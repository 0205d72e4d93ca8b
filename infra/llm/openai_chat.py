"""Chat models over the OpenAI chat-completions streaming API, on the official ``openai`` SDK.

The same adapter serves every OpenAI-compatible server (vLLM, Ollama, LiteLLM, Groq, OpenRouter):
give it a ``base_url``, extra default headers / query parameters, and an API key only when the
server wants one. The SDK's own retries are off; ``infra.llm.streaming.resilient`` is the only
retry and timeout layer. No SDK type leaves this module.

The stream is the SDK's own (its SSE decoding, ``[DONE]``, in-stream error events as
``APIError``, timeouts and connection errors as its exceptions), asked for plain JSON objects
(``cast_to=object``) that ``infra.llm.openai_stream.Chunk`` then reads: building the SDK's pydantic
chunk models cost about 165 µs of CPU per chunk against about 35 µs for the plain stream (one
20,000-chunk stream each from bench/chat's fake), and a server streams thousands of chunks a second.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, cast

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
from domain.llm.stream import Failed, StreamEvent
from infra.llm.openai_stream import Turn, read_chunk
from infra.llm.streaming import (
    StreamPolicy,
    drain,
    failure_for_status,
    kind_for_status,
    resilient,
)

MaxTokensField = Literal["max_tokens", "max_completion_tokens"]

NO_API_KEY = "unused"
"""What the SDK gets as API key for servers that take none (it refuses to start without one)."""

_EMPTY: Mapping[str, str] = MappingProxyType({})


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
        turn = Turn(request)
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
