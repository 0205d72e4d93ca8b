"""The conversation aggregate: every transition and every rejection, given events / when command.
Creation, missing/deleted, archive, delete, title and settings here; turns and tool calls in
test_conversation_turns.py; truncate, edit, regenerate, fork and snapshots in
test_conversation_branching.py (both use the helpers below)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

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
    TurnNotActive,
)
from domain.chat.events import (
    ConversationArchivedEvent,
    ConversationCreated,
    ConversationDeleted,
    ConversationRestored,
    SettingsChanged,
    TitleChanged,
    ToolSettings,
    ToolSettingsChanged,
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
