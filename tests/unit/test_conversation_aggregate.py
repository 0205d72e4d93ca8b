"""The conversation aggregate: every transition and every rejection, given events / when command."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from domain.chat import branching as br
from domain.chat import conversation as c
from domain.chat import limits
from domain.chat import turns as t
from domain.chat.errors import (
    ConversationArchived,
    ConversationBusy,
    ConversationExists,
    ConversationNotArchived,
    ConversationNotFound,
    InvalidConversation,
    MessageNotFinished,
    MessageNotFound,
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
    ConversationArchivedEvent,
    ConversationCreated,
    ConversationDeleted,
    ConversationRestored,
    ConversationTruncated,
    SettingsChanged,
    TitleChanged,
    TokenUsage,
    ToolCallApproved,
    ToolCallCompleted,
    ToolCallDenied,
    ToolCallRequested,
    ToolSettings,
    ToolSettingsChanged,
    UserMessagePosted,
)
from domain.shared.events import Event
from domain.shared.ids import new_id

CID = uuid.UUID("01900000-0000-7000-8000-000000000001")
TENANT = uuid.UUID("01900000-0000-7000-8000-0000000000aa")
OWNER = uuid.UUID("01900000-0000-7000-8000-0000000000bb")
MODEL = uuid.UUID("01900000-0000-7000-8000-0000000000cc")


def created(**overrides: Any) -> ConversationCreated:
    fields: dict[str, Any] = {
        "conversation_id": CID,
        "tenant_id": TENANT,
        "owner_id": OWNER,
        "title": "Hello",
        "system_prompt": None,
        "model_id": MODEL,
        "tools": ToolSettings(),
    }
    fields.update(overrides)
    return ConversationCreated(**fields)


def given(*events: Event) -> c.ConversationState:
    return c.fold(list(events))


def apply(state: c.ConversationState, events: list[Event]) -> c.ConversationState:
    return c.fold(events, state)


def posted(state: c.ConversationState, content: str = "hi") -> tuple[c.ConversationState, uuid.UUID, uuid.UUID]:
    """Post a user message; return the running state, the user and assistant message ids."""
    user, assistant = new_id(), new_id()
    events = t.post_message(state, message_id=user, content=content, run_id=new_id(), assistant_message_id=assistant)
    return apply(state, events), user, assistant


def exchange(state: c.ConversationState, text: str = "hi", answer: str = "hello") -> c.ConversationState:
    state, _, assistant = posted(state, text)
    return apply(state, t.complete(state, message_id=assistant, content=answer))


def fresh() -> c.ConversationState:
    return given(created())


def active() -> c.ConversationState:
    return exchange(fresh())


def running() -> tuple[c.ConversationState, uuid.UUID]:
    state, _, assistant = posted(active(), "again")
    return state, assistant


def archived() -> c.ConversationState:
    state = active()
    return apply(state, c.archive(state))


def deleted() -> c.ConversationState:
    state = active()
    return apply(state, c.delete(state))


# -- creation -------------------------------------------------------------------------------------


def test_create_starts_in_created_with_the_given_settings() -> None:
    events = c.create(
        c.ConversationState(),
        conversation_id=CID,
        tenant_id=TENANT,
        owner_id=OWNER,
        title="  Plans  ",
        system_prompt="Be brief",
        model_id=MODEL,
        tools=ToolSettings(mcp_server_ids=[MODEL, MODEL, OWNER], approval="manual"),
    )
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, ConversationCreated)
    assert event.title == "Plans"
    assert event.tools.mcp_server_ids == [MODEL, OWNER]
    state = given(*events)
    assert state.status == "created"
    assert (state.title, state.system_prompt, state.model_id) == ("Plans", "Be brief", MODEL)
    assert state.tools.approval == "manual"
    assert state.messages == []


def test_create_with_a_blank_title_has_no_title() -> None:
    (event,) = c.create(c.ConversationState(), conversation_id=CID, tenant_id=TENANT, owner_id=OWNER, title="   ")
    assert isinstance(event, ConversationCreated)
    assert event.title is None
    assert event.model_id is None


def test_create_twice_is_rejected() -> None:
    with pytest.raises(ConversationExists):
        c.create(fresh(), conversation_id=CID, tenant_id=TENANT, owner_id=OWNER)


@pytest.mark.parametrize(
    ("kwargs", "pointer"),
    [
        ({"title": "x" * (limits.TITLE_MAX + 1)}, "/title"),
        ({"title": "a\x00b"}, "/title"),
        ({"system_prompt": "x" * (limits.SYSTEM_PROMPT_MAX + 1)}, "/system_prompt"),
        (
            {"tools": ToolSettings(mcp_server_ids=[new_id() for _ in range(limits.MCP_SERVERS_MAX + 1)])},
            "/tools/mcp_server_ids",
        ),
    ],
)
def test_create_validates_fields(kwargs: dict[str, Any], pointer: str) -> None:
    with pytest.raises(InvalidConversation) as err:
        c.create(c.ConversationState(), conversation_id=CID, tenant_id=TENANT, owner_id=OWNER, **kwargs)
    assert err.value.pointer == pointer


# -- commands on a missing or deleted conversation ------------------------------------------------

ANY_COMMAND: dict[str, Callable[[c.ConversationState], object]] = {
    "change_title": lambda s: c.change_title(s, "t"),
    "change_settings": lambda s: c.change_settings(s, system_prompt="p"),
    "change_tools": lambda s: c.change_tools(s, ToolSettings(approval="manual")),
    "archive": c.archive,
    "restore": c.restore,
    "delete": c.delete,
    "truncate": lambda s: br.truncate(s, None),
    "post_message": lambda s: t.post_message(
        s, message_id=new_id(), content="x", run_id=new_id(), assistant_message_id=new_id()
    ),
    "start_turn": lambda s: t.start_turn(s, run_id=new_id(), message_id=new_id()),
    "regenerate": lambda s: t.regenerate(s, message_id=new_id(), run_id=new_id(), new_message_id=new_id()),
    "edit": lambda s: t.edit(
        s, message_id=new_id(), content="x", new_message_id=new_id(), run_id=new_id(), assistant_message_id=new_id()
    ),
    "fork": lambda s: br.fork(s, conversation_id=new_id(), owner_id=OWNER, at_message_id=new_id(), new_id=new_id),
    "checkpoint": lambda s: t.checkpoint(s, message_id=new_id(), content="x"),
    "complete": lambda s: t.complete(s, message_id=new_id(), content="x"),
    "fail": lambda s: t.fail(s, message_id=new_id(), error_code="e"),
    "interrupt": lambda s: t.interrupt(s, message_id=new_id(), reason="cancelled"),
    "request_tool_call": lambda s: t.request_tool_call(
        s, message_id=new_id(), tool_call_id="t", name="n", arguments={}, approval="auto"
    ),
    "approve_tool_call": lambda s: t.approve_tool_call(s, tool_call_id="t", decided_by="user:x"),
    "deny_tool_call": lambda s: t.deny_tool_call(s, tool_call_id="t", decided_by="user:x"),
    "complete_tool_call": lambda s: t.complete_tool_call(s, tool_call_id="t", result="r"),
}


@pytest.mark.parametrize("command", sorted(ANY_COMMAND))
@pytest.mark.parametrize("state_name", ["none", "deleted"])
def test_every_command_on_a_missing_or_deleted_conversation_is_not_found(command: str, state_name: str) -> None:
    state = c.ConversationState() if state_name == "none" else deleted()
    with pytest.raises(ConversationNotFound):
        ANY_COMMAND[command](state)


# -- archived -------------------------------------------------------------------------------------

ARCHIVED_REJECTS = sorted(set(ANY_COMMAND) - {"restore", "delete"} - {"checkpoint", "complete", "fail", "interrupt"})


@pytest.mark.parametrize("command", ARCHIVED_REJECTS)
def test_every_change_on_an_archived_conversation_is_conversation_archived(command: str) -> None:
    with pytest.raises(ConversationArchived) as err:
        ANY_COMMAND[command](archived())
    assert err.value.code == "conversation_archived"


@pytest.mark.parametrize("command", ["checkpoint", "complete", "fail", "interrupt"])
def test_turn_reports_on_an_archived_conversation_name_no_running_turn(command: str) -> None:
    # An archived conversation has no running turn (archiving a running one is refused).
    with pytest.raises(TurnNotActive):
        ANY_COMMAND[command](archived())


def test_archive_from_created_and_active_then_restore_returns_to_the_same_state() -> None:
    for state in (fresh(), active()):
        before = state.status
        after = apply(state, c.archive(state))
        assert after.status == "archived"
        restored = apply(after, c.restore(after))
        assert restored.status == before
        assert isinstance(c.restore(after)[0], ConversationRestored)


def test_archive_while_running_is_busy() -> None:
    state, _ = running()
    with pytest.raises(ConversationBusy) as err:
        c.archive(state)
    assert err.value.code == "conversation_busy"


@pytest.mark.parametrize("factory", [fresh, active])
def test_restore_of_a_conversation_that_is_not_archived_is_a_conflict(
    factory: Callable[[], c.ConversationState],
) -> None:
    with pytest.raises(ConversationNotArchived):
        c.restore(factory())


def test_restore_while_running_is_not_archived() -> None:
    with pytest.raises(ConversationNotArchived):
        c.restore(running()[0])


def test_an_archived_conversation_keeps_its_messages() -> None:
    state = archived()
    assert [m.role for m in state.messages] == ["user", "assistant"]
    assert isinstance(c.archive(active())[0], ConversationArchivedEvent)


# -- delete ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", [fresh, active, archived])
def test_delete_is_allowed_when_no_turn_runs(factory: Callable[[], c.ConversationState]) -> None:
    state = factory()
    events = c.delete(state)
    assert isinstance(events[0], ConversationDeleted)
    assert apply(state, events).status == "deleted"


def test_delete_while_running_is_busy() -> None:
    with pytest.raises(ConversationBusy):
        c.delete(running()[0])


# -- title and settings ---------------------------------------------------------------------------


def test_title_changes_in_created_active_and_running() -> None:
    for state in (fresh(), active(), running()[0]):
        events = c.change_title(state, " New ")
        assert events == [TitleChanged(conversation_id=CID, title="New")]
        assert apply(state, events).title == "New"
        assert apply(state, events).status == state.status


def test_title_unchanged_appends_nothing_and_generated_is_recorded() -> None:
    assert c.change_title(fresh(), "Hello") == []
    (event,) = c.change_title(fresh(), "Auto", generated=True)
    assert isinstance(event, TitleChanged)
    assert event.generated is True
    assert event.changed == ["title"]


def test_title_can_be_cleared_and_is_validated() -> None:
    assert apply(fresh(), c.change_title(fresh(), None)).title is None
    with pytest.raises(InvalidConversation):
        c.change_title(fresh(), "x" * (limits.TITLE_MAX + 1))


def test_settings_change_lists_what_changed() -> None:
    other = new_id()
    (event,) = c.change_settings(fresh(), system_prompt="Be kind", model_id=other)
    assert isinstance(event, SettingsChanged)
    assert event.changed == ["system_prompt", "model_id"]
    state = apply(fresh(), [event])
    assert (state.system_prompt, state.model_id) == ("Be kind", other)
    (only_prompt,) = c.change_settings(state, system_prompt=None)
    assert isinstance(only_prompt, SettingsChanged)
    assert only_prompt.changed == ["system_prompt"]
    assert only_prompt.model_id == other


def test_settings_unchanged_or_unset_append_nothing() -> None:
    assert c.change_settings(fresh()) == []
    assert c.change_settings(fresh(), model_id=MODEL, system_prompt=None) == []


def test_settings_and_tools_cannot_change_while_a_turn_runs() -> None:
    state, _ = running()
    with pytest.raises(ConversationBusy):
        c.change_settings(state, system_prompt="x")
    with pytest.raises(ConversationBusy):
        c.change_tools(state, ToolSettings(approval="manual"))


def test_settings_validate_the_system_prompt() -> None:
    with pytest.raises(InvalidConversation) as err:
        c.change_settings(fresh(), system_prompt="\x00")
    assert err.value.pointer == "/system_prompt"


def test_tool_settings_change_and_dedupe() -> None:
    server = new_id()
    events = c.change_tools(active(), ToolSettings(mcp_server_ids=[server, server], approval="manual"))
    assert events == [
        ToolSettingsChanged(conversation_id=CID, tools=ToolSettings(mcp_server_ids=[server], approval="manual"))
    ]
    state = apply(active(), events)
    assert state.tools.approval == "manual"
    assert c.change_tools(state, ToolSettings(mcp_server_ids=[server], approval="manual")) == []


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


# -- truncate, edit, regenerate -------------------------------------------------------------------


def test_truncate_after_a_message_drops_the_rest() -> None:
    state = exchange(active(), "second", "answer two")
    keep = state.messages[1].message_id
    (event,) = br.truncate(state, keep)
    assert isinstance(event, ConversationTruncated)
    assert event.removed_message_ids == [m.message_id for m in state.messages[2:]]
    after = apply(state, [event])
    assert [m.content for m in after.messages] == ["hi", "hello"]
    assert after.status == "active"
    assert after.next_position == 2


def test_truncate_everything_returns_to_created_and_last_message_is_a_no_op() -> None:
    state = active()
    after = apply(state, br.truncate(state, None))
    assert after.messages == []
    assert after.status == "created"
    assert br.truncate(state, state.messages[-1].message_id) == []
    assert br.truncate(fresh(), None) == []


def test_truncate_rejections() -> None:
    with pytest.raises(MessageNotFound):
        br.truncate(active(), new_id())
    with pytest.raises(ConversationBusy):
        br.truncate(running()[0], None)


def test_truncated_messages_are_gone_from_the_branch_for_later_commands() -> None:
    state = active()
    gone = state.messages[1].message_id
    state = apply(state, br.truncate(state, state.messages[0].message_id))
    with pytest.raises(MessageNotFound):
        br.truncate(state, gone)


def test_regenerate_replaces_an_assistant_message_with_a_new_turn() -> None:
    state = exchange(active(), "second", "answer two")
    old = state.messages[3]
    run, new = new_id(), new_id()
    events = t.regenerate(state, message_id=old.message_id, run_id=run, new_message_id=new)
    assert isinstance(events[0], ConversationTruncated)
    assert events[0].removed_message_ids == [old.message_id]
    assert isinstance(events[1], AssistantMessageStarted)
    assert events[1].position == old.position
    after = apply(state, events)
    assert after.status == "running"
    assert after.running_message_id == new
    assert [m.role for m in after.messages] == ["user", "assistant", "user", "assistant"]


def test_regenerate_of_an_earlier_answer_drops_what_followed() -> None:
    state = exchange(active(), "second", "answer two")
    events = t.regenerate(state, message_id=state.messages[1].message_id, run_id=new_id(), new_message_id=new_id())
    truncated = events[0]
    assert isinstance(truncated, ConversationTruncated)
    assert len(truncated.removed_message_ids) == 3
    assert len(apply(state, events).messages) == 2


def test_regenerate_rejections() -> None:
    state = active()
    with pytest.raises(MessageNotFound):
        t.regenerate(state, message_id=state.messages[0].message_id, run_id=new_id(), new_message_id=new_id())
    with pytest.raises(MessageNotFound):
        t.regenerate(state, message_id=new_id(), run_id=new_id(), new_message_id=new_id())
    busy, _ = running()
    with pytest.raises(ConversationBusy):
        t.regenerate(busy, message_id=busy.messages[1].message_id, run_id=new_id(), new_message_id=new_id())


def test_edit_replaces_a_user_message_and_starts_a_turn() -> None:
    state = exchange(active(), "second", "answer two")
    target = state.messages[2]
    new_user, run, assistant = new_id(), new_id(), new_id()
    events = t.edit(
        state,
        message_id=target.message_id,
        content="changed",
        new_message_id=new_user,
        run_id=run,
        assistant_message_id=assistant,
    )
    truncated, user, started = events
    assert isinstance(truncated, ConversationTruncated)
    assert truncated.after_message_id == state.messages[1].message_id
    assert truncated.removed_message_ids == [target.message_id, state.messages[3].message_id]
    assert user == UserMessagePosted(conversation_id=CID, message_id=new_user, position=2, content="changed")
    assert isinstance(started, AssistantMessageStarted)
    assert started.position == 3
    after = apply(state, events)
    assert [m.content for m in after.messages] == ["hi", "hello", "changed", ""]
    assert after.status == "running"


def test_edit_of_the_first_message_drops_the_whole_branch() -> None:
    state = active()
    events = t.edit(
        state,
        message_id=state.messages[0].message_id,
        content="new start",
        new_message_id=new_id(),
        run_id=new_id(),
        assistant_message_id=new_id(),
    )
    truncated = events[0]
    assert isinstance(truncated, ConversationTruncated)
    assert truncated.after_message_id is None
    assert [m.content for m in apply(state, events).messages] == ["new start", ""]


def test_edit_rejections() -> None:
    state = active()
    with pytest.raises(MessageNotFound):
        t.edit(
            state,
            message_id=state.messages[1].message_id,
            content="x",
            new_message_id=new_id(),
            run_id=new_id(),
            assistant_message_id=new_id(),
        )
    with pytest.raises(InvalidConversation):
        t.edit(
            state,
            message_id=state.messages[0].message_id,
            content=" ",
            new_message_id=new_id(),
            run_id=new_id(),
            assistant_message_id=new_id(),
        )
    busy, _ = running()
    with pytest.raises(ConversationBusy):
        t.edit(
            busy,
            message_id=busy.messages[0].message_id,
            content="x",
            new_message_id=new_id(),
            run_id=new_id(),
            assistant_message_id=new_id(),
        )


# -- fork -----------------------------------------------------------------------------------------


def test_fork_copies_the_branch_up_to_the_message_under_new_ids() -> None:
    source = exchange(active(), "second", "answer two")
    at = source.messages[1]
    other_owner, new_cid = new_id(), new_id()
    event = br.fork(source, conversation_id=new_cid, owner_id=other_owner, at_message_id=at.message_id, new_id=new_id)
    assert event.parent_conversation_id == CID
    assert event.forked_from_message_id == at.message_id
    assert event.owner_id == other_owner
    assert event.tenant_id == TENANT
    assert [m.source_message_id for m in event.messages] == [m.message_id for m in source.messages[:2]]
    assert not {m.message_id for m in event.messages} & {m.message_id for m in source.messages}
    fork = given(event)
    assert fork.conversation_id == new_cid
    assert fork.status == "active"
    assert [m.content for m in fork.messages] == ["hi", "hello"]
    assert (fork.title, fork.model_id, fork.tools) == (source.title, source.model_id, source.tools)
    assert fork.parent_conversation_id == CID


def test_fork_while_running_copies_finished_messages_but_not_the_streaming_one() -> None:
    source, assistant = running()
    event = br.fork(
        source, conversation_id=new_id(), owner_id=OWNER, at_message_id=source.messages[2].message_id, new_id=new_id
    )
    assert len(event.messages) == 3
    with pytest.raises(MessageNotFinished):
        br.fork(source, conversation_id=new_id(), owner_id=OWNER, at_message_id=assistant, new_id=new_id)


def test_fork_rejections() -> None:
    with pytest.raises(MessageNotFound):
        br.fork(active(), conversation_id=new_id(), owner_id=OWNER, at_message_id=new_id(), new_id=new_id)
    state = archived()
    with pytest.raises(ConversationArchived):
        br.fork(
            state, conversation_id=new_id(), owner_id=OWNER, at_message_id=state.messages[0].message_id, new_id=new_id
        )


def test_a_fork_is_a_conversation_like_any_other() -> None:
    source = active()
    fork = given(
        br.fork(
            source, conversation_id=new_id(), owner_id=OWNER, at_message_id=source.messages[0].message_id, new_id=new_id
        )
    )
    (started,) = t.start_turn(fork, run_id=new_id(), message_id=new_id())
    assert isinstance(started, AssistantMessageStarted)
    assert started.position == 1


# -- snapshots ------------------------------------------------------------------------------------


def test_state_round_trips_through_a_snapshot_encoding() -> None:
    state, _ = with_call("manual")
    decoded = msgspec.json.decode(msgspec.json.encode(state), type=c.ConversationState)
    assert decoded == state


def test_unrelated_events_leave_the_state_unchanged() -> None:
    class Other(Event, frozen=True, kw_only=True):
        x: int = 0

    state = active()
    assert c.evolve(state, Other()) == state
