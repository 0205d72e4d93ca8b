"""A finished turn reads its response to the end, so its connection goes back to the SDK's pool:
closing mid-body (right after the terminal event) would discard it and the next call would pay a
new TCP and TLS handshake (bench/providers measures the difference)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from domain.llm.messages import ChatRequest, UserMessage
from domain.llm.ports import ChatModel
from domain.llm.stream import Finished, fold
from infra.llm.anthropic_chat import AnthropicChatModel
from infra.llm.openai_chat import OpenAIChatModel
from infra.llm.streaming import StreamPolicy
from tests.fakes.anthropic_server import FakeAnthropicServer, running_anthropic_server
from tests.fakes.openai_server import FakeOpenAIServer, running_openai_server

NO_RETRY = StreamPolicy(max_retries=0, idle_timeout_s=5.0)


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAIServer]:
    with running_openai_server() as server:
        yield server


@pytest.fixture(scope="module")
def anthropic_fake() -> Iterator[FakeAnthropicServer]:
    with running_anthropic_server() as server:
        yield server


def open_connections(transport: httpx2.AsyncHTTPTransport) -> int:
    return len(transport._pool.connections)


async def three_turns(model: ChatModel) -> None:
    for _ in range(3):
        request = ChatRequest(model="scenario:text", messages=[UserMessage.text("hi")])
        done = fold([event async for event in model.stream(request)])
        assert (done.text, done.stop_reason) == ("Hello, world!", "end_turn")


async def test_openai_turns_share_one_connection(openai_fake: FakeOpenAIServer) -> None:
    transport = httpx2.AsyncHTTPTransport()
    client = AsyncOpenAI(
        api_key="sk", base_url=openai_fake.base_url, max_retries=0, http_client=httpx2.AsyncClient(transport=transport)
    )
    try:
        await three_turns(OpenAIChatModel(client, policy=NO_RETRY))
        assert open_connections(transport) == 1
    finally:
        await client.close()


async def test_anthropic_turns_share_one_connection(anthropic_fake: FakeAnthropicServer) -> None:
    transport = httpx2.AsyncHTTPTransport()
    client = AsyncAnthropic(
        api_key="sk",
        base_url=anthropic_fake.base_url,
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=transport),
    )
    try:
        await three_turns(AnthropicChatModel(client, NO_RETRY))
        assert open_connections(transport) == 1
    finally:
        await client.close()


async def test_the_terminal_event_still_ends_the_turn(openai_fake: FakeOpenAIServer) -> None:
    client = AsyncOpenAI(api_key="sk", base_url=openai_fake.base_url, max_retries=0)
    try:
        events = [
            e
            async for e in OpenAIChatModel(client, policy=NO_RETRY).stream(
                ChatRequest(model="scenario:tools", messages=[UserMessage.text("hi")])
            )
        ]
    finally:
        await client.close()
    assert isinstance(events[-1], Finished)
    assert sum(isinstance(e, Finished) for e in events) == 1
