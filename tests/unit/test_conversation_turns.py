"""The conversation aggregate, turns: posting, starting, checkpointing, completing, failing and
interrupting a turn, and the tool calls inside it (auto, approved, denied), every rejection."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from domain.chat import conversation as c
from domain.chat import limits
from domain.chat import turns as t
from domain.chat.errors import (
    ConversationBusy,
    InvalidConversation,
    NothingToAnswer,
    ToolCallNotFound,
    ToolCallNotPending,
    TurnNotActive,
)
from domain.chat.events import (
    Approval,
    AssistantMessageCheckpointed,
    AssistantMessageCompleted,
    AssistantMessageFailed,
    AssistantMessageInterrupted,
    AssistantMessageStarted,
    TokenUsage,
    ToolCallApproved,
    ToolCallCompleted,
    ToolCallDenied,
    ToolCallRequested,
    UserMessagePosted,
)
from domain.shared.events import Event
from domain.shared.ids import new_id
from tests.unit.test_conversation_aggregate import (
    CID,
    MODEL,
    active,
    apply,
    created,
    exchange,
    fresh,
    given,
    posted,
    running,
)

# -- posting and turns ----------------------------------------------------------------------------


def test_posting_stores_the_user_message_and_starts_the_turn() -> None:
    run, user, assistant = new_id(), new_id(), new_id()
    events = t.post_message(fresh(), message_id=user, content="Hi", run_id=run, assistant_message_id=assistant)
    assert events == [
        UserMessagePosted(conversation_id=CID, message_id=user, position=0, content="Hi"),
        AssistantMessageStarted(conversation_id=CID, message_id=assistant, position=1, run_id=run, model_id=MODEL),
    ]
    state = apply(fresh(), events)
    assert state.status == "running"
    assert state.running_message_id == assistant
    assert state.running_run_id == run
    assert [(m.role, m.status, m.position) for m in state.messages] == [
        ("user", "completed", 0),
        ("assistant", "streaming", 1),
    ]


def test_posting_while_a_turn_runs_is_busy() -> None:
    state, _ = running()
    with pytest.raises(ConversationBusy) as err:
        t.post_message(state, message_id=new_id(), content="x", run_id=new_id(), assistant_message_id=new_id())
    assert err.value.code == "conversation_busy"


@pytest.mark.parametrize("content", ["", "   ", "a\x00", "x" * (limits.CONTENT_MAX + 1)])
def test_posting_validates_the_content(content: str) -> None:
    with pytest.raises(InvalidConversation) as err:
        t.post_message(fresh(), message_id=new_id(), content=content, run_id=new_id(), assistant_message_id=new_id())
    assert err.value.pointer == "/content"


def test_user_message_alone_makes_the_conversation_active() -> None:
    state = given(created(), UserMessagePosted(conversation_id=CID, message_id=new_id(), position=0, content="x"))
    assert state.status == "active"


def test_positions_continue_after_each_exchange() -> None:
    state = exchange(exchange(fresh()))
    assert [m.position for m in state.messages] == [0, 1, 2, 3]
    assert state.next_position == 4


def test_start_turn_needs_a_user_message_last() -> None:
    with pytest.raises(NothingToAnswer):
        t.start_turn(fresh(), run_id=new_id(), message_id=new_id())
    with pytest.raises(NothingToAnswer):
        t.start_turn(active(), run_id=new_id(), message_id=new_id())
    state = given(created(), UserMessagePosted(conversation_id=CID, message_id=new_id(), position=0, content="x"))
    (event,) = t.start_turn(state, run_id=new_id(), message_id=new_id())
    assert isinstance(event, AssistantMessageStarted)
    assert event.position == 1
    assert apply(state, [event]).status == "running"


def test_start_turn_while_running_is_busy() -> None:
    with pytest.raises(ConversationBusy):
        t.start_turn(running()[0], run_id=new_id(), message_id=new_id())


def test_checkpoint_stores_the_partial_text_and_skips_repeats() -> None:
    state, assistant = running()
    events = t.checkpoint(state, message_id=assistant, content="par")
    assert events == [AssistantMessageCheckpointed(conversation_id=CID, message_id=assistant, content="par")]
    state = apply(state, events)
    assert state.message(assistant) is not None
    assert state.message(assistant).content == "par"  # type: ignore[union-attr]
    assert state.status == "running"
    assert t.checkpoint(state, message_id=assistant, content="par") == []


def test_complete_ends_the_turn_with_usage() -> None:
    state, assistant = running()
    usage = TokenUsage(input_tokens=3, output_tokens=5, cost="0.001")
    events = t.complete(state, message_id=assistant, content="done", usage=usage, finish_reason="stop")
    assert isinstance(events[0], AssistantMessageCompleted)
    after = apply(state, events)
    assert after.status == "active"
    assert after.running_message_id is None
    assert after.running_run_id is None
    message = after.message(assistant)
    assert message is not None
    assert (message.status, message.content, message.usage) == ("completed", "done", usage)


def test_fail_keeps_the_checkpointed_text_unless_given() -> None:
    state, assistant = running()
    state = apply(state, t.checkpoint(state, message_id=assistant, content="half"))
    (event,) = t.fail(state, message_id=assistant, error_code="provider_error", error_detail="boom")
    assert isinstance(event, AssistantMessageFailed)
    assert event.content == "half"
    after = apply(state, [event])
    assert after.status == "active"
    assert after.message(assistant).status == "failed"  # type: ignore[union-attr]
    (explicit,) = t.fail(state, message_id=assistant, error_code="x", content="half more")
    assert isinstance(explicit, AssistantMessageFailed)
    assert explicit.content == "half more"


@pytest.mark.parametrize("reason", ["cancelled", "lease_expired"])
def test_interrupt_keeps_the_partial_text(reason: c.InterruptReason) -> None:
    state, assistant = running()
    state = apply(state, t.checkpoint(state, message_id=assistant, content="so far"))
    (event,) = t.interrupt(state, message_id=assistant, reason=reason)
    assert isinstance(event, AssistantMessageInterrupted)
    assert (event.content, event.reason) == ("so far", reason)
    after = apply(state, [event])
    assert after.status == "active"
    message = after.message(assistant)
    assert message is not None
    assert (message.status, message.content) == ("interrupted", "so far")


TERMINAL: dict[str, Callable[[c.ConversationState, uuid.UUID], list[Event]]] = {
    "complete": lambda s, m: t.complete(s, message_id=m, content="x"),
    "fail": lambda s, m: t.fail(s, message_id=m, error_code="e"),
    "interrupt": lambda s, m: t.interrupt(s, message_id=m, reason="lease_expired"),
    "checkpoint": lambda s, m: t.checkpoint(s, message_id=m, content="late"),
}


@pytest.mark.parametrize("first", ["complete", "fail", "interrupt"])
@pytest.mark.parametrize("then", sorted(TERMINAL))
def test_reports_after_the_turn_ended_append_nothing(first: str, then: str) -> None:
    state, assistant = running()
    state = apply(state, TERMINAL[first](state, assistant))
    before = state
    assert TERMINAL[then](state, assistant) == []
    assert state == before


@pytest.mark.parametrize("report", sorted(TERMINAL))
def test_reports_for_an_unknown_or_user_message_are_turn_not_active(report: str) -> None:
    state, _ = running()
    with pytest.raises(TurnNotActive):
        TERMINAL[report](state, new_id())
    with pytest.raises(TurnNotActive):
        TERMINAL[report](state, state.messages[0].message_id)
    with pytest.raises(TurnNotActive):
        TERMINAL[report](active(), new_id())


def test_a_new_turn_after_an_interrupted_one_is_allowed() -> None:
    state, assistant = running()
    state = apply(state, t.interrupt(state, message_id=assistant, reason="cancelled"))
    state, _, second = posted(state, "retry")
    assert state.status == "running"
    assert state.running_message_id == second


# -- tool calls -----------------------------------------------------------------------------------


APPROVAL = uuid.UUID(int=77)


def with_call(approval: Approval) -> tuple[c.ConversationState, uuid.UUID]:
    state, assistant = running()
    events = t.request_tool_call(
        state,
        message_id=assistant,
        tool_call_id="call_1",
        name="srv__echo",
        arguments={"x": 1},
        approval=approval,
        approval_id=APPROVAL if approval == "manual" else None,
    )
    assert isinstance(events[0], ToolCallRequested)
    return apply(state, events), assistant


def test_an_auto_tool_call_runs_without_approval() -> None:
    state, _ = with_call("auto")
    assert state.tool_calls["call_1"].status == "requested"
    events = t.complete_tool_call(state, tool_call_id="call_1", result="1")
    assert events == [
        ToolCallCompleted(conversation_id=CID, tool_call_id="call_1", result="1", message_id=state.running_message_id)
    ]
    state = apply(state, events)
    assert state.tool_calls["call_1"].status == "completed"
    assert t.complete_tool_call(state, tool_call_id="call_1", result="1") == []


def test_an_auto_tool_call_cannot_be_approved_or_denied() -> None:
    state, _ = with_call("auto")
    with pytest.raises(ToolCallNotPending):
        t.approve_tool_call(state, tool_call_id="call_1", decided_by="user:a")
    with pytest.raises(ToolCallNotPending):
        t.deny_tool_call(state, tool_call_id="call_1", decided_by="user:a")


def test_a_manual_tool_call_waits_for_approval_then_completes() -> None:
    state, _ = with_call("manual")
    assert state.tool_calls["call_1"].status == "awaiting_approval"
    with pytest.raises(ToolCallNotPending):
        t.complete_tool_call(state, tool_call_id="call_1", result="early")
    events = t.approve_tool_call(state, tool_call_id="call_1", decided_by="user:a", reason="ok")
    assert isinstance(events[0], ToolCallApproved)
    state = apply(state, events)
    assert state.tool_calls["call_1"].status == "approved"
    with pytest.raises(ToolCallNotPending):
        t.approve_tool_call(state, tool_call_id="call_1", decided_by="user:a")
    with pytest.raises(ToolCallNotPending):
        t.deny_tool_call(state, tool_call_id="call_1", decided_by="user:a")
    state = apply(state, t.complete_tool_call(state, tool_call_id="call_1", result="ran"))
    assert state.tool_calls["call_1"].status == "completed"


def test_a_denied_tool_call_never_completes() -> None:
    state, _ = with_call("manual")
    events = t.deny_tool_call(state, tool_call_id="call_1", decided_by="system", reason="timeout")
    assert isinstance(events[0], ToolCallDenied)
    state = apply(state, events)
    assert state.tool_calls["call_1"].status == "denied"
    with pytest.raises(ToolCallNotPending):
        t.complete_tool_call(state, tool_call_id="call_1", result="r")
    with pytest.raises(ToolCallNotPending):
        t.approve_tool_call(state, tool_call_id="call_1", decided_by="user:a")


def test_repeating_a_tool_call_request_appends_nothing() -> None:
    state, assistant = with_call("auto")
    again = t.request_tool_call(
        state, message_id=assistant, tool_call_id="call_1", name="srv__echo", arguments={"x": 1}, approval="auto"
    )
    assert again == []


def test_tool_calls_need_the_running_turn() -> None:
    with pytest.raises(TurnNotActive):
        t.request_tool_call(active(), message_id=new_id(), tool_call_id="c", name="n", arguments={}, approval="auto")
    state, assistant = running()
    state = apply(state, t.complete(state, message_id=assistant, content="x"))
    with pytest.raises(TurnNotActive):
        t.request_tool_call(state, message_id=assistant, tool_call_id="c", name="n", arguments={}, approval="auto")


def test_unknown_tool_calls_are_not_found() -> None:
    state, _ = with_call("manual")
    with pytest.raises(ToolCallNotFound):
        t.approve_tool_call(state, tool_call_id="nope", decided_by="user:a")
    with pytest.raises(ToolCallNotFound):
        t.complete_tool_call(active(), tool_call_id="call_1", result="r")


def test_tool_calls_are_forgotten_when_the_turn_ends() -> None:
    state, assistant = with_call("manual")
    state = apply(state, t.complete(state, message_id=assistant, content="x"))
    assert state.tool_calls == {}
    with pytest.raises(ToolCallNotFound):
        t.approve_tool_call(state, tool_call_id="call_1", decided_by="user:a")


def test_tool_call_request_validates_the_name_and_id() -> None:
    state, assistant = running()
    with pytest.raises(InvalidConversation):
        t.request_tool_call(state, message_id=assistant, tool_call_id="", name="n", arguments={}, approval="auto")
    with pytest.raises(InvalidConversation):
        t.request_tool_call(state, message_id=assistant, tool_call_id="c", name=" ", arguments={}, approval="auto")
