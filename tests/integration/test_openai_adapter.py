"""The OpenAI chat-completions adapter (also every OpenAI-compatible server) through the real SDK
against a real fake server: every shared scenario, retries, closing the upstream, request
translation; plus embeddings batching and the Cohere-compatible reranker."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator

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
from domain.llm.stream import (
    Failed,
    Finished,
    ProviderError,
    StreamEvent,
    TextDelta,
    Usage,
    fold,
)
from infra.llm.openai_chat import OpenAIChatModel, openai_chat_model
from infra.llm.openai_embeddings import openai_embedding_model
from infra.llm.rerank import HttpReranker
from infra.llm.streaming import StreamPolicy
from tests.fakes.chat_scenarios import SCENARIOS
from tests.fakes.openai_server import FakeOpenAIServer, running_openai_server

NO_RETRY = StreamPolicy(max_retries=0, idle_timeout_s=1.0)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAIServer]:
    with running_openai_server() as server:
        yield server


@pytest.fixture
def server(fake: FakeOpenAIServer) -> FakeOpenAIServer:
    fake.reset()
    return fake


@pytest.fixture
async def model(server: FakeOpenAIServer) -> AsyncIterator[OpenAIChatModel]:
    chat = openai_chat_model(api_key="sk-test", base_url=server.base_url, policy=NO_RETRY)
    yield chat
    await chat.aclose()


def ask(name: str, **kw: object) -> ChatRequest:
    return ChatRequest(model=f"scenario:{name}", messages=[UserMessage.text("hi")], **kw)  # type: ignore[arg-type]


async def collect(stream: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in stream]


async def test_the_stream_asks_for_usage_and_reads_cached_tokens(
    model: OpenAIChatModel, server: FakeOpenAIServer
) -> None:
    done = fold(await collect(model.stream(ask("cached"))))
    assert done.usage == Usage(input_tokens=100, output_tokens=1, cached_input_tokens=80)
    assert server.requests[-1]["stream"] is True
    assert server.requests[-1]["stream_options"] == {"include_usage": True}


async def test_a_rate_limit_before_the_first_token_is_retried(server: FakeOpenAIServer) -> None:
    slept: list[float] = []

    async def no_sleep(delay: float) -> None:
        slept.append(delay)

    chat = openai_chat_model(api_key="sk-test", base_url=server.base_url, policy=StreamPolicy(sleep=no_sleep))
    try:
        events = await collect(chat.stream(ask("flaky")))
    finally:
        await chat.aclose()
    assert fold(events).text == "Hello, world!"
    assert events[-1] == Finished(stop_reason="end_turn")
    assert len(server.requests) == 2
    assert len(slept) == 1


async def test_without_retries_the_flaky_rate_limit_is_the_answer(model: OpenAIChatModel) -> None:
    events = await collect(model.stream(ask("flaky")))
    assert events == [Failed(kind="rate_limited", message="Rate limit reached", status=429, retry_after_s=0.0)]


async def test_closing_the_consumer_closes_the_upstream_promptly(
    model: OpenAIChatModel, server: FakeOpenAIServer
) -> None:
    stream = model.stream(ask("slow"))
    assert isinstance(stream, AsyncIterator)
    seen = [await anext(stream), await anext(stream)]
    assert seen == [TextDelta("tick"), TextDelta("tick")]
    await stream.aclose()  # type: ignore[attr-defined]
    # The slow stream lasts 10 s: a disconnect seen well before that is the close reaching upstream.
    for _ in range(500):
        if server.disconnects:
            break
        await asyncio.sleep(0.01)
    assert server.disconnects, "the fake never saw the client go away"


async def test_cancelling_the_consumer_closes_the_upstream(model: OpenAIChatModel, server: FakeOpenAIServer) -> None:
    async def consume() -> None:
        async for _ in model.stream(ask("slow")):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(500):  # well before the slow stream's own 10 s end
        if server.disconnects:
            break
        await asyncio.sleep(0.01)
    assert server.disconnects


async def test_request_translation(model: OpenAIChatModel, server: FakeOpenAIServer) -> None:
    request = ChatRequest(
        model="scenario:text",
        messages=[
            SystemMessage("Be brief."),
            UserMessage(
                [
                    TextPart("What is this?"),
                    ImagePart(media_type="image/jpeg", data=b"\xff\xd8jpeg"),
                    ImagePart(url="https://example.com/cat.png"),
                ]
            ),
            AssistantMessage(
                content="Checking.", tool_calls=[ToolCall(id="call_9", name="lookup", arguments={"q": "cat"})]
            ),
            ToolResultMessage(tool_call_id="call_9", content="a cat"),
            AssistantMessage(tool_calls=[ToolCall(id="call_10", name="lookup", arguments={})]),
            ToolResultMessage(tool_call_id="call_10", content="lookup is down", is_error=True),
            AssistantMessage(content="It is a cat."),
            UserMessage.text("Thanks"),
        ],
        tools=[
            ToolDefinition(
                name="lookup",
                description="Look things up",
                input_schema={"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
            ),
            ToolDefinition(name="noop"),
        ],
        tool_choice=NamedTool("lookup"),
        temperature=0.2,
        max_tokens=50,
        stop=["END"],
    )
    events = await collect(model.stream(request))
    assert isinstance(events[-1], Finished)
    body = server.requests[-1]
    assert body["model"] == "scenario:text"
    jpeg = base64.b64encode(b"\xff\xd8jpeg").decode()
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{jpeg}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "call_9", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "cat"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_9", "content": "a cat"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_10", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "call_10", "content": "Error: lookup is down"},
        {"role": "assistant", "content": "It is a cat."},
        {"role": "user", "content": "Thanks"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Look things up",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
            },
        },
        {"type": "function", "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}}},
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 50
    assert "max_completion_tokens" not in body
    assert body["stop"] == ["END"]


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
async def test_tool_choice_modes(model: OpenAIChatModel, server: FakeOpenAIServer, choice: str) -> None:
    await collect(model.stream(ask("text", tools=[ToolDefinition(name="noop")], tool_choice=choice)))
    assert server.requests[-1]["tool_choice"] == choice


async def test_options_left_unset_are_not_sent(model: OpenAIChatModel, server: FakeOpenAIServer) -> None:
    await collect(model.stream(ask("text")))
    body = server.requests[-1]
    for key in ("tools", "tool_choice", "temperature", "max_tokens", "max_completion_tokens", "stop"):
        assert key not in body
    assert body["messages"] == [{"role": "user", "content": "hi"}]


async def test_compatible_server_options_headers_query_and_no_key(server: FakeOpenAIServer) -> None:
    chat = openai_chat_model(
        api_key=None,
        base_url=server.base_url,
        headers={"X-Title": "Liteskill"},
        query={"api-version": "2025-01-01"},
        policy=NO_RETRY,
        max_tokens_field="max_completion_tokens",
    )
    try:
        events = await collect(chat.stream(ask("text", max_tokens=7)))
    finally:
        await chat.aclose()
    assert isinstance(events[-1], Finished)
    call = server.calls[-1]
    assert call.headers["x-title"] == "Liteskill"
    assert call.query == {"api-version": "2025-01-01"}
    assert call.headers["authorization"] == "Bearer unused"
    assert call.body["max_completion_tokens"] == 7
    assert "max_tokens" not in call.body


async def test_a_refused_connection_is_a_connection_failure() -> None:
    with running_openai_server() as gone:
        base_url = gone.base_url
    chat = openai_chat_model(api_key="sk", base_url=base_url, policy=NO_RETRY)
    try:
        events = await collect(chat.stream(ask("text")))
    finally:
        await chat.aclose()
    assert len(events) == 1
    assert isinstance(events[0], Failed)
    assert events[0].kind == "connection"


# -- embeddings -----------------------------------------------------------------------------


async def test_embeddings_are_batched_in_order_with_usage_summed(server: FakeOpenAIServer) -> None:
    texts = [f"text number {i}" + "x" * i for i in range(7)]
    embedder = openai_embedding_model(
        model="text-embedding-3-small", api_key="sk", base_url=server.base_url, batch_size=3, concurrency=2
    )
    try:
        result = await embedder.embed(texts)
    finally:
        await embedder.aclose()
    assert result.vectors == [FakeOpenAIServer.vector(t) for t in texts]
    batches = [c.body["input"] for c in server.calls if c.path == "/v1/embeddings"]
    assert sorted(batches, key=lambda b: texts.index(b[0])) == [texts[0:3], texts[3:6], texts[6:7]]
    assert all(c.body["encoding_format"] == "float" for c in server.calls)
    assert result.usage == Usage(input_tokens=3 * 7)
    assert (await embedder.embed([])).vectors == []


async def test_embedding_errors_are_typed(server: FakeOpenAIServer) -> None:
    embedder = openai_embedding_model(
        model="scenario:rate_limited", api_key="sk", base_url=server.base_url, max_retries=0
    )
    try:
        with pytest.raises(ProviderError) as caught:
            await embedder.embed(["a", "b"])
    finally:
        await embedder.aclose()
    assert caught.value.failure == Failed(
        kind="rate_limited", message="Rate limit reached", status=429, retry_after_s=2.0
    )
    assert len(server.calls) == 1


async def test_embedding_context_errors_keep_the_provider_message(server: FakeOpenAIServer) -> None:
    embedder = openai_embedding_model(model="scenario:context_too_long", api_key="sk", base_url=server.base_url)
    try:
        with pytest.raises(ProviderError) as caught:
            await embedder.embed(["a"])
    finally:
        await embedder.aclose()
    assert caught.value.kind == "context_too_long"
    assert caught.value.failure.message == SCENARIOS["context_too_long"].error_message


# -- reranking ------------------------------------------------------------------------------


async def test_rerank_orders_best_first_and_sends_the_cohere_shape(server: FakeOpenAIServer) -> None:
    documents = ["the cat sat", "dogs bark", "a cat and a dog", "cat cat dog"]
    reranker = HttpReranker(model="bge-reranker", base_url=server.base_url, api_key="sk-r", headers={"X-A": "1"})
    try:
        result = await reranker.rerank("cat dog", documents, top_n=2)
    finally:
        await reranker.aclose()
    call = server.calls[-1]
    assert call.path == "/v1/rerank"
    assert call.body == {"model": "bge-reranker", "query": "cat dog", "documents": documents, "top_n": 2}
    assert call.headers["authorization"] == "Bearer sk-r"
    assert call.headers["x-a"] == "1"
    assert [r.index for r in result.results] == [2, 3]
    assert [r.score for r in result.results] == [1.0, 1.0]
    assert result.usage.input_tokens > 0


async def test_rerank_without_top_n_scores_every_document(server: FakeOpenAIServer) -> None:
    reranker = HttpReranker(model="m", base_url=server.base_url)
    try:
        result = await reranker.rerank("red apple", ["green pear", "red apple pie", "apple"])
    finally:
        await reranker.aclose()
    assert "top_n" not in server.calls[-1].body
    assert "authorization" not in server.calls[-1].headers
    assert [r.index for r in result.results] == [1, 2, 0]
    scores = [r.score for r in result.results]
    assert scores == sorted(scores, reverse=True)


async def test_rerank_errors_are_typed(server: FakeOpenAIServer) -> None:
    reranker = HttpReranker(model="scenario:unauthorized", base_url=server.base_url)
    try:
        with pytest.raises(ProviderError) as caught:
            await reranker.rerank("q", ["d"])
    finally:
        await reranker.aclose()
    assert caught.value.failure == Failed(kind="authentication", message="Incorrect API key provided", status=401)
    missing = HttpReranker(model="m", base_url=server.origin + "/nowhere")
    try:
        with pytest.raises(ProviderError) as caught:
            await missing.rerank("q", ["d"])
    finally:
        await missing.aclose()
    assert caught.value.kind == "not_found"


def test_fake_chunks_are_the_openai_wire_format() -> None:
    """The fake's stream, read raw: chunk objects, tool-call deltas, usage chunk, [DONE]."""
    import httpx

    with running_openai_server() as raw:
        body = {"model": "scenario:tools", "messages": [], "stream": True, "stream_options": {"include_usage": True}}
        with httpx.stream("POST", raw.base_url + "/chat/completions", json=body) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            text = response.read().decode()
    frames = [f for f in text.split("\n\n") if f]
    assert all(f.startswith("data: ") for f in frames)
    assert frames[-1] == "data: [DONE]"
    chunks = [json.loads(f[6:]) for f in frames[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    first_call = chunks[1]["choices"][0]["delta"]["tool_calls"][0]
    assert first_call["id"] == "call_1"
    assert first_call["function"]["name"] == "get_weather"
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 12


async def test_an_error_event_inside_the_stream_is_a_typed_failure(model: OpenAIChatModel) -> None:
    events = await collect(model.stream(ask("midstream_error")))
    assert events == [
        TextDelta("Hel"),
        Failed(kind="overloaded", message="The server had an error while processing your request."),
    ]
