"""The Anthropic adapter through the real SDK against a fake Messages API speaking the wire
protocol: every shared scenario, retries, closing the upstream, error mapping and the request
body the adapter sends."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from domain.llm.messages import (
    AssistantMessage,
    ChatRequest,
    ImagePart,
    NamedTool,
    SystemMessage,
    TextPart,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    UserMessage,
)
from domain.llm.ports import ChatModel
from domain.llm.stream import (
    Failed,
    Finished,
    StreamEvent,
    TextDelta,
    ToolCallArgumentsDelta,
    ToolCallStarted,
    Usage,
)
from infra.llm.anthropic_chat import anthropic_chat_model
from infra.llm.streaming import StreamPolicy
from tests.fakes.anthropic_server import FakeAnthropicServer, running_anthropic_server
from tests.fakes.chat_scenarios import SCENARIOS, expected

FAST = StreamPolicy(max_retries=0, idle_timeout_s=1.0)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropicServer]:
    with running_anthropic_server() as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(fake: FakeAnthropicServer) -> None:
    fake.reset()


def model(fake: FakeAnthropicServer, policy: StreamPolicy = FAST, **kw: Any) -> ChatModel:
    return anthropic_chat_model(api_key="sk-ant-test", base_url=fake.base_url, policy=policy, **kw)


def ask(name: str, **kw: Any) -> ChatRequest:
    return ChatRequest(model=f"scenario:{name}", messages=[UserMessage.text("hi")], **kw)


async def collect(chat: ChatModel, request: ChatRequest) -> list[StreamEvent]:
    return [event async for event in chat.stream(request)]


async def test_a_rate_limited_first_attempt_is_retried_through_the_sdk(fake: FakeAnthropicServer) -> None:
    slept: list[float] = []

    async def no_sleep(delay: float) -> None:
        slept.append(delay)

    events = await collect(model(fake, StreamPolicy(sleep=no_sleep)), ask("flaky"))
    assert events == expected("text")
    assert len(fake.requests) == 2
    assert len(slept) == 1
    # the SDK's own retries are off: exactly one retry header per attempt, counted from 0
    assert [h.get("x-stainless-retry-count") for h in fake.headers] == ["0", "0"]


async def test_closing_the_consumer_closes_the_upstream(fake: FakeAnthropicServer) -> None:
    stream = model(fake, StreamPolicy(max_retries=0, idle_timeout_s=5)).stream(ask("slow"))
    assert isinstance(await anext(stream), TextDelta)
    assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()  # type: ignore[attr-defined]
    # The slow stream lasts 10 s: a disconnect seen well before that is the close reaching upstream.
    assert fake.wait_for_disconnect(5.0) is not None
    assert fake.disconnects[0][0] == "slow"


async def test_anthropic_overload_529_is_overloaded(fake: FakeAnthropicServer) -> None:
    events = await collect(model(fake), ask("overloaded_529"))
    assert events == [Failed(kind="overloaded", message="Overloaded", status=529)]


async def test_an_error_event_inside_the_stream_ends_it_as_failed(fake: FakeAnthropicServer) -> None:
    events = await collect(model(fake), ask("stream_error"))
    assert events == [TextDelta("Hel"), Failed(kind="overloaded", message="Overloaded")]


async def test_a_body_without_message_stop_is_a_connection_failure(fake: FakeAnthropicServer) -> None:
    events = await collect(model(fake), ask("no_stop"))
    assert [e for e in events if isinstance(e, TextDelta)] == [TextDelta(t) for t in SCENARIOS["text"].text]
    assert events[-2] == Usage(12, 4, 0)
    assert isinstance(events[-1], Failed)
    assert events[-1].kind == "connection"
    assert not any(isinstance(e, Finished) for e in events)


async def test_tool_arguments_that_are_not_json_fail_the_turn(fake: FakeAnthropicServer) -> None:
    events = await collect(model(fake), ask("bad_tool_json"))
    assert events[0] == ToolCallStarted(id="call_9", name="broken", index=0)
    assert events[1:3] == [
        ToolCallArgumentsDelta(id="call_9", delta='{"a":'),
        ToolCallArgumentsDelta(id="call_9", delta=" nope"),
    ]
    assert isinstance(events[-1], Failed)
    assert events[-1].kind == "bad_response"
    assert len(events) == 4


async def test_usage_counts_cache_reads_and_writes_as_input(fake: FakeAnthropicServer) -> None:
    events = await collect(model(fake), ask("cache_write"))
    assert events[-2:] == [Usage(30, 1, 10), Finished("end_turn")]
    (body,) = fake.requests
    assert body["max_tokens"] == 4096


async def test_an_unreachable_provider_is_a_connection_failure() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    chat = anthropic_chat_model(api_key="k", base_url=f"http://127.0.0.1:{port}", policy=FAST)
    events = await collect(chat, ask("text"))
    assert len(events) == 1
    assert isinstance(events[0], Failed)
    assert events[0].kind == "connection"


async def test_an_sdk_read_timeout_is_a_timeout(fake: FakeAnthropicServer) -> None:
    chat = model(fake, StreamPolicy(max_retries=0, idle_timeout_s=5), timeout_s=0.3)
    events = await collect(chat, ask("stall"))
    assert events[0] == TextDelta("a")
    assert isinstance(events[-1], Failed)
    assert events[-1].kind == "timeout"
    assert len(events) == 2


PNG = b"\x89PNG\r\n\x1a\nfake"


async def test_the_request_is_translated_to_the_messages_api(fake: FakeAnthropicServer) -> None:
    weather = ToolDefinition(
        name="get_weather",
        description="Weather for a city",
        input_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    )
    request = ChatRequest(
        model="scenario:text",
        messages=[
            SystemMessage("Be brief."),
            SystemMessage("Answer in English."),
            UserMessage(
                content=[
                    TextPart("What is this?"),
                    ImagePart(media_type="image/png", data=PNG),
                    ImagePart(url="https://example.com/cat.jpg"),
                ]
            ),
            AssistantMessage(
                content="Checking.",
                tool_calls=[
                    ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"}),
                    ToolCall(id="call_2", name="get_time", arguments={}),
                ],
            ),
            ToolResultMessage(tool_call_id="call_1", content="Sunny"),
            ToolResultMessage(tool_call_id="call_2", content="clock broke", is_error=True),
            UserMessage.text("Thanks"),
            AssistantMessage(),
        ],
        tools=[weather, ToolDefinition(name="get_time")],
        tool_choice="required",
        temperature=0.25,
        max_tokens=321,
        stop=["END", "STOP"],
    )
    events = await collect(model(fake), request)
    assert events == expected("text")
    (body,) = fake.requests
    assert body == {
        "model": "scenario:text",
        "max_tokens": 321,
        "stream": True,
        "system": [{"type": "text", "text": "Be brief.\n\nAnswer in English."}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "Sunny"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "clock broke", "is_error": True},
                ],
            },
            {"role": "user", "content": [{"type": "text", "text": "Thanks"}]},
        ],
        "tools": [
            {"name": "get_weather", "description": "Weather for a city", "input_schema": weather.input_schema},
            {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
        ],
        "tool_choice": {"type": "any"},
        "temperature": 0.25,
        "stop_sequences": ["END", "STOP"],
    }
    assert fake.paths == ["/v1/messages"]
    assert fake.headers[0]["authorization"] == "Bearer sk-ant-test"  # this SDK sends API keys as a bearer
    assert "anthropic-version" in fake.headers[0]


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        (NamedTool("lookup"), {"type": "tool", "name": "lookup"}),
    ],
)
async def test_tool_choice_mapping(fake: FakeAnthropicServer, choice: Any, wire: dict[str, Any]) -> None:
    await collect(model(fake), ask("text", tools=[ToolDefinition(name="lookup")], tool_choice=choice))
    assert fake.requests[0]["tool_choice"] == wire


async def test_a_plain_request_sends_only_what_it_needs(fake: FakeAnthropicServer) -> None:
    await collect(model(fake, headers={"x-team": "blue"}, query={"beta": "1"}), ask("text"))
    (body,) = fake.requests
    assert body == {
        "model": "scenario:text",
        "max_tokens": 4096,
        "stream": True,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }
    assert fake.headers[0]["x-team"] == "blue"
    assert fake.queries == ["beta=1"]


async def test_the_fake_refuses_a_request_without_credentials(fake: FakeAnthropicServer) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        response = await http.post("/v1/messages", json={"model": "scenario:text", "max_tokens": 1, "stream": True})
    assert response.status_code == 401
    assert response.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "x-api-key header is required"},
    }


async def test_an_image_type_the_api_cannot_take_is_a_bad_request_without_a_call(fake: FakeAnthropicServer) -> None:
    request = ChatRequest(
        model="scenario:text", messages=[UserMessage(content=[ImagePart(media_type="image/tiff", data=b"II*")])]
    )
    events = await collect(model(fake), request)
    assert len(events) == 1
    assert isinstance(events[0], Failed)
    assert events[0].kind == "bad_request"
    assert fake.requests == []
