"""Scenarios every fake provider server speaks in its own wire protocol, and the one
provider-neutral event sequence every chat adapter must turn each of them into.

A request selects its scenario through its model id: ``model="scenario:<name>"``. The fakes stream
exactly the fragments given here (no merging or splitting), so the expected sequences are exact.
The contract suite (tests/contract/test_chat_models.py) runs every scenario against every adapter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from domain.llm.stream import (
    Failed,
    Finished,
    StreamEvent,
    TextDelta,
    ToolCallArgumentsDelta,
    ToolCallCompleted,
    ToolCallStarted,
    Usage,
)


@dataclass(frozen=True)
class ToolCallScript:
    id: str
    name: str
    fragments: list[str]


@dataclass(frozen=True)
class Scenario:
    """What the fake sends. ``http_error``: answer the request with this status and an error body
    in the provider's own format instead of a stream (``retry_after`` as a header). ``cut_after``:
    drop the connection after that many text fragments, without a final event. ``stall_after``:
    stop sending (keep the connection open) after that many text fragments."""

    text: list[str] = field(default_factory=list)
    tool_calls: list[ToolCallScript] = field(default_factory=list)
    finish: str = "end_turn"  # neutral stop reason the fake translates to its own
    input_tokens: int = 12
    output_tokens: int = 4
    cached_input_tokens: int = 0
    http_error: int | None = None
    error_message: str = ""
    retry_after: str | None = None
    cut_after: int | None = None
    stall_after: int | None = None


WEATHER = ToolCallScript("call_1", "get_weather", ['{"ci', 'ty": "Pa', 'ris"}'])
TIME = ToolCallScript("call_2", "get_time", ['{"tz":', ' "UTC"}'])

SCENARIOS: dict[str, Scenario] = {
    "text": Scenario(text=["Hello", ",", " world", "!"]),
    "tools": Scenario(text=[], tool_calls=[WEATHER, TIME], finish="tool_use", output_tokens=20),
    "text_then_tool": Scenario(text=["Let me check."], tool_calls=[WEATHER], finish="tool_use", output_tokens=9),
    "cached": Scenario(text=["ok"], input_tokens=100, cached_input_tokens=80, output_tokens=1),
    "max_tokens": Scenario(text=["abc"], finish="max_tokens", output_tokens=3),
    "content_filter": Scenario(text=["I can"], finish="content_filter", output_tokens=2),
    "rate_limited": Scenario(http_error=429, error_message="Rate limit reached", retry_after="2"),
    "unauthorized": Scenario(http_error=401, error_message="Incorrect API key provided"),
    "forbidden": Scenario(http_error=403, error_message="This key may not use this model"),
    "no_model": Scenario(http_error=404, error_message="The model does not exist"),
    "context_too_long": Scenario(
        http_error=400, error_message="This model's maximum context length is 8192 tokens; prompt is too long"
    ),
    "overloaded": Scenario(http_error=503, error_message="The server is overloaded"),
    "cut": Scenario(text=["Hel", "lo"], cut_after=1),
    "stall": Scenario(text=["a", "b"], stall_after=1),
}


def expected(name: str) -> list[StreamEvent]:
    """The events every adapter must yield for scenario ``name`` (with retries switched off and,
    for ``stall``, an idle timeout shorter than the test's patience)."""
    s = SCENARIOS[name]
    if s.http_error is not None:
        kinds = {
            429: "rate_limited",
            401: "authentication",
            403: "permission",
            404: "not_found",
            400: "context_too_long",
            503: "overloaded",
        }
        retry = float(s.retry_after) if s.retry_after else None
        return [Failed(kind=kinds[s.http_error], message=s.error_message, status=s.http_error, retry_after_s=retry)]  # type: ignore[arg-type]
    if s.cut_after is not None:
        return [*(TextDelta(t) for t in s.text[: s.cut_after]), Failed(kind="connection", message="")]
    if s.stall_after is not None:
        return [*(TextDelta(t) for t in s.text[: s.stall_after]), Failed(kind="timeout", message="")]
    events: list[StreamEvent] = [TextDelta(t) for t in s.text]
    for index, call in enumerate(s.tool_calls):
        events.append(ToolCallStarted(id=call.id, name=call.name, index=index))
        events.extend(ToolCallArgumentsDelta(id=call.id, delta=f) for f in call.fragments)
        events.append(ToolCallCompleted(id=call.id, name=call.name, arguments=json.loads("".join(call.fragments))))
    events.append(Usage(s.input_tokens, s.output_tokens, s.cached_input_tokens))
    events.append(Finished(stop_reason=s.finish))  # type: ignore[arg-type]
    return events


def comparable(events: list[StreamEvent]) -> list[StreamEvent]:
    """Events with free-text failure messages blanked (providers word errors their own way);
    the kind, status and retry-after must still match exactly. HTTP-error scenarios keep the
    message: the fake sends ``error_message`` and adapters must pass the provider's message on."""
    out: list[StreamEvent] = []
    for e in events:
        if isinstance(e, Failed) and e.kind in ("connection", "timeout"):
            e = Failed(kind=e.kind, message="", status=e.status, retry_after_s=e.retry_after_s)
        out.append(e)
    return out


def agent(script: str, rounds_done: int, results: list[str]) -> Scenario:
    """``scenario:agent``: a model that uses tools as its user's message scripts it, in JSON:
    ``{"calls": [{"name": ..., "arguments": {...}}], "rounds": N, "say": "text before the calls"}``.
    While fewer than ``rounds`` (default 1) rounds of tool calls followed that message, it says
    ``say`` and calls every tool in ``calls`` (ids unique per round); then it answers with the
    results it was given: ``"Results: " + " | ".join(results)``. A message that is not such a
    script is answered like ``text``."""
    try:
        spec = json.loads(script)
    except ValueError:
        spec = None
    if not isinstance(spec, dict) or not isinstance(spec.get("calls"), list):
        return SCENARIOS["text"]
    if rounds_done < int(spec.get("rounds", 1)):
        calls = [
            ToolCallScript(f"call_{rounds_done}_{i}", str(c["name"]), [json.dumps(c.get("arguments", {}))])
            for i, c in enumerate(spec["calls"])
        ]
        say = str(spec.get("say", ""))
        return Scenario(text=[say] if say else [], tool_calls=calls, finish="tool_use", output_tokens=7)
    return Scenario(text=["Results: ", " | ".join(results)], output_tokens=5)
