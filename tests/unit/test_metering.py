"""MeteredChatModel over a scripted model: events pass through unchanged, and exactly one entry
is recorded however the stream ends, without the sink ever breaking the stream."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from decimal import Decimal

import pytest

from domain.llm.messages import ChatRequest, UserMessage
from domain.llm.ports import Embeddings
from domain.llm.pricing import Pricing
from domain.llm.stream import Failed, Finished, ProviderError, StreamEvent, TextDelta, Usage
from domain.llm.usage import UsageContext, UsageEntry
from infra.llm.metering import MemoryUsageSink, MeteredChatModel, MeteredEmbeddingModel

CTX = UsageContext(
    tenant_id=uuid.uuid4(), model_name="m", purpose="chat", pricing=Pricing(input=Decimal(1), output=Decimal(2))
)
REQUEST = ChatRequest(model="m", messages=[UserMessage.text("hi")])


class Scripted:
    def __init__(self, events: list[StreamEvent], delay: float = 0.0) -> None:
        self.events = events
        self.delay = delay
        self.closed = False

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        return self._run()

    async def _run(self) -> AsyncGenerator[StreamEvent, None]:
        try:
            for event in self.events:
                if self.delay:
                    await asyncio.sleep(self.delay)
                yield event
        finally:
            self.closed = True


async def test_events_pass_through_and_usage_is_summed() -> None:
    events: list[StreamEvent] = [
        TextDelta("a"),
        Usage(input_tokens=5, output_tokens=1),
        TextDelta("b"),
        Usage(output_tokens=2, cached_input_tokens=1, input_tokens=1),
        Finished(stop_reason="end_turn"),
    ]
    sink = MemoryUsageSink()
    got = [e async for e in MeteredChatModel(Scripted(events, 0.01), sink, CTX).stream(REQUEST)]
    assert got == events
    (entry,) = sink.entries
    assert entry.usage == Usage(input_tokens=6, output_tokens=3, cached_input_tokens=1)
    assert (entry.status, entry.error_kind) == ("completed", None)
    assert entry.cost == Decimal("0.000012")
    assert entry.ttft_ms is not None
    assert entry.latency_ms is not None
    assert 10 <= entry.ttft_ms < entry.latency_ms


async def test_a_failure_is_recorded_with_its_kind_and_partial_usage() -> None:
    events: list[StreamEvent] = [TextDelta("a"), Usage(3, 1), Failed(kind="overloaded", message="x")]
    sink = MemoryUsageSink()
    assert [e async for e in MeteredChatModel(Scripted(events), sink, CTX).stream(REQUEST)] == events
    (entry,) = sink.entries
    assert (entry.status, entry.error_kind, entry.usage) == ("failed", "overloaded", Usage(3, 1))


async def test_closing_early_is_cancelled_and_closes_upstream() -> None:
    upstream = Scripted([TextDelta("a"), TextDelta("b"), Finished(stop_reason="end_turn")])
    sink = MemoryUsageSink()
    stream = MeteredChatModel(upstream, sink, CTX).stream(REQUEST)
    assert await anext(stream) == TextDelta("a")
    assert sink.entries == []  # nothing is recorded before the end
    await stream.aclose()  # type: ignore[attr-defined]
    assert upstream.closed
    (entry,) = sink.entries
    assert (entry.status, entry.usage, entry.cost) == ("cancelled", Usage(), Decimal(0))


async def test_no_content_means_no_time_to_first_token() -> None:
    sink = MemoryUsageSink()
    events: list[StreamEvent] = [Failed(kind="rate_limited", message="slow down", status=429)]
    assert [e async for e in MeteredChatModel(Scripted(events), sink, CTX).stream(REQUEST)] == events
    assert sink.entries[0].ttft_ms is None


async def test_a_cancelled_task_is_recorded() -> None:
    upstream = Scripted([TextDelta("a")] * 100, delay=0.01)
    sink = MemoryUsageSink()

    async def consume() -> None:
        async for _ in MeteredChatModel(upstream, sink, CTX).stream(REQUEST):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert upstream.closed
    assert [e.status for e in sink.entries] == ["cancelled"]


class Broken:
    def record(self, entry: UsageEntry) -> None:
        raise RuntimeError("the sink is down")


async def test_a_broken_sink_never_breaks_the_stream() -> None:
    events: list[StreamEvent] = [TextDelta("a"), Finished(stop_reason="end_turn")]
    assert [e async for e in MeteredChatModel(Scripted(events), Broken(), CTX).stream(REQUEST)] == events


class Embedder:
    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        if self.error is not None:
            raise self.error
        return Embeddings(vectors=[[0.0]] * len(texts), usage=Usage(input_tokens=7))


async def test_embeddings_record_success_and_failure() -> None:
    sink = MemoryUsageSink()
    assert len((await MeteredEmbeddingModel(Embedder(), sink, CTX).embed(["a", "b"])).vectors) == 2
    failure = ProviderError(Failed(kind="authentication", message="no"))
    with pytest.raises(ProviderError):
        await MeteredEmbeddingModel(Embedder(failure), sink, CTX).embed(["a"])
    ok, bad = sink.entries
    assert (ok.status, ok.usage.input_tokens, ok.ttft_ms) == ("completed", 7, None)
    assert (bad.status, bad.error_kind) == ("failed", "authentication")
