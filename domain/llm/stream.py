"""The provider-neutral stream: what every ``ChatModel.stream`` yields, in this order:

    (TextDelta | ToolCallStarted | ToolCallArgumentsDelta | ToolCallCompleted)* Usage? (Finished | Failed)

Exactly one terminal event (``Finished`` or ``Failed``) ends every stream; ``Usage`` comes before it
whenever the provider reported usage (also on a failure after tokens were produced). Tool calls
are announced, their argument JSON streams in fragments, and ``ToolCallCompleted`` carries the
parsed arguments. Provider failures are data (``Failed`` with a typed ``kind``), not exceptions,
so every consumer handles them the same way.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

StopReason = Literal["end_turn", "max_tokens", "tool_use", "stop_sequence", "content_filter"]
ErrorKind = Literal[
    "authentication",
    "permission",
    "not_found",
    "rate_limited",
    "context_too_long",
    "overloaded",
    "timeout",
    "bad_request",
    "bad_response",
    "connection",
    "cancelled",
]

# Kinds a caller may retry (after ``retry_after_s`` when given).
RETRYABLE: frozenset[ErrorKind] = frozenset({"rate_limited", "overloaded", "timeout", "connection"})


class TextDelta(msgspec.Struct, frozen=True, tag="text_delta", tag_field="type"):
    text: str


class ToolCallStarted(msgspec.Struct, frozen=True, tag="tool_call_started", tag_field="type"):
    id: str
    name: str
    index: int = 0
    """The call's position among this turn's tool calls (parallel calls interleave)."""


class ToolCallArgumentsDelta(msgspec.Struct, frozen=True, tag="tool_call_arguments_delta", tag_field="type"):
    id: str
    delta: str


class ToolCallCompleted(msgspec.Struct, frozen=True, tag="tool_call_completed", tag_field="type"):
    id: str
    name: str
    arguments: dict[str, Any]


class Usage(msgspec.Struct, frozen=True, tag="usage", tag_field="type"):
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    """Input tokens served from the provider's prompt cache (a subset of ``input_tokens``)."""

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
        )


class Finished(msgspec.Struct, frozen=True, tag="finished", tag_field="type"):
    stop_reason: StopReason


class Failed(msgspec.Struct, frozen=True, tag="failed", tag_field="type"):
    kind: ErrorKind
    message: str
    status: int | None = None
    """The upstream HTTP status, when there was one."""
    retry_after_s: float | None = None

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE


StreamEvent = TextDelta | ToolCallStarted | ToolCallArgumentsDelta | ToolCallCompleted | Usage | Finished | Failed
TERMINAL = (Finished, Failed)


class ProviderError(Exception):
    """A failed non-streaming call (embeddings, reranking, model listing): the same typed kinds."""

    def __init__(self, failure: Failed) -> None:
        super().__init__(f"{failure.kind}: {failure.message}")
        self.failure = failure

    @property
    def kind(self) -> ErrorKind:
        return self.failure.kind


class Completion(msgspec.Struct, kw_only=True):
    """A whole stream folded: what the turn said, which tools it called, and how it ended."""

    text: str = ""
    tool_calls: list[ToolCallCompleted] = []
    usage: Usage = Usage()
    stop_reason: StopReason | None = None
    error: Failed | None = None


def fold(events: list[StreamEvent]) -> Completion:
    """Fold a finished stream's events into a ``Completion`` (tests, titles, non-streaming callers)."""
    done = Completion()
    parts: list[str] = []
    for event in events:
        if isinstance(event, TextDelta):
            parts.append(event.text)
        elif isinstance(event, ToolCallCompleted):
            done.tool_calls.append(event)
        elif isinstance(event, Usage):
            done.usage = done.usage + event
        elif isinstance(event, Finished):
            done.stop_reason = event.stop_reason
        elif isinstance(event, Failed):
            done.error = event
    done.text = "".join(parts)
    return done
