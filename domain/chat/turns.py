"""The seam for assistant turns: how a user message and the assistant run answering it are recorded.

A turn is recorded in the conversation's stream around a run (``infra.runs``):

1. ``POST /conversations/{id}/messages`` decides ``post_message`` -> ``UserMessagePosted`` +
   ``AssistantMessageStarted(run_id)`` in the same write transaction that inserts the run row
   (status ``queued``), so a conversation is ``running`` exactly while its turn's run is live and a
   second post is rejected with ``conversation_busy``. ``edit`` and ``regenerate`` truncate the branch
   first and start a turn the same way; ``start_turn`` answers the branch as it is.
2. The run's work streams the model's output into the run's Redis event log (deltas never touch
   PostgreSQL) and every few seconds decides ``checkpoint`` with the whole text so far.
3. Tool calls: ``request_tool_call`` (approval ``manual`` waits on an approval id for
   ``decide_approval`` -> ``approve_tool_call`` / ``deny_tool_call``; the timeout denies as
   ``system``), then ``complete_tool_call`` with the result.
4. The run's end decides exactly one of ``complete``, ``fail`` (problem code) or ``interrupt``
   (``cancelled`` by ``POST /runs/{id}/cancel``, ``lease_expired`` by the reaper's
   ``on_interrupted`` hook); ``content=None`` keeps the last checkpoint. These reports are no-ops
   once the turn has ended, so the runner and the reaper may race safely.

Every function here is pure: state in, events out, or a rejection from ``domain.chat.errors``.
Writers in infra append the events with ``infra.chat.commands.append`` inside their transaction, which
also brings the read model up to date (and the projection runner catches up whatever it missed).
"""

from __future__ import annotations

import uuid
from typing import Any

from domain.chat.branching import truncation
from domain.chat.conversation import (
    ConversationState,
    InterruptReason,
    MessageState,
    ToolCallState,
    conversation_id_of,
    require_exists,
    require_writable,
)
from domain.chat.errors import (
    ConversationArchived,
    InvalidConversation,
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
    TokenUsage,
    ToolCallApproved,
    ToolCallCompleted,
    ToolCallDenied,
    ToolCallRequested,
    UserMessagePosted,
)
from domain.chat.limits import CONTENT_MAX, TOOL_NAME_MAX, check_text
from domain.shared.events import Event


def _start(
    state: ConversationState, message_id: uuid.UUID, run_id: uuid.UUID, position: int
) -> AssistantMessageStarted:
    return AssistantMessageStarted(
        conversation_id=conversation_id_of(state),
        message_id=message_id,
        position=position,
        run_id=run_id,
        model_id=state.model_id,
    )


def post_message(
    state: ConversationState,
    *,
    message_id: uuid.UUID,
    content: str,
    run_id: uuid.UUID,
    assistant_message_id: uuid.UUID,
) -> list[Event]:
    """Store a user message and start the assistant turn that answers it (as run ``run_id``)."""
    require_writable(state)
    check_text(content, "/content", max_len=CONTENT_MAX, required=True)
    position = state.next_position
    return [
        UserMessagePosted(
            conversation_id=conversation_id_of(state), message_id=message_id, position=position, content=content
        ),
        _start(state, assistant_message_id, run_id, position + 1),
    ]


def start_turn(state: ConversationState, *, run_id: uuid.UUID, message_id: uuid.UUID) -> list[Event]:
    """Start an assistant turn answering the branch as it is; its last message must be the user's."""
    require_writable(state)
    if not state.messages or state.messages[-1].role != "user":
        raise NothingToAnswer()
    return [_start(state, message_id, run_id, state.next_position)]


def regenerate(
    state: ConversationState, *, message_id: uuid.UUID, run_id: uuid.UUID, new_message_id: uuid.UUID
) -> list[Event]:
    """Replace assistant message ``message_id`` (and everything after it) with a new turn."""
    require_writable(state)
    target = state.message(message_id)
    if target is None or target.role != "assistant":
        raise MessageNotFound()
    index = state.messages.index(target)
    previous = state.messages[index - 1] if index > 0 else None
    if previous is None or previous.role != "user":
        raise NothingToAnswer()
    cut = truncation(state, previous)
    assert cut is not None
    return [cut, _start(state, new_message_id, run_id, previous.position + 1)]


def edit(
    state: ConversationState,
    *,
    message_id: uuid.UUID,
    content: str,
    new_message_id: uuid.UUID,
    run_id: uuid.UUID,
    assistant_message_id: uuid.UUID,
) -> list[Event]:
    """Replace user message ``message_id`` with ``content`` (dropping it and everything after it)
    and start a turn answering the new text."""
    require_writable(state)
    target = state.message(message_id)
    if target is None or target.role != "user":
        raise MessageNotFound()
    check_text(content, "/content", max_len=CONTENT_MAX, required=True)
    index = state.messages.index(target)
    previous = state.messages[index - 1] if index > 0 else None
    cut = truncation(state, previous)
    assert cut is not None
    position = target.position
    return [
        cut,
        UserMessagePosted(
            conversation_id=conversation_id_of(state), message_id=new_message_id, position=position, content=content
        ),
        _start(state, assistant_message_id, run_id, position + 1),
    ]


# -- turn progress (reported by the run executing the turn, or by the reaper) ---------------------


def _turn(state: ConversationState, message_id: uuid.UUID) -> MessageState | None:
    """The running message, or None when that turn already ended (the report is then a no-op)."""
    require_exists(state)
    message = state.message(message_id)
    if state.status == "running" and state.running_message_id == message_id and message is not None:
        return message
    if message is not None and message.role == "assistant" and message.status != "streaming":
        return None
    raise TurnNotActive()


def checkpoint(state: ConversationState, *, message_id: uuid.UUID, content: str) -> list[Event]:
    message = _turn(state, message_id)
    if message is None or message.content == content:
        return []
    return [
        AssistantMessageCheckpointed(conversation_id=conversation_id_of(state), message_id=message_id, content=content)
    ]


def complete(
    state: ConversationState,
    *,
    message_id: uuid.UUID,
    content: str,
    usage: TokenUsage | None = None,
    finish_reason: str | None = None,
) -> list[Event]:
    if _turn(state, message_id) is None:
        return []
    return [
        AssistantMessageCompleted(
            conversation_id=conversation_id_of(state),
            message_id=message_id,
            content=content,
            usage=usage,
            finish_reason=finish_reason,
        )
    ]


def fail(
    state: ConversationState,
    *,
    message_id: uuid.UUID,
    error_code: str,
    error_detail: str | None = None,
    content: str | None = None,
    usage: TokenUsage | None = None,
) -> list[Event]:
    """End the turn as failed; ``content`` None keeps the last checkpointed text."""
    message = _turn(state, message_id)
    if message is None:
        return []
    return [
        AssistantMessageFailed(
            conversation_id=conversation_id_of(state),
            message_id=message_id,
            content=message.content if content is None else content,
            error_code=error_code,
            error_detail=error_detail,
            usage=usage,
        )
    ]


def interrupt(
    state: ConversationState,
    *,
    message_id: uuid.UUID,
    reason: InterruptReason,
    content: str | None = None,
    usage: TokenUsage | None = None,
) -> list[Event]:
    """End the turn early (cancel, or the reaper after a lost lease); ``content`` None keeps the
    last checkpointed text, so a crash loses at most what came after it."""
    message = _turn(state, message_id)
    if message is None:
        return []
    return [
        AssistantMessageInterrupted(
            conversation_id=conversation_id_of(state),
            message_id=message_id,
            content=message.content if content is None else content,
            reason=reason,
            usage=usage,
        )
    ]


def _running_call(state: ConversationState, tool_call_id: str) -> ToolCallState:
    require_exists(state)
    if state.status == "archived":
        raise ConversationArchived()
    call = state.tool_calls.get(tool_call_id) if state.status == "running" else None
    if call is None:
        raise ToolCallNotFound()
    return call


def request_tool_call(
    state: ConversationState,
    *,
    message_id: uuid.UUID,
    tool_call_id: str,
    name: str,
    arguments: dict[str, Any],
    approval: Approval,
    approval_id: uuid.UUID | None = None,
    offset: int = 0,
) -> list[Event]:
    """Record the model's call of tool ``name``; ``manual`` approval makes it wait for a decision
    on approval ``approval_id``. Repeating a known ``tool_call_id`` appends nothing."""
    require_exists(state)
    if state.status == "archived":
        raise ConversationArchived()
    if _turn(state, message_id) is None:
        raise TurnNotActive()
    if tool_call_id in state.tool_calls:
        return []
    if not tool_call_id or len(tool_call_id) > TOOL_NAME_MAX:
        raise InvalidConversation("/tool_call_id", "Must be 1 to 200 characters")
    check_text(name, "/name", max_len=TOOL_NAME_MAX, required=True)
    if (approval == "manual") != (approval_id is not None):
        raise InvalidConversation("/approval_id", "A manual approval needs an approval id, and only it")
    return [
        ToolCallRequested(
            conversation_id=conversation_id_of(state),
            message_id=message_id,
            tool_call_id=tool_call_id,
            name=name,
            arguments=arguments,
            approval=approval,
            approval_id=approval_id,
            offset=offset,
        )
    ]


def approval_call(state: ConversationState, approval_id: uuid.UUID) -> ToolCallState:
    """The running turn's call waiting on (or decided by) approval ``approval_id``."""
    require_exists(state)
    for call in state.tool_calls.values() if state.status == "running" else ():
        if call.approval_id == approval_id:
            return call
    raise ToolCallNotFound()


def decide_approval(
    state: ConversationState, *, approval_id: uuid.UUID, approve: bool, decided_by: str, reason: str | None = None
) -> list[Event]:
    """A person's (or the timeout's) decision on a pending approval; a decided one is
    ``tool_call_not_pending``."""
    if state.status == "archived":
        raise ConversationArchived()
    call = approval_call(state, approval_id)
    decide = approve_tool_call if approve else deny_tool_call
    return decide(state, tool_call_id=call.tool_call_id, decided_by=decided_by, reason=reason)


def approve_tool_call(
    state: ConversationState, *, tool_call_id: str, decided_by: str, reason: str | None = None
) -> list[Event]:
    call = _running_call(state, tool_call_id)
    if call.status != "awaiting_approval":
        raise ToolCallNotPending()
    return [
        ToolCallApproved(
            conversation_id=conversation_id_of(state),
            tool_call_id=tool_call_id,
            decided_by=decided_by,
            reason=reason,
            message_id=call.message_id,
        )
    ]


def deny_tool_call(
    state: ConversationState,
    *,
    tool_call_id: str,
    decided_by: str,
    reason: str | None = None,
    pending_only: bool = True,
) -> list[Event]:
    """Deny a call waiting for approval; with ``pending_only=False`` (the system ending a turn at
    its limit of tool rounds) also a call that needed none."""
    call = _running_call(state, tool_call_id)
    allowed = ("awaiting_approval",) if pending_only else ("awaiting_approval", "requested")
    if call.status not in allowed:
        raise ToolCallNotPending()
    return [
        ToolCallDenied(
            conversation_id=conversation_id_of(state),
            tool_call_id=tool_call_id,
            decided_by=decided_by,
            reason=reason,
            message_id=call.message_id,
        )
    ]


def complete_tool_call(
    state: ConversationState, *, tool_call_id: str, result: str, is_error: bool = False, status: str | None = None
) -> list[Event]:
    """Store a tool's result; only a call that may run (no approval needed, or approved) has one.
    Completing a completed call again appends nothing."""
    call = _running_call(state, tool_call_id)
    if call.status == "completed":
        return []
    if call.status not in ("requested", "approved"):
        raise ToolCallNotPending()
    return [
        ToolCallCompleted(
            conversation_id=conversation_id_of(state),
            tool_call_id=tool_call_id,
            result=result,
            is_error=is_error,
            message_id=call.message_id,
            status=status,
        )
    ]
