"""Reading an OpenAI chat-completions stream: each ``chat.completion.chunk`` (decoded JSON from the
SDK's stream) read into ``Chunk``, and ``Turn``, the state of one streamed turn that turns chunks
into the adapter's stream events (text, tool calls assembled by index, usage, the finish)."""

from __future__ import annotations

import msgspec

from domain.llm.messages import ChatRequest
from domain.llm.stream import Failed, Finished, StopReason, StreamEvent, TextDelta, Usage
from infra.llm.streaming import ToolCallAssembler

_STOP_REASONS: dict[str, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "content_filter",
}


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _CallDelta(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_CallDelta] | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    delta: _Delta = msgspec.field(default_factory=_Delta)
    finish_reason: str | None = None
    stop_reason: str | int | None = None  # vLLM: the stop string (or token id) that ended the turn


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None


class Chunk(msgspec.Struct):
    """One ``chat.completion.chunk``; unknown fields are ignored, wrong types refused."""

    choices: list[_Choice] = msgspec.field(default_factory=list)
    usage: _Usage | None = None


def read_chunk(data: object) -> Chunk:
    """A chunk from its decoded JSON; ``ValueError`` (``msgspec.ValidationError``) if it is not one."""
    return msgspec.convert(data, Chunk)


def _usage(usage: _Usage) -> Usage:
    details = usage.prompt_tokens_details
    cached = (details.cached_tokens if details is not None else None) or 0
    return Usage(
        input_tokens=usage.prompt_tokens or 0,
        output_tokens=usage.completion_tokens or 0,
        cached_input_tokens=cached,
    )


class _Broken(Exception):
    def __init__(self, failure: Failed) -> None:
        super().__init__(failure.message)
        self.failure = failure


class Turn:
    """The state of one streamed turn: open tool calls, the held-back finish and usage."""

    def __init__(self, request: ChatRequest) -> None:
        self.request = request
        self.calls = ToolCallAssembler()
        self.called = False
        self.finish: StopReason | None = None
        self.usage: Usage | None = None
        self.done = False

    def feed(self, chunk: Chunk) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        try:
            self._feed(chunk, out)
        except _Broken as broken:
            return self._fail(out, broken.failure)
        if self.finish is not None and chunk.usage is not None and not chunk.choices:
            out.extend(self.end())  # the usage chunk after the finish: the turn is complete
        return out

    def end(self) -> list[StreamEvent]:
        """The stream is over: close what is open and finish (or fail if it never finished)."""
        out: list[StreamEvent] = []
        try:
            self._close_calls(out)
        except _Broken as broken:
            return self._fail(out, broken.failure)
        if self.finish is None:
            return self._fail(out, Failed(kind="connection", message="the stream ended before the turn finished"))
        self.done = True
        return [*out, *self.trailer(), Finished(stop_reason=self.finish)]

    def trailer(self) -> list[StreamEvent]:
        return [self.usage] if self.usage is not None else []

    def _fail(self, out: list[StreamEvent], failure: Failed) -> list[StreamEvent]:
        self.done = True
        return [*out, *self.trailer(), failure]

    def _feed(self, chunk: Chunk, out: list[StreamEvent]) -> None:
        if chunk.usage is not None:
            self.usage = _usage(chunk.usage)
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            delta = choice.delta
            text = delta.content or delta.refusal
            if text:
                self._close_calls(out)
                out.append(TextDelta(text))
            for call in delta.tool_calls or []:
                function = call.function
                if not self.calls.known(call.index):
                    self._close_calls(out)
                    name = (function.name if function else None) or ""
                    out.append(self.calls.start(call.index, call.id or f"call_{call.index}", name))
                    self.called = True
                if function is not None and function.arguments:
                    out.append(self.calls.delta(call.index, function.arguments))
            if choice.finish_reason is not None:
                self._close_calls(out)
                self.finish = self._stop_reason(choice.finish_reason, choice.stop_reason)

    def _close_calls(self, out: list[StreamEvent]) -> None:
        for event in self.calls.complete_all():
            if isinstance(event, Failed):
                raise _Broken(event)
            out.append(event)

    def _stop_reason(self, finish: str, matched: str | int | None) -> StopReason:
        if finish == "stop" and self.called:
            return "tool_use"  # some compatible servers say "stop" after tool calls
        if finish == "stop" and self.request.stop and matched in self.request.stop:
            return "stop_sequence"  # vLLM names the stop string it matched
        return _STOP_REASONS.get(finish, "end_turn")
