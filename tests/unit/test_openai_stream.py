"""Reading OpenAI chat-completion chunks (infra.llm.openai_stream): compatible servers' quirks, tool
arguments that are not JSON, chunks of the wrong shape. The streams themselves are tested against
the fake server in tests/integration/test_openai_adapter.py."""

from __future__ import annotations

import pytest

from domain.llm.messages import ChatRequest, UserMessage
from domain.llm.stream import Failed, Finished, TextDelta, ToolCallCompleted
from infra.llm.openai_stream import Chunk, Turn, read_chunk


def ask(**kw: object) -> ChatRequest:
    return ChatRequest(model="m", messages=[UserMessage.text("hi")], **kw)  # type: ignore[arg-type]


def chunk(delta: dict[str, object] | None, finish: str | None = None, **extra: object) -> Chunk:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, **extra}]
    return read_chunk({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": choices})


def test_compatible_servers_quirks_map_to_the_right_stop_reason() -> None:
    turn = Turn(ask())
    call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    events = turn.feed(chunk({"tool_calls": [call]})) + turn.feed(chunk({}, "stop")) + turn.end()
    assert events[-2:] == [ToolCallCompleted(id="c1", name="f", arguments={"a": 1}), Finished(stop_reason="tool_use")]
    turn = Turn(ask(stop=["END"]))
    events = turn.feed(chunk({"content": "x"})) + turn.feed(chunk({}, "stop", stop_reason="END")) + turn.end()
    assert events == [TextDelta("x"), Finished(stop_reason="stop_sequence")]


def test_tool_arguments_that_are_not_json_fail_the_turn() -> None:
    turn = Turn(ask())
    call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": '}}
    turn.feed(chunk({"tool_calls": [call]}))
    events = turn.feed(chunk({}, "tool_calls"))
    assert isinstance(events[-1], Failed)
    assert events[-1].kind == "bad_response"
    assert turn.done


def test_a_chunk_of_the_wrong_shape_is_refused_and_unknown_fields_are_ignored() -> None:
    with pytest.raises(ValueError, match=r"at `\$\.choices\[0\]\.delta\.content`"):
        read_chunk({"choices": [{"index": 0, "delta": {"content": 5}}]})
    read = read_chunk({"choices": [{"index": 0, "delta": {"content": "x", "audio": {}}, "logprobs": None}], "x": 1})
    assert read.choices[0].delta.content == "x"
