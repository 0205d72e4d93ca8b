"""The conversation aggregate, branches: truncate, edit, regenerate and fork, every rejection; and
snapshots of its state."""

from __future__ import annotations

import msgspec
import pytest

from domain.chat import branching as br
from domain.chat import conversation as c
from domain.chat import turns as t
from domain.chat.errors import (
    ConversationArchived,
    ConversationBusy,
    InvalidConversation,
    MessageNotFinished,
    MessageNotFound,
)
from domain.chat.events import (
    AssistantMessageStarted,
    ConversationTruncated,
    UserMessagePosted,
)
from domain.shared.events import Event
from domain.shared.ids import new_id
from tests.unit.test_conversation_aggregate import (
    CID,
    OWNER,
    TENANT,
    active,
    apply,
    archived,
    exchange,
    fresh,
    given,
    running,
)
from tests.unit.test_conversation_turns import with_call

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
