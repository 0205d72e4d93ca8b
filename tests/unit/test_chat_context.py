"""What the model sees of a conversation (domain.chat.context): failed turns left out, the oldest
turns dropped first to fit the window, and tool calls given back with their results, never apart."""

from __future__ import annotations

from domain.chat.context import UNFINISHED_RESULT, assistant_messages, build_context, refusal
from domain.chat.conversation import ConversationState, MessageState
from domain.chat.events import ToolCallRecord
from domain.llm.messages import AssistantMessage, SystemMessage, ToolCall, ToolResultMessage, UserMessage
from domain.shared.ids import new_id


def _msg(role: str, content: str, status: str = "completed", position: int = 0) -> MessageState:
    return MessageState(message_id=new_id(), role=role, position=position, content=content, status=status)  # type: ignore[arg-type]


def test_the_context_drops_failed_turns_and_the_oldest_turns_first() -> None:
    history = [
        _msg("user", "a" * 400),
        _msg("assistant", "b" * 400),
        _msg("user", "broken"),
        _msg("assistant", "", "failed"),
        _msg("user", "c" * 40),
        _msg("assistant", "d" * 40, "interrupted"),
        _msg("user", "now"),
    ]
    running = _msg("assistant", "", "streaming")
    state = ConversationState(status="running", system_prompt="sys", messages=[*history, running])
    full = build_context(state, answering=running.message_id, context_window=None, max_output_tokens=None)
    assert full == [
        SystemMessage(content="sys"),
        UserMessage.text("a" * 400),
        AssistantMessage(content="b" * 400),
        UserMessage.text("c" * 40),
        AssistantMessage(content="d" * 40),
        UserMessage.text("now"),
    ]
    # ~100 tokens each for the first turn's messages: a small window drops that turn first.
    small = build_context(state, answering=running.message_id, context_window=150, max_output_tokens=100)
    assert small == [
        SystemMessage(content="sys"),
        UserMessage.text("c" * 40),
        AssistantMessage(content="d" * 40),
        UserMessage.text("now"),
    ]
    # The latest turn always stays, however small the window.
    tiny = build_context(state, answering=running.message_id, context_window=10, max_output_tokens=10)
    assert tiny == [SystemMessage(content="sys"), UserMessage.text("now")]


def _call(
    call_id: str, offset: int, status: str = "completed", result: str | None = "r", **extra: object
) -> ToolCallRecord:
    return ToolCallRecord(
        tool_call_id=call_id,
        name="srv__echo",
        status=status,  # type: ignore[arg-type]
        arguments={"text": call_id},
        offset=offset,
        result=result,
        **extra,  # type: ignore[arg-type]
    )


def test_an_answer_with_tool_calls_is_given_back_round_by_round_with_every_result() -> None:
    text = "Let me look.Found it."
    calls = [_call("a", 12), _call("b", 12, result="boom", is_error=True), _call("c", 12 + len("Found it."))]
    assert assistant_messages(text, calls) == [
        AssistantMessage(
            content="Let me look.",
            tool_calls=[ToolCall("a", "srv__echo", {"text": "a"}), ToolCall("b", "srv__echo", {"text": "b"})],
        ),
        ToolResultMessage(tool_call_id="a", content="r"),
        ToolResultMessage(tool_call_id="b", content="boom", is_error=True),
        AssistantMessage(content="Found it.", tool_calls=[ToolCall("c", "srv__echo", {"text": "c"})]),
        ToolResultMessage(tool_call_id="c", content="r"),
    ]
    assert assistant_messages("Done.", [_call("a", 0)])[-1] == AssistantMessage(content="Done.")


def test_denied_and_unfinished_calls_still_get_a_result() -> None:
    denied = _call("d", 0, status="denied", result=None, decided_by="user:1", reason="no")
    timed_out = _call("t", 0, status="denied", result=None, decided_by="system")
    pending = _call("p", 0, status="awaiting_approval", result=None)
    out = assistant_messages("", [denied, timed_out, pending])
    assert out[1:] == [
        ToolResultMessage(tool_call_id="d", content="The tool call was denied by the user: no", is_error=True),
        ToolResultMessage(tool_call_id="t", content=refusal("system", None), is_error=True),
        ToolResultMessage(tool_call_id="p", content=UNFINISHED_RESULT, is_error=True),
    ]
    assert "system" in refusal("system", None)


def test_a_turn_of_only_tool_calls_is_kept_and_counted_in_the_window() -> None:
    calls = [_call("a", 0, result="x" * 4000)]
    first = MessageState(
        message_id=new_id(), role="assistant", position=1, content="", status="interrupted", tool_calls=calls
    )
    history = [_msg("user", "q1"), first, _msg("user", "q2")]
    running = _msg("assistant", "", "streaming")
    state = ConversationState(status="running", messages=[*history, running])
    full = build_context(state, answering=running.message_id, context_window=None, max_output_tokens=None)
    assert full == [
        UserMessage.text("q1"),
        AssistantMessage(content="", tool_calls=[ToolCall("a", "srv__echo", {"text": "a"})]),
        ToolResultMessage(tool_call_id="a", content="x" * 4000),
        UserMessage.text("q2"),
    ]
    # The tool result's ~1,000 tokens count: a window of 500 drops that whole turn, never half of it.
    small = build_context(state, answering=running.message_id, context_window=500, max_output_tokens=100)
    assert small == [UserMessage.text("q2")]
