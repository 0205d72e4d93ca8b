"""Usage metering: wrappers around the model ports that leave exactly one ``usage_records`` row per
provider call, and the sink that writes those rows.

The wrappers pass every event and result through unchanged and only observe: a monotonic clock for
latency and time to first token, the ``Usage`` events summed, and how the call ended (completed,
failed with its error kind, or cancelled when the consumer closed the stream or its task was
cancelled). Nothing touches the database during a call: at its end the entry is handed to the sink
synchronously (no ``await``, so a cancelled consumer cannot lose it), and the sink's own background
task inserts what has accumulated in one short transaction. Metering never raises into the call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import insert

from domain.llm.messages import ChatRequest
from domain.llm.ports import ChatModel, EmbeddingModel, Embeddings, Reranker, Reranking
from domain.llm.stream import (
    ErrorKind,
    Failed,
    Finished,
    ProviderError,
    StreamEvent,
    TextDelta,
    ToolCallArgumentsDelta,
    ToolCallStarted,
    Usage,
)
from domain.llm.usage import CallStatus, UsageContext, UsageEntry
from infra.db.engine import Database
from infra.db.tables.llm import usage_records

log = logging.getLogger("liteskill.llm.usage")

MAX_PENDING = 10_000
"""Entries kept while the database is unreachable; older ones beyond this are dropped (and logged)."""

_CONTENT = (TextDelta, ToolCallStarted, ToolCallArgumentsDelta)


class UsageRecorder(Protocol):
    def record(self, entry: UsageEntry) -> None:
        """Take ``entry`` for writing; returns at once and never raises."""
        ...


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def row_of(entry: UsageEntry) -> dict[str, Any]:
    ctx, usage = entry.context, entry.usage
    return {
        "tenant_id": ctx.tenant_id,
        "user_id": ctx.user_id,
        "api_key_id": ctx.api_key_id,
        "provider_id": ctx.provider_id,
        "model_id": ctx.model_id,
        "model_name": ctx.model_name,
        "purpose": ctx.purpose,
        "conversation_id": ctx.conversation_id,
        "run_id": ctx.run_id,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "cost": entry.cost,
        "currency": entry.currency,
        "latency_ms": entry.latency_ms,
        "ttft_ms": entry.ttft_ms,
        "status": entry.status,
        "error_kind": entry.error_kind,
    }


class UsageSink:
    """Writes usage entries to ``usage_records`` from a background task it owns: ``record`` only
    queues, the task inserts everything queued so far in one transaction (a natural batch under
    load), and ``flush`` / ``aclose`` wait until the queue is written (call ``aclose`` on shutdown)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pending: list[UsageEntry] = []
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.lost = 0

    def record(self, entry: UsageEntry) -> None:
        try:
            if len(self._pending) >= MAX_PENDING:
                self._pending.pop(0)
                self.lost += 1
                log.error("usage queue full: an entry was dropped")
            self._pending.append(entry)
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._drain(), name="usage-sink")
        except Exception:  # no running loop, or anything else: metering never breaks a call
            log.exception("could not queue a usage entry")

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                async with self.db.write() as session:
                    await session.execute(insert(usage_records), [row_of(e) for e in batch])
                self.written += len(batch)
            except Exception:
                self.lost += len(batch)
                log.exception("could not write %d usage entries", len(batch))

    async def flush(self) -> None:
        """Wait until every entry recorded so far is written (or given up on)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def aclose(self) -> None:
        await self.flush()


class MemoryUsageSink:
    """Keeps entries in a list (benchmarks and unit tests)."""

    def __init__(self) -> None:
        self.entries: list[UsageEntry] = []

    def record(self, entry: UsageEntry) -> None:
        self.entries.append(entry)


def _record(sink: UsageRecorder, entry: UsageEntry) -> None:
    try:
        sink.record(entry)
    except Exception:
        log.exception("the usage sink failed")


class MeteredChatModel:
    """A ``ChatModel`` that meters every stream of ``inner``."""

    def __init__(self, inner: ChatModel, sink: UsageRecorder, context: UsageContext) -> None:
        self.inner = inner
        self.sink = sink
        self.context = context

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        return self._metered(request)

    async def _metered(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        clock = time.monotonic
        started = clock()
        first: float | None = None
        usage = Usage()
        status: CallStatus = "cancelled"
        error_kind: ErrorKind | None = None
        upstream = self.inner.stream(request)
        try:
            async for event in upstream:
                if first is None and isinstance(event, _CONTENT):
                    first = clock()
                elif isinstance(event, Usage):
                    usage = usage + event
                elif isinstance(event, Finished):
                    status = "completed"
                elif isinstance(event, Failed):
                    status, error_kind = ("cancelled", None) if event.kind == "cancelled" else ("failed", event.kind)
                yield event
        except (GeneratorExit, asyncio.CancelledError):
            raise  # the consumer stopped early: recorded as cancelled below
        except Exception:
            status, error_kind = "failed", "bad_response"  # adapters report failures as data; this is a bug
            raise
        finally:
            ended = clock()
            try:
                # ``async for`` does not close what it leaves; an exhausted upstream closes at once.
                closer = getattr(upstream, "aclose", None)
                if closer is not None:
                    await closer()
            except Exception:
                log.exception("closing the upstream stream failed")
            finally:
                entry = UsageEntry(
                    context=self.context,
                    usage=usage,
                    status=status,
                    error_kind=error_kind,
                    latency_ms=_ms(ended - started),
                    ttft_ms=_ms(first - started) if first is not None else None,
                )
                _record(self.sink, entry)


class MeteredEmbeddingModel:
    """An ``EmbeddingModel`` that meters every ``embed`` call of ``inner``."""

    def __init__(self, inner: EmbeddingModel, sink: UsageRecorder, context: UsageContext) -> None:
        self.inner = inner
        self.sink = sink
        self.context = context

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        meter = _CallMeter(self.sink, self.context)
        try:
            result = await self.inner.embed(texts)
        except BaseException as exc:
            meter.failed(exc)
            raise
        meter.done(result.usage)
        return result


class MeteredReranker:
    """A ``Reranker`` that meters every ``rerank`` call of ``inner``."""

    def __init__(self, inner: Reranker, sink: UsageRecorder, context: UsageContext) -> None:
        self.inner = inner
        self.sink = sink
        self.context = context

    async def rerank(self, query: str, documents: Sequence[str], *, top_n: int | None = None) -> Reranking:
        meter = _CallMeter(self.sink, self.context)
        try:
            result = await self.inner.rerank(query, documents, top_n=top_n)
        except BaseException as exc:
            meter.failed(exc)
            raise
        meter.done(result.usage)
        return result


class _CallMeter:
    """Latency and outcome of one request/response call."""

    def __init__(self, sink: UsageRecorder, context: UsageContext) -> None:
        self.sink = sink
        self.context = context
        self.started = time.monotonic()

    def _write(self, usage: Usage, status: CallStatus, error_kind: ErrorKind | None) -> None:
        latency = _ms(time.monotonic() - self.started)
        entry = UsageEntry(context=self.context, usage=usage, status=status, error_kind=error_kind, latency_ms=latency)
        _record(self.sink, entry)

    def done(self, usage: Usage) -> None:
        self._write(usage, "completed", None)

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, asyncio.CancelledError):
            self._write(Usage(), "cancelled", None)
        elif isinstance(exc, ProviderError):
            self._write(Usage(), "failed", exc.kind)
        else:
            self._write(Usage(), "failed", "bad_response")


if TYPE_CHECKING:

    def _ports(
        chat: MeteredChatModel, embed: MeteredEmbeddingModel, rerank: MeteredReranker, sink: UsageSink
    ) -> tuple[ChatModel, EmbeddingModel, Reranker, UsageRecorder]:
        return chat, embed, rerank, sink
