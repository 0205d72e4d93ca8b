"""The shared streaming policy: retries only before the first token, timeouts, error kinds,
tool-call assembly, and closing the attempt when the consumer stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from domain.llm.stream import Failed, Finished, StreamEvent, TextDelta, ToolCallCompleted, Usage, fold
from infra.llm.streaming import (
    StreamPolicy,
    ToolCallAssembler,
    failure_for_status,
    kind_for_status,
    parse_retry_after,
    resilient,
)

slept: list[float] = []


async def fake_sleep(delay: float) -> None:
    slept.append(delay)


def policy(**kw: float) -> StreamPolicy:
    return StreamPolicy(sleep=fake_sleep, **kw)  # type: ignore[arg-type]


def scripted(*attempts: list[StreamEvent | float]) -> tuple[list[int], list[bool], object]:
    """An attempt factory replaying ``attempts`` (a float is a pause of that many seconds)."""
    opened: list[int] = []
    closed: list[bool] = []

    def attempt() -> AsyncGenerator[StreamEvent, None]:
        n = len(opened)
        opened.append(n)

        async def gen() -> AsyncGenerator[StreamEvent, None]:
            try:
                for item in attempts[n]:
                    if isinstance(item, float):
                        await asyncio.sleep(item)
                    else:
                        yield item
            finally:
                closed.append(True)

        return gen()

    return opened, closed, attempt


async def run(attempt: object, p: StreamPolicy) -> list[StreamEvent]:
    return [e async for e in resilient(attempt, p)]  # type: ignore[arg-type]


RATE = Failed(kind="rate_limited", message="slow down", status=429, retry_after_s=1.5)
DONE = Finished(stop_reason="end_turn")


async def test_a_retryable_failure_before_any_token_is_retried_after_retry_after() -> None:
    slept.clear()
    opened, closed, attempt = scripted([RATE], [TextDelta("hi"), Usage(1, 1), DONE])
    events = await run(attempt, policy())
    assert events == [TextDelta("hi"), Usage(1, 1), DONE]
    assert len(opened) == 2
    assert len(closed) == 2
    assert slept
    assert slept[0] >= 1.5


async def test_failure_after_the_first_token_is_not_retried() -> None:
    opened, _, attempt = scripted([TextDelta("par"), RATE], [TextDelta("never")])
    events = await run(attempt, policy())
    assert events == [TextDelta("par"), RATE]
    assert len(opened) == 1


async def test_retries_are_bounded_and_non_retryable_kinds_are_final() -> None:
    opened, _, attempt = scripted([RATE], [RATE], [RATE], [RATE])
    assert (await run(attempt, policy(max_retries=2)))[-1] == RATE
    assert len(opened) == 3
    auth = Failed(kind="authentication", message="bad key", status=401)
    opened, _, attempt = scripted([auth], [DONE])
    assert await run(attempt, policy()) == [auth]
    assert len(opened) == 1


async def test_a_long_retry_after_is_returned_not_waited_for() -> None:
    long = Failed(kind="rate_limited", message="later", status=429, retry_after_s=3600)
    opened, _, attempt = scripted([long], [DONE])
    assert await run(attempt, policy()) == [long]
    assert len(opened) == 1


async def test_idle_timeout_retries_a_silent_start_and_fails_a_stalled_stream() -> None:
    opened, closed, attempt = scripted([5.0, DONE], [TextDelta("x"), DONE])
    assert await run(attempt, policy(idle_timeout_s=0.05)) == [TextDelta("x"), DONE]
    assert len(opened) == 2
    assert len(closed) == 2
    opened, closed, attempt = scripted([TextDelta("x"), 5.0, DONE])
    events = await run(attempt, policy(idle_timeout_s=0.05))
    assert events[0] == TextDelta("x")
    assert isinstance(events[-1], Failed)
    assert events[-1].kind == "timeout"
    assert closed == [True]


async def test_a_stream_without_a_finish_is_a_bad_response() -> None:
    _, _, attempt = scripted([TextDelta("x")])
    events = await run(attempt, policy())
    assert isinstance(events[-1], Failed)
    assert events[-1].kind == "bad_response"


async def test_closing_the_consumer_closes_the_attempt() -> None:
    _, closed, attempt = scripted([TextDelta("a"), TextDelta("b"), DONE])
    stream = resilient(attempt, policy())  # type: ignore[arg-type]
    assert await anext(stream) == TextDelta("a")
    await stream.aclose()
    assert closed == [True]


def test_status_kinds_and_retry_after() -> None:
    assert kind_for_status(401) == "authentication"
    assert kind_for_status(403) == "permission"
    assert kind_for_status(404) == "not_found"
    assert kind_for_status(429) == "rate_limited"
    assert kind_for_status(529) == "overloaded"
    assert kind_for_status(503) == "overloaded"
    assert kind_for_status(408) == "timeout"
    assert kind_for_status(400, "This model's maximum context length is 8192 tokens") == "context_too_long"
    assert kind_for_status(400, "invalid temperature") == "bad_request"
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (parse_retry_after({"retry-after": later}) or 0) <= 31
    assert parse_retry_after({"retry-after": "soon"}) is None
    failed = failure_for_status(429, "too many", {"retry-after": "2"})
    assert (failed.kind, failed.retry_after_s, failed.retryable) == ("rate_limited", 2.0, True)


def test_tool_call_assembly_interleaved_and_broken_json() -> None:
    calls = ToolCallAssembler()
    calls.start(0, "a", "search")
    calls.start(1, "b", "time")
    calls.delta(1, '{"tz": "U')
    calls.delta(0, '{"q": ')
    calls.delta(1, 'TC"}')
    calls.delta(0, '"cats"}')
    assert calls.complete_all() == [
        ToolCallCompleted(id="a", name="search", arguments={"q": "cats"}),
        ToolCallCompleted(id="b", name="time", arguments={"tz": "UTC"}),
    ]
    calls.start(2, "c", "x")
    calls.delta(2, "{nope")
    broken = calls.complete(2)
    assert isinstance(broken, Failed)
    assert broken.kind == "bad_response"
    calls.start(3, "d", "noargs")
    assert calls.complete(3) == ToolCallCompleted(id="d", name="noargs", arguments={})


def test_fold() -> None:
    done = fold([TextDelta("a"), TextDelta("b"), Usage(3, 2, 1), Finished(stop_reason="max_tokens")])
    assert (done.text, done.usage, done.stop_reason, done.error) == ("ab", Usage(3, 2, 1), "max_tokens", None)


pytestmark = pytest.mark.filterwarnings("error")
