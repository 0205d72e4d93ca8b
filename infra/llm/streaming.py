"""What every chat adapter shares: retry-before-first-token with jittered backoff, overall and idle
timeouts, HTTP status -> error kind, and assembling streamed tool-call argument fragments.

An adapter implements one *attempt* as an async generator of ``StreamEvent`` that maps its SDK's
exceptions to a terminal ``Failed`` (see ``failure_for_status``) and closes its SDK stream in a
``finally``/``async with``. ``resilient`` turns attempts into the stream the port promises. The
SDKs' own retries are switched off (``max_retries=0``) so this policy is the only one.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from domain.llm.stream import (
    ErrorKind,
    Failed,
    Finished,
    StreamEvent,
    TextDelta,
    ToolCallArgumentsDelta,
    ToolCallCompleted,
    ToolCallStarted,
    Usage,
)

log = logging.getLogger(__name__)

_CONTEXT_HINTS = (
    "context length",
    "context_length",
    "context window",
    "maximum context",
    "too many tokens",
    "prompt is too long",
    "input is too long",
    "too long",
)


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    max_retries: int = 2
    """Further attempts after a retryable failure that happened before the first token."""
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    retry_after_max_s: float = 30.0
    """A provider asking for a longer pause than this is not waited for: the failure is returned."""
    overall_timeout_s: float = 600.0
    idle_timeout_s: float = 60.0
    """Longest silence between two events (first token included) before the attempt times out."""
    sleep: Callable[[float], Any] = field(default=asyncio.sleep, repr=False)


def backoff_delay(policy: StreamPolicy, attempt: int, retry_after_s: float | None) -> float:
    """Full jitter, floored at the provider's Retry-After when it gave one."""
    ceiling = min(policy.backoff_max_s, policy.backoff_base_s * (2**attempt))
    delay = random.uniform(0, ceiling)
    return max(delay, retry_after_s or 0.0)


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return max(float(lowered["retry-after-ms"]) / 1000, 0.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def kind_for_status(status: int, message: str = "") -> ErrorKind:
    lowered = message.lower()
    if status in (400, 413, 422) and any(h in lowered for h in _CONTEXT_HINTS):
        return "context_too_long"
    if status == 401:
        return "authentication"
    if status == 403:
        return "permission"
    if status == 404:
        return "not_found"
    if status in (408, 504):
        return "timeout"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "overloaded"
    return "bad_request"


def failure_for_status(status: int, message: str, headers: Mapping[str, str] | None = None) -> Failed:
    kind = kind_for_status(status, message)
    retry_after = parse_retry_after(headers) if kind in ("rate_limited", "overloaded") else None
    return Failed(kind=kind, message=message[:2000] or f"HTTP {status}", status=status, retry_after_s=retry_after)


def _content(event: StreamEvent) -> bool:
    return not isinstance(event, Usage | Failed)


DRAIN_S = 0.05
"""How long a finished turn waits for the rest of its response (the SSE end marker)."""


async def drain(stream: AsyncIterator[Any], timeout_s: float = DRAIN_S) -> None:
    """Read what is left of a response whose turn is complete, so the SDK sees the body end and its
    connection goes back to the pool: closing it mid-body discards the connection, and the next
    call pays a new TCP (and TLS) handshake. Bounded by ``timeout_s``; errors are ignored."""
    try:
        async with asyncio.timeout(timeout_s):
            async for _ in stream:
                pass
    except Exception:  # the turn is already complete: a bad trailer changes nothing
        log.debug("ignored the end of a finished response", exc_info=True)


async def resilient(
    attempt: Callable[[], AsyncGenerator[StreamEvent, None]], policy: StreamPolicy
) -> AsyncGenerator[StreamEvent, None]:
    """Run attempts until one produces content or fails for good, under the policy's timeouts.

    A retryable ``Failed`` before the first content event starts a new attempt after a jittered
    backoff (at least Retry-After); after content has been sent, a failure ends the stream as is.
    Exactly one terminal event comes out. Closing this generator closes the running attempt.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + policy.overall_timeout_s
    tries = 0
    while True:
        started = False
        stream = attempt()
        retry: Failed | None = None
        try:
            while True:
                budget = min(policy.idle_timeout_s, deadline - loop.time())
                if budget <= 0:
                    yield Failed(kind="timeout", message="the model call took longer than allowed")
                    return
                try:
                    async with asyncio.timeout(budget):
                        event = await anext(stream)
                except StopAsyncIteration:
                    yield Failed(kind="bad_response", message="the provider's stream ended without a finish")
                    return
                except TimeoutError:
                    overall = loop.time() >= deadline
                    failure = Failed(
                        kind="timeout",
                        message="the model call took longer than allowed"
                        if overall
                        else f"no data from the provider for {policy.idle_timeout_s:g} s",
                    )
                    if not started and not overall and tries < policy.max_retries:
                        retry = failure
                        break
                    yield failure
                    return
                if isinstance(event, Failed):
                    if (
                        not started
                        and event.retryable
                        and tries < policy.max_retries
                        and (event.retry_after_s or 0) <= policy.retry_after_max_s
                    ):
                        retry = event
                        break
                    yield event
                    return
                started = started or _content(event)
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            await stream.aclose()
        tries += 1
        delay = backoff_delay(policy, tries - 1, retry.retry_after_s)
        if loop.time() + delay >= deadline:
            yield retry
            return
        log.info("retrying model call", extra={"kind": retry.kind, "attempt": tries, "delay_s": round(delay, 3)})
        await policy.sleep(delay)


class ToolCallAssembler:
    """Collects streamed tool calls: ``start`` and ``delta`` as fragments arrive (keyed by the
    provider's index), ``complete`` parses the JSON arguments once the call is closed."""

    def __init__(self) -> None:
        self._calls: dict[int, tuple[str, str, list[str]]] = {}
        self._order: list[int] = []

    def start(self, index: int, call_id: str, name: str) -> ToolCallStarted:
        self._calls[index] = (call_id, name, [])
        self._order.append(index)
        return ToolCallStarted(id=call_id, name=name, index=len(self._order) - 1)

    def known(self, index: int) -> bool:
        return index in self._calls

    def delta(self, index: int, fragment: str) -> ToolCallArgumentsDelta:
        call_id, _, parts = self._calls[index]
        parts.append(fragment)
        return ToolCallArgumentsDelta(id=call_id, delta=fragment)

    def complete(self, index: int) -> ToolCallCompleted | Failed:
        call_id, name, parts = self._calls.pop(index)
        raw = "".join(parts).strip() or "{}"
        try:
            arguments = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return Failed(kind="bad_response", message=f"tool call {name!r} has arguments that are not JSON")
        if not isinstance(arguments, dict):
            return Failed(kind="bad_response", message=f"tool call {name!r} has arguments that are not an object")
        return ToolCallCompleted(id=call_id, name=name, arguments=arguments)

    def complete_all(self) -> list[ToolCallCompleted | Failed]:
        return [self.complete(i) for i in [i for i in self._order if i in self._calls]]

    @property
    def open(self) -> bool:
        return bool(self._calls)


def text(value: str) -> TextDelta:
    return TextDelta(text=value)
