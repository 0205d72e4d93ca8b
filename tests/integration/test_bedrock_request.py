"""The Bedrock chat adapter's requests, through boto3 against the fake Bedrock endpoint: a chat
request translated to Converse (system, images, tool history, inference settings), tool choice,
tool history without tool definitions, a web image URL refused before any call."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from domain.llm.messages import (
    AssistantMessage,
    ChatRequest,
    ImagePart,
    NamedTool,
    SystemMessage,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolDefinition,
    ToolResultMessage,
    UserMessage,
)
from domain.llm.ports import ChatModel
from domain.llm.stream import (
    Failed,
)
from tests.fakes.bedrock_server import FakeBedrockServer
from tests.fakes.chat_scenarios import expected
from tests.integration import test_bedrock_adapter as bedrock_tests
from tests.integration.test_bedrock_adapter import collect

server = bedrock_tests.server
bedrock = bedrock_tests.bedrock
strict_model = bedrock_tests.strict_model


# -- request translation ------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\nfake"
WEATHER = ToolDefinition(
    name="get_weather",
    description="Weather for a city",
    input_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def conversation(tool_choice: ToolChoice = "required") -> ChatRequest:
    return ChatRequest(
        model="scenario:text",
        messages=[
            SystemMessage("Be brief."),
            SystemMessage("Answer in English."),
            UserMessage(content=[TextPart("What is this?"), ImagePart(media_type="image/png", data=PNG)]),
            UserMessage(content=[ImagePart(media_type="image/jpeg", url="s3://bucket/cat.jpg")]),
            AssistantMessage(
                content="Checking.",
                tool_calls=[
                    ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"}),
                    ToolCall(id="call_2", name="get_weather", arguments={"city": "Oslo"}),
                ],
            ),
            ToolResultMessage(tool_call_id="call_1", content="sunny"),
            ToolResultMessage(tool_call_id="call_2", content="no such city", is_error=True),
            UserMessage.text("And tomorrow?"),
        ],
        tools=[WEATHER, ToolDefinition(name="get_time")],
        tool_choice=tool_choice,
        temperature=0.2,
        max_tokens=256,
        stop=["END"],
    )


async def test_the_request_is_translated_to_converse(bedrock: FakeBedrockServer, strict_model: ChatModel) -> None:
    assert await collect(strict_model, conversation()) == expected("text")
    call = bedrock.calls[0]
    assert call.method == "POST"
    assert call.path == "/model/scenario:text/converse-stream"
    assert call.body == {
        "system": [{"text": "Be brief.\n\nAnswer in English."}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"text": "What is this?"},
                    {"image": {"format": "png", "source": {"bytes": base64.b64encode(PNG).decode()}}},
                    {"image": {"format": "jpeg", "source": {"s3Location": {"uri": "s3://bucket/cat.jpg"}}}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"text": "Checking."},
                    {"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"city": "Paris"}}},
                    {"toolUse": {"toolUseId": "call_2", "name": "get_weather", "input": {"city": "Oslo"}}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"toolResult": {"toolUseId": "call_1", "content": [{"text": "sunny"}], "status": "success"}},
                    {"toolResult": {"toolUseId": "call_2", "content": [{"text": "no such city"}], "status": "error"}},
                    {"text": "And tomorrow?"},
                ],
            },
        ],
        "inferenceConfig": {"maxTokens": 256, "temperature": 0.2, "stopSequences": ["END"]},
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "get_weather",
                        "description": "Weather for a city",
                        "inputSchema": {"json": WEATHER.input_schema},
                    }
                },
                {"toolSpec": {"name": "get_time", "inputSchema": {"json": {"type": "object", "properties": {}}}}},
            ],
            "toolChoice": {"any": {}},
        },
    }


@pytest.mark.parametrize(
    ("choice", "history", "sent"),
    [
        ("auto", False, {"tools": 1}),
        ("required", False, {"tools": 1, "toolChoice": {"any": {}}}),
        (NamedTool("get_weather"), False, {"tools": 1, "toolChoice": {"tool": {"name": "get_weather"}}}),
        ("none", False, None),
        ("none", True, {"tools": 1}),
    ],
)
async def test_tool_choice(
    choice: ToolChoice, history: bool, sent: dict[str, Any] | None, bedrock: FakeBedrockServer, strict_model: ChatModel
) -> None:
    messages: list[Any] = [UserMessage.text("weather?")]
    if history:
        messages += [
            AssistantMessage(tool_calls=[ToolCall(id="c1", name="get_weather", arguments={"city": "Rome"})]),
            ToolResultMessage(tool_call_id="c1", content="warm"),
        ]
    request = ChatRequest(model="scenario:text", messages=messages, tools=[WEATHER], tool_choice=choice)
    assert await collect(strict_model, request) == expected("text")
    config = bedrock.requests[0].get("toolConfig")
    if sent is None:
        assert config is None
    else:
        assert len(config["tools"]) == sent.pop("tools")
        assert {k: v for k, v in config.items() if k != "tools"} == sent


async def test_tool_history_without_tool_definitions_still_gets_a_tool_config(
    bedrock: FakeBedrockServer, strict_model: ChatModel
) -> None:
    request = ChatRequest(
        model="scenario:text",
        messages=[
            UserMessage.text("weather?"),
            AssistantMessage(tool_calls=[ToolCall(id="c1", name="get_weather", arguments={})]),
            ToolResultMessage(tool_call_id="c1", content="warm"),
        ],
    )
    assert await collect(strict_model, request) == expected("text")
    assert bedrock.requests[0]["toolConfig"] == {
        "tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}}]
    }
    assert "inferenceConfig" not in bedrock.requests[0]
    assert "system" not in bedrock.requests[0]


async def test_a_web_image_url_is_refused_without_calling_bedrock(
    bedrock: FakeBedrockServer, strict_model: ChatModel
) -> None:
    request = ChatRequest(
        model="scenario:text",
        messages=[UserMessage(content=[ImagePart(url="https://example.com/cat.png")])],
    )
    events = await collect(strict_model, request)
    assert [(type(e), getattr(e, "kind", None)) for e in events] == [(Failed, "bad_request")]
    assert bedrock.calls == []
