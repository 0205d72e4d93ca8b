"""The conversation aggregate (pure): its state, ``evolve`` over its events, and one ``decide``
function per command that returns the events to append or raises the command's rejection.

States: ``created`` (no messages yet) -> ``active`` <-> ``running`` (an assistant turn is under way)
-> ``archived`` (read-only until restored), and ``deleted``. Rejections, checked in this order:
unknown or deleted -> ``conversation_not_found``; archived -> ``conversation_archived`` (except
restore and delete); running -> ``conversation_busy`` for everything that would change the history
or the settings the running turn uses (the title may change while a turn runs). Turn-progress
commands (checkpoint, complete, fail, interrupt) are idempotent for a turn that already ended, so a
late or repeated report from a runner or the reaper appends nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

from domain.chat.errors import (
    ConversationArchived,
    ConversationBusy,
    ConversationExists,
    ConversationNotArchived,
    ConversationNotFound,
)
from domain.chat.events import (
    AssistantMessageCheckpointed,
    AssistantMessageCompleted,
    AssistantMessageFailed,
    AssistantMessageInterrupted,
    AssistantMessageStarted,
    ConversationArchivedEvent,
    ConversationCreated,
    ConversationDeleted,
    ConversationForked,
    ConversationRestored,
    ConversationTruncated,
    MessageStatus,
    Role,
    SettingsChanged,
    TitleChanged,
    TokenUsage,
    ToolCallApproved,
    ToolCallCompleted,
    ToolCallDenied,
    ToolCallRecord,
    ToolCallRequested,
    ToolCallStatus,
    ToolSettings,
    ToolSettingsChanged,
    UserMessagePosted,
    requested_record,
)
from domain.chat.limits import SYSTEM_PROMPT_MAX, check_text, clean_title, clean_tools
from domain.shared.aggregate import Aggregate
from domain.shared.events import Event

Status = Literal["none", "created", "active", "running", "archived", "deleted"]
InterruptReason = Literal["cancelled", "lease_expired"]


class MessageState(msgspec.Struct, frozen=True, kw_only=True):
    message_id: uuid.UUID
    role: Role
    position: int
    content: str
    status: MessageStatus
    run_id: uuid.UUID | None = None
    model_id: uuid.UUID | None = None
    usage: TokenUsage | None = None
    tool_calls: list[ToolCallRecord] = msgspec.field(default_factory=list)
    """The tool calls the message made, in order (kept when the turn ends)."""


class ToolCallState(ToolCallRecord, frozen=True, kw_only=True):
    """A tool call of the running turn: its record and the message making it."""

    message_id: uuid.UUID


def as_record(call: ToolCallState) -> ToolCallRecord:
    return ToolCallRecord(**{f: getattr(call, f) for f in ToolCallRecord.__struct_fields__})


class ConversationState(msgspec.Struct, frozen=True, kw_only=True):
    conversation_id: uuid.UUID | None = None
    tenant_id: uuid.UUID | None = None
    owner_id: uuid.UUID | None = None
    status: Status = "none"
    title: str | None = None
    system_prompt: str | None = None
    model_id: uuid.UUID | None = None
    tools: ToolSettings = msgspec.field(default_factory=ToolSettings)
    parent_conversation_id: uuid.UUID | None = None
    forked_from_message_id: uuid.UUID | None = None
    messages: list[MessageState] = msgspec.field(default_factory=list)
    """The current branch, in order."""
    running_message_id: uuid.UUID | None = None
    running_run_id: uuid.UUID | None = None
    tool_calls: dict[str, ToolCallState] = msgspec.field(default_factory=dict)
    """Tool calls of the running turn (cleared when the turn ends)."""

    def message(self, message_id: uuid.UUID) -> MessageState | None:
        return next((m for m in self.messages if m.message_id == message_id), None)

    @property
    def next_position(self) -> int:
        return self.messages[-1].position + 1 if self.messages else 0


# -- evolve ---------------------------------------------------------------------------------------


def _settled(state: ConversationState, messages: list[MessageState]) -> Status:
    return "active" if messages else "created"


def _end_turn(
    state: ConversationState,
    message_id: uuid.UUID,
    status: MessageStatus,
    content: str,
    usage: TokenUsage | None,
) -> ConversationState:
    calls = [as_record(c) for c in state.tool_calls.values() if c.message_id == message_id]
    messages = [
        msgspec.structs.replace(
            m,
            status=status,
            content=content,
            usage=usage if usage is not None else m.usage,
            tool_calls=calls or m.tool_calls,
        )
        if m.message_id == message_id
        else m
        for m in state.messages
    ]
    return msgspec.structs.replace(
        state,
        messages=messages,
        status=_settled(state, messages) if state.status == "running" else state.status,
        running_message_id=None,
        running_run_id=None,
        tool_calls={},
    )


def _set_tool_call(
    state: ConversationState, tool_call_id: str, status: ToolCallStatus, **changes: object
) -> ConversationState:
    calls = dict(state.tool_calls)
    current = calls.get(tool_call_id)
    if current is not None:
        calls[tool_call_id] = msgspec.structs.replace(current, status=status, **changes)
    return msgspec.structs.replace(state, tool_calls=calls)


def evolve(state: ConversationState, event: Event) -> ConversationState:
    """The state after ``event``; events of other kinds leave it unchanged."""
    replace = msgspec.structs.replace
    match event:
        case ConversationCreated():
            return ConversationState(
                conversation_id=event.conversation_id,
                tenant_id=event.tenant_id,
                owner_id=event.owner_id,
                status="created",
                title=event.title,
                system_prompt=event.system_prompt,
                model_id=event.model_id,
                tools=event.tools,
            )
        case ConversationForked():
            messages = [
                MessageState(
                    message_id=m.message_id,
                    role=m.role,
                    position=i,
                    content=m.content,
                    status=m.status,
                    model_id=m.model_id,
                    usage=m.usage,
                    tool_calls=m.tool_calls,
                )
                for i, m in enumerate(event.messages)
            ]
            return ConversationState(
                conversation_id=event.conversation_id,
                tenant_id=event.tenant_id,
                owner_id=event.owner_id,
                status="active" if messages else "created",
                title=event.title,
                system_prompt=event.system_prompt,
                model_id=event.model_id,
                tools=event.tools,
                parent_conversation_id=event.parent_conversation_id,
                forked_from_message_id=event.forked_from_message_id,
                messages=messages,
            )
        case TitleChanged():
            return replace(state, title=event.title)
        case SettingsChanged():
            return replace(state, system_prompt=event.system_prompt, model_id=event.model_id)
        case ToolSettingsChanged():
            return replace(state, tools=event.tools)
        case UserMessagePosted():
            message = MessageState(
                message_id=event.message_id,
                role="user",
                position=event.position,
                content=event.content,
                status="completed",
            )
            return replace(state, messages=[*state.messages, message], status="active")
        case AssistantMessageStarted():
            message = MessageState(
                message_id=event.message_id,
                role="assistant",
                position=event.position,
                content="",
                status="streaming",
                run_id=event.run_id,
                model_id=event.model_id,
            )
            return replace(
                state,
                messages=[*state.messages, message],
                status="running",
                running_message_id=event.message_id,
                running_run_id=event.run_id,
                tool_calls={},
            )
        case AssistantMessageCheckpointed():
            return replace(
                state,
                messages=[
                    replace(m, content=event.content) if m.message_id == event.message_id else m for m in state.messages
                ],
            )
        case AssistantMessageCompleted():
            return _end_turn(state, event.message_id, "completed", event.content, event.usage)
        case AssistantMessageFailed():
            return _end_turn(state, event.message_id, "failed", event.content, event.usage)
        case AssistantMessageInterrupted():
            return _end_turn(state, event.message_id, "interrupted", event.content, event.usage)
        case ToolCallRequested():
            calls = dict(state.tool_calls)
            record = requested_record(event)
            calls[event.tool_call_id] = ToolCallState(message_id=event.message_id, **msgspec.structs.asdict(record))
            return replace(state, tool_calls=calls)
        case ToolCallApproved():
            return _set_tool_call(
                state, event.tool_call_id, "approved", decided_by=event.decided_by, reason=event.reason
            )
        case ToolCallDenied():
            return _set_tool_call(state, event.tool_call_id, "denied", decided_by=event.decided_by, reason=event.reason)
        case ToolCallCompleted():
            return _set_tool_call(state, event.tool_call_id, "completed", result=event.result, is_error=event.is_error)
        case ConversationTruncated():
            removed = set(event.removed_message_ids)
            messages = [m for m in state.messages if m.message_id not in removed]
            return replace(state, messages=messages, status=_settled(state, messages))
        case ConversationArchivedEvent():
            return replace(state, status="archived")
        case ConversationRestored():
            return replace(state, status=_settled(state, state.messages))
        case ConversationDeleted():
            return replace(state, status="deleted")
    return state


CONVERSATION: Aggregate[ConversationState] = Aggregate(
    name="conversation", state_type=ConversationState, initial=ConversationState, evolve=evolve
)


def fold(events: Sequence[Event], state: ConversationState | None = None) -> ConversationState:
    return CONVERSATION.fold(state if state is not None else ConversationState(), events)


# -- guards ---------------------------------------------------------------------------------------


def require_exists(state: ConversationState) -> None:
    if state.status in ("none", "deleted"):
        raise ConversationNotFound()


def require_writable(state: ConversationState, *, while_running: bool = False) -> None:
    require_exists(state)
    if state.status == "archived":
        raise ConversationArchived()
    if state.status == "running" and not while_running:
        raise ConversationBusy()


def conversation_id_of(state: ConversationState) -> uuid.UUID:
    assert state.conversation_id is not None
    return state.conversation_id


# -- lifecycle and settings -----------------------------------------------------------------------


def create(
    state: ConversationState,
    *,
    conversation_id: uuid.UUID,
    tenant_id: uuid.UUID,
    owner_id: uuid.UUID,
    title: str | None = None,
    system_prompt: str | None = None,
    model_id: uuid.UUID | None = None,
    tools: ToolSettings | None = None,
) -> list[Event]:
    if state.status != "none":
        raise ConversationExists()
    return [
        ConversationCreated(
            conversation_id=conversation_id,
            tenant_id=tenant_id,
            owner_id=owner_id,
            title=clean_title(title),
            system_prompt=check_text(system_prompt, "/system_prompt", max_len=SYSTEM_PROMPT_MAX),
            model_id=model_id,
            tools=clean_tools(tools if tools is not None else ToolSettings()),
        )
    ]


def change_title(state: ConversationState, title: str | None, *, generated: bool = False) -> list[Event]:
    """Allowed while a turn runs (the title is not part of what the turn uses)."""
    require_writable(state, while_running=True)
    clean = clean_title(title)
    if clean == state.title:
        return []
    return [TitleChanged(conversation_id=conversation_id_of(state), title=clean, generated=generated)]


def change_settings(
    state: ConversationState,
    *,
    system_prompt: str | UnsetType | None = UNSET,
    model_id: uuid.UUID | UnsetType | None = UNSET,
) -> list[Event]:
    """Change the system prompt and/or model (UNSET: keep). Rejected while a turn runs."""
    require_writable(state)
    changed: list[str] = []
    prompt, model = state.system_prompt, state.model_id
    if not isinstance(system_prompt, UnsetType):
        check_text(system_prompt, "/system_prompt", max_len=SYSTEM_PROMPT_MAX)
        if system_prompt != prompt:
            changed.append("system_prompt")
            prompt = system_prompt
    if not isinstance(model_id, UnsetType) and model_id != model:
        changed.append("model_id")
        model = model_id
    if not changed:
        return []
    return [
        SettingsChanged(
            conversation_id=conversation_id_of(state), changed=changed, system_prompt=prompt, model_id=model
        )
    ]


def change_tools(state: ConversationState, tools: ToolSettings) -> list[Event]:
    """Rejected while a turn runs: the running turn keeps the approval mode it started with."""
    require_writable(state)
    clean = clean_tools(tools)
    if clean == state.tools:
        return []
    return [ToolSettingsChanged(conversation_id=conversation_id_of(state), tools=clean)]


def archive(state: ConversationState) -> list[Event]:
    require_writable(state)
    return [ConversationArchivedEvent(conversation_id=conversation_id_of(state))]


def restore(state: ConversationState) -> list[Event]:
    require_exists(state)
    if state.status != "archived":
        raise ConversationNotArchived()
    return [ConversationRestored(conversation_id=conversation_id_of(state))]


def delete(state: ConversationState) -> list[Event]:
    """Allowed on an archived conversation; rejected while a turn runs (cancel it first)."""
    require_exists(state)
    if state.status == "running":
        raise ConversationBusy()
    return [ConversationDeleted(conversation_id=conversation_id_of(state))]
