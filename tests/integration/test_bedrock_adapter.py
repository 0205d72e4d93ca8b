"""The Bedrock adapters through the real boto3 SDK against a fake Bedrock endpoint speaking the
AWS event-stream wire protocol: every shared chat scenario, Bedrock's own errors and stop
reasons, retries, closing, credentials, embeddings and reranking (request translation:
test_bedrock_request.py)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.eventstream import EventStreamBuffer

from domain.llm.messages import (
    ChatRequest,
    UserMessage,
)
from domain.llm.ports import ChatModel
from domain.llm.stream import (
    Failed,
    Finished,
    ProviderError,
    StreamEvent,
    TextDelta,
    Usage,
)
from infra.llm.bedrock_chat import bedrock_chat_model
from infra.llm.bedrock_embeddings import bedrock_embedding_model, bedrock_reranker
from infra.llm.streaming import StreamPolicy
from tests.fakes.bedrock_server import FakeBedrockServer, running_bedrock_server
from tests.fakes.bedrock_wire import encode_frame, event_frame
from tests.fakes.chat_scenarios import SCENARIOS, comparable, expected

STRICT = StreamPolicy(max_retries=0, idle_timeout_s=1.0)


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture(scope="module")
def server() -> Iterator[FakeBedrockServer]:
    with running_bedrock_server() as s:
        yield s


@pytest.fixture
def bedrock(server: FakeBedrockServer) -> FakeBedrockServer:
    server.reset()
    return server


def model_for(server: FakeBedrockServer, policy: StreamPolicy = STRICT, **kw: Any) -> ChatModel:
    credentials: dict[str, Any] = {"access_key_id": "AKIDFAKE", "secret_access_key": "fake-secret"}
    credentials.update(kw)
    return bedrock_chat_model(region="eu-west-1", endpoint_url=server.base_url, policy=policy, **credentials)


@pytest.fixture(scope="module")
def strict_model(server: FakeBedrockServer) -> ChatModel:
    return model_for(server)


def hello(model: str) -> ChatRequest:
    return ChatRequest(model=model, messages=[UserMessage.text("hi")])


async def collect(model: ChatModel, request: ChatRequest) -> list[StreamEvent]:
    return [e async for e in model.stream(request)]


def stream_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "bedrock-stream")


# -- the wire format ----------------------------------------------------------------------------


def test_the_fakes_event_frames_decode_with_botocores_own_decoder() -> None:
    buffer = EventStreamBuffer()
    buffer.add_data(event_frame("messageStop", {"stopReason": "end_turn"}) + encode_frame({":a": "b"}, b"{}"))
    first, second = list(buffer)
    assert first.headers == {
        ":event-type": "messageStop",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert json.loads(first.payload)["stopReason"] == "end_turn"
    assert second.headers == {":a": "b"}
    assert second.payload == b"{}"


# -- the shared scenarios -----------------------------------------------------------------------


async def test_the_sdk_does_not_retry_on_its_own(bedrock: FakeBedrockServer, strict_model: ChatModel) -> None:
    for name in ("rate_limited", "overloaded"):
        await collect(strict_model, hello(f"scenario:{name}"))
    assert [c.path for c in bedrock.calls] == [
        "/model/scenario:rate_limited/converse-stream",
        "/model/scenario:overloaded/converse-stream",
    ]


async def test_a_throttled_first_attempt_is_retried_and_then_streams(bedrock: FakeBedrockServer) -> None:
    model = model_for(bedrock, StreamPolicy(sleep=no_sleep))
    events = await collect(model, hello("scenario:flaky"))
    assert events == expected("text")
    assert len(bedrock.calls) == 2


async def test_closing_the_consumer_closes_the_upstream_at_once(bedrock: FakeBedrockServer) -> None:
    model = model_for(bedrock)
    stream = model.stream(hello("scenario:slow"))
    received: list[StreamEvent] = []
    async for event in stream:
        received.append(event)
        if len(received) == 2:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    assert received == [TextDelta("t0"), TextDelta("t1")]
    # The slow stream lasts 10 s: a disconnect seen well before that is the close reaching upstream.
    assert await asyncio.to_thread(bedrock.disconnected.wait, 5.0)
    deadline = time.monotonic() + 1
    while stream_threads() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert stream_threads() == 0


async def test_an_idle_timeout_also_closes_the_upstream(bedrock: FakeBedrockServer, strict_model: ChatModel) -> None:
    events = await collect(strict_model, hello("scenario:stall"))
    assert events[-1].kind == "timeout"  # type: ignore[union-attr]
    assert await asyncio.to_thread(bedrock.disconnected.wait, 1.0)


async def test_the_event_loop_keeps_running_while_boto3_blocks(bedrock: FakeBedrockServer) -> None:
    """boto3 blocks (building its session, opening the stream, waiting on a stalled read) in the
    worker thread, never on the loop."""
    gaps: list[float] = []
    stop = asyncio.Event()

    async def heartbeat() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    model = model_for(bedrock)
    events = await collect(model, hello("scenario:stall"))
    stop.set()
    await beat
    assert comparable(events) == comparable(expected("stall"))
    # The stall lasts the idle limit (1 s): a loop blocked by boto3 would beat a handful of times,
    # a free one about 200 (a loose bound, so a busy machine cannot fail it).
    assert len(gaps) >= 20


# -- Bedrock's own errors and stop reasons ------------------------------------------------------

BEDROCK_CASES: dict[str, list[StreamEvent]] = {
    "bad_signature": [
        Failed(kind="authentication", message="The security token included in the request is invalid.", status=403)
    ],
    "expired_token": [
        Failed(kind="authentication", message="The security token included in the request is expired", status=403)
    ],
    "validation": [Failed(kind="bad_request", message="Malformed input request", status=400)],
    "too_long": [Failed(kind="context_too_long", message="Input is too long for requested model.", status=400)],
    "throttled_503": [Failed(kind="overloaded", message="Too many connections", status=503, retry_after_s=1.0)],
    "stream_error": [TextDelta("par"), Failed(kind="overloaded", message="The model stream failed")],
    "stream_throttled": [Failed(kind="rate_limited", message="Too many tokens, please wait")],
    "stop_sequence": [TextDelta("one"), Usage(12, 1), Finished(stop_reason="stop_sequence")],
    "guardrail": [TextDelta("no"), Usage(12, 1), Finished(stop_reason="content_filter")],
    "malformed_tool_use": [
        TextDelta("x"),
        Usage(12, 1),
        Failed(kind="bad_response", message="the model stopped with malformed_tool_use"),
    ],
    "no_metadata": [TextDelta("hi"), Finished(stop_reason="end_turn")],
}


@pytest.mark.parametrize("name", list(BEDROCK_CASES))
async def test_bedrock_errors_and_stop_reasons(name: str, bedrock: FakeBedrockServer, strict_model: ChatModel) -> None:
    assert await collect(strict_model, hello(f"scenario:{name}")) == BEDROCK_CASES[name]


async def test_a_stream_exception_before_any_token_is_retried(bedrock: FakeBedrockServer) -> None:
    model = model_for(bedrock, StreamPolicy(max_retries=1, sleep=no_sleep))
    events = await collect(model, hello("scenario:stream_throttled"))
    assert events == BEDROCK_CASES["stream_throttled"]
    assert len(bedrock.calls) == 2


async def test_an_unreachable_endpoint_is_a_connection_failure(bedrock: FakeBedrockServer) -> None:
    model = bedrock_chat_model(
        region="eu-west-1",
        access_key_id="AKIDFAKE",
        secret_access_key="fake-secret",
        endpoint_url="http://127.0.0.1:9",
        # Patient: building a boto3 client on a busy machine can take longer than STRICT's idle limit.
        policy=StreamPolicy(max_retries=0, idle_timeout_s=30),
    )
    events = await collect(model, hello("scenario:text"))
    assert [type(e) for e in events] == [Failed]
    assert events[0].kind == "connection"  # type: ignore[union-attr]


# -- credentials --------------------------------------------------------------------------------


async def test_requests_are_signed_with_the_given_keys_and_session_token(bedrock: FakeBedrockServer) -> None:
    model = model_for(bedrock, session_token="session-token-1")
    assert await collect(model, hello("scenario:text")) == expected("text")
    headers = bedrock.calls[0].headers
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDFAKE/")
    assert "/eu-west-1/bedrock/aws4_request" in headers["authorization"]
    assert headers["x-amz-security-token"] == "session-token-1"


async def test_a_named_profile_supplies_the_keys(
    bedrock: FakeBedrockServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text("[team]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    model = model_for(bedrock, access_key_id=None, secret_access_key=None, profile="team")
    assert await collect(model, hello("scenario:text")) == expected("text")
    assert bedrock.calls[0].headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDPROFILE/")

    missing = model_for(bedrock, access_key_id=None, secret_access_key=None, profile="nobody")
    events = await collect(missing, hello("scenario:text"))
    assert [(type(e), getattr(e, "kind", None)) for e in events] == [(Failed, "authentication")]
    assert len(bedrock.calls) == 1


# -- embeddings and reranking -------------------------------------------------------------------


def credentials(server: FakeBedrockServer) -> dict[str, Any]:
    return {
        "region": "eu-west-1",
        "access_key_id": "AKIDFAKE",
        "secret_access_key": "fake-secret",
        "endpoint_url": server.base_url,
    }


async def test_titan_embeddings_one_call_per_text_in_order(bedrock: FakeBedrockServer) -> None:
    model = bedrock_embedding_model(
        model="amazon.titan-embed-text-v2:0", dimensions=3, normalize=True, **credentials(bedrock)
    )
    texts = ["alpha", "beta gamma", "delta epsilon zeta", "eta", "theta iota"]
    result = await model.embed(texts)
    assert result.vectors == [[float(len(t)), float(sum(map(ord, t)) % 997), 0.5] for t in texts]
    assert result.usage == Usage(input_tokens=sum(len(t.split()) for t in texts))
    assert sorted(c.body["inputText"] for c in bedrock.calls) == sorted(texts)
    assert {c.path for c in bedrock.calls} == {"/model/amazon.titan-embed-text-v2:0/invoke"}
    assert all(c.body["dimensions"] == 3 and c.body["normalize"] is True for c in bedrock.calls)
    assert (await model.embed([])).vectors == []


@pytest.mark.parametrize(
    ("scenario", "kind", "retry_after"),
    [("unauthorized", "authentication", None), ("rate_limited", "rate_limited", 2.0), ("no_model", "not_found", None)],
)
async def test_embedding_failures_raise_typed_provider_errors(
    scenario: str, kind: str, retry_after: float | None, bedrock: FakeBedrockServer
) -> None:
    model = bedrock_embedding_model(model=f"scenario:{scenario}", **credentials(bedrock))
    with pytest.raises(ProviderError) as caught:
        await model.embed(["one", "two"])
    assert caught.value.kind == kind
    assert caught.value.failure.retry_after_s == retry_after
    assert caught.value.failure.message == SCENARIOS[scenario].error_message


async def test_rerank_scores_documents_best_first(bedrock: FakeBedrockServer) -> None:
    reranker = bedrock_reranker(model="amazon.rerank-v1:0", **credentials(bedrock))
    documents = ["the cat sat", "dogs bark", "a black cat on a mat"]
    result = await reranker.rerank("black cat", documents, top_n=2)
    assert [r.index for r in result.results] == [2, 0]
    assert result.results[0].score == 1.0
    assert result.usage == Usage()
    body = bedrock.requests[0]
    assert bedrock.calls[0].path == "/rerank"
    assert body["queries"] == [{"type": "TEXT", "textQuery": {"text": "black cat"}}]
    assert body["sources"][1] == {
        "type": "INLINE",
        "inlineDocumentSource": {"type": "TEXT", "textDocument": {"text": "dogs bark"}},
    }
    assert body["rerankingConfiguration"] == {
        "type": "BEDROCK_RERANKING_MODEL",
        "bedrockRerankingConfiguration": {
            "numberOfResults": 2,
            "modelConfiguration": {"modelArn": "arn:aws:bedrock:eu-west-1::foundation-model/amazon.rerank-v1:0"},
        },
    }
    assert (await reranker.rerank("q", [])).results == []


async def test_rerank_failures_raise_typed_provider_errors(bedrock: FakeBedrockServer) -> None:
    reranker = bedrock_reranker(model="scenario:forbidden", **credentials(bedrock))
    with pytest.raises(ProviderError) as caught:
        await reranker.rerank("q", ["a"])
    assert caught.value.kind == "permission"
    assert caught.value.failure.status == 403
