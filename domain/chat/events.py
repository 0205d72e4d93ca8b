"""Events of a conversation, one stream per conversation (``conversation-<uuid>``).

Every event carries ``conversation_id`` so projections and the audit trail can read it alone.
Message content is stored in the events (it is the conversation); secrets never are.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import msgspec

from domain.shared.events import Event, event_type

Approval = Literal["auto", "manual"]
Role = Literal["user", "assistant"]
MessageStatus = Literal["streaming", "completed", "failed", "interrupted"]
ToolCallStatus = Literal["requested", "awaiting_approval", "approved", "denied", "completed"]


def stream_id(conversation_id: uuid.UUID) -> str:
    return f"conversation-{conversation_id}"


STREAM_PREFIX = "conversation-"


class ToolSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Which MCP servers the model may use, and whether every call needs a person's approval."""

    mcp_server_ids: list[uuid.UUID] = msgspec.field(default_factory=list)
    approval: Approval = "auto"


class TokenUsage(msgspec.Struct, frozen=True, kw_only=True):
    """Tokens and cost of one assistant message (cost as a decimal string, currency per pricing)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost: str | None = None


class ToolCallRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One tool call of an assistant message, as the conversation keeps it.

    ``offset``: how many characters of the message's text the model had written when it made the
    call (calls of one model round share it), so the text and the calls interleave exactly as they
    happened. ``result`` is the tool's output (or the refusal of a denied call)."""

    tool_call_id: str
    name: str
    status: ToolCallStatus
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)
    offset: int = 0
    approval: Approval = "auto"
    approval_id: uuid.UUID | None = None
    result: str | None = None
    is_error: bool = False
    decided_by: str | None = None
    reason: str | None = None


class ForkedMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A message copied into a fork, under a new id; ``source_message_id`` is the id it had."""

    message_id: uuid.UUID
    source_message_id: uuid.UUID
    role: Role
    content: str
    status: MessageStatus = "completed"
    model_id: uuid.UUID | None = None
    usage: TokenUsage | None = None
    tool_calls: list[ToolCallRecord] = msgspec.field(default_factory=list)


@event_type("chat.conversation_created.v1")
class ConversationCreated(Event, frozen=True, kw_only=True):
    conversation_id: uuid.UUID
    tenant_id: uuid.UUID
    owner_id: uuid.UUID
    title: str | None
    system_prompt: str | None
    model_id: uuid.UUID | None
    tools: ToolSettings


@event_type("chat.conversation_forked.v1")
class ConversationForked(Event, frozen=True, kw_only=True):
    """The first event of a fork's stream: the source's settings and its history up to the fork point."""

    conversation_id: uuid.UUID
    tenant_id: uuid.UUID
    owner_id: uuid.UUID
    parent_conversation_id: uuid.UUID
    forked_from_message_id: uuid.UUID
    title: str | None
    system_prompt: str | None
    model_id: uuid.UUID | None
    tools: ToolSettings
    messages: list[ForkedMessage]


@event_type("chat.title_changed.v1")
class TitleChanged(Event, frozen=True, kw_only=True):
    conversation_id: uuid.UUID
    title: str | None
    generated: bool = False
    """True when the model wrote the title after the first exchange."""
    changed: list[str] = msgspec.field(default_factory=lambda: ["title"])


@event_type("chat.settings_changed.v1")
class SettingsChanged(Event, frozen=True, kw_only=True):
    """System prompt and/or model after the change; ``changed`` names what changed."""

    conversation_id: uuid.UUID
    changed: list[str]
    system_prompt: str | None
    model_id: uuid.UUID | None


@event_type("chat.tool_settings_changed.v1")
class ToolSettingsChanged(Event, frozen=True, kw_only=True):
    conversation_id: uuid.UUID
    tools: ToolSettings
    changed: list[str] = msgspec.field(default_factory=lambda: ["tools"])


@event_type("chat.user_message_posted.v1")
class UserMessagePosted(Event, frozen=True, kw_only=True):
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    position: int
    content: str


@event_type("chat.assistant_message_started.v1")
class AssistantMessageStarted(Event, frozen=True, kw_only=True):
    """An assistant turn began as run ``run_id``; the conversation is running until it ends."""

    conversation_id: uuid.UUID
    message_id: uuid.UUID
    position: int
    run_id: uuid.UUID
    model_id: uuid.UUID | None


@event_type("chat.assistant_message_checkpointed.v1")
class AssistantMessageCheckpointed(Event, frozen=True, kw_only=True):
    """The partial text so far (the whole text, not a delta), stored every few seconds."""

    conversation_id: uuid.UUID
    message_id: uuid.UUID
    content: str


@event_type("chat.assistant_message_completed.v1")
class AssistantMessageCompleted(Event, frozen=True, kw_only=True):
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    content: str
    usage: TokenUsage | None = None
    finish_reason: str | None = None


@event_type("chat.assistant_message_failed.v1")
class AssistantMessageFailed(Event, frozen=True, kw_only=True):
    """The turn failed; ``content`` keeps the partial text, ``error_code`` the problem code."""

    conversation_id: uuid.UUID
    message_id: uuid.UUID
    content: str
    error_code: str
    error_detail: str | None = None
    usage: TokenUsage | None = None


@event_type("chat.assistant_message_interrupted.v1")
class AssistantMessageInterrupted(Event, frozen=True, kw_only=True):
    """The turn stopped early (cancelled, or its run's lease expired); the partial text is kept."""

    conversation_id: uuid.UUID
    message_id: uuid.UUID
    content: str
    reason: Literal["cancelled", "lease_expired"]
    usage: TokenUsage | None = None


@event_type("chat.tool_call_requested.v1")
class ToolCallRequested(Event, frozen=True, kw_only=True):
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    tool_call_id: str
    name: str
    arguments: dict[str, Any]
    approval: Approval
    """``manual``: the call waits for an approval decision before it runs."""
    approval_id: uuid.UUID | None = None
    """The approval resource a ``manual`` call waits on (``/runs/{run_id}/approvals/{id}``)."""
    offset: int = 0
    """Characters of the message's text written before the call (see ``ToolCallRecord``)."""


def requested_record(event: ToolCallRequested) -> ToolCallRecord:
    """The call as recorded when the model made it (waiting for approval if ``manual``)."""
    return ToolCallRecord(
        tool_call_id=event.tool_call_id,
        name=event.name,
        status="awaiting_approval" if event.approval == "manual" else "requested",
        arguments=event.arguments,
        offset=event.offset,
        approval=event.approval,
        approval_id=event.approval_id,
    )


@event_type("chat.tool_call_approved.v1")
class ToolCallApproved(Event, frozen=True, kw_only=True):
    conversation_id: uuid.UUID
    tool_call_id: str
    decided_by: str
    reason: str | None = None
    message_id: uuid.UUID | None = None


@event_type("chat.tool_call_denied.v1")
class ToolCallDenied(Event, frozen=True, kw_only=True):
    """Denied by a person, or by the system (``decided_by`` = ``system``: the approval timed out,
    or the turn reached its limit of tool rounds)."""

    conversation_id: uuid.UUID
    tool_call_id: str
    decided_by: str
    reason: str | None = None
    message_id: uuid.UUID | None = None


@event_type("chat.tool_call_completed.v1")
class ToolCallCompleted(Event, frozen=True, kw_only=True):
    conversation_id: uuid.UUID
    tool_call_id: str
    result: str
    is_error: bool = False
    message_id: uuid.UUID | None = None
    status: str | None = None
    """The gateway's outcome (``ok``, ``error``, ``invalid_arguments``, ``timeout``, ...)."""


@event_type("chat.conversation_truncated.v1")
class ConversationTruncated(Event, frozen=True, kw_only=True):
    """Messages after ``after_message_id`` (all of them when None) left the current branch."""

    conversation_id: uuid.UUID
    after_message_id: uuid.UUID | None
    removed_message_ids: list[uuid.UUID]


@event_type("chat.conversation_archived.v1")
class ConversationArchivedEvent(Event, frozen=True, kw_only=True):
    conversation_id: uuid.UUID


@event_type("chat.conversation_restored.v1")
class ConversationRestored(Event, frozen=True, kw_only=True):
    conversation_id: uuid.UUID


@event_type("chat.conversation_deleted.v1")
class ConversationDeleted(Event, frozen=True, kw_only=True):
    conversation_id: uuid.UUID


ConversationEvent = (
    ConversationCreated
    | ConversationForked
    | TitleChanged
    | SettingsChanged
    | ToolSettingsChanged
    | UserMessagePosted
    | AssistantMessageStarted
    | AssistantMessageCheckpointed
    | AssistantMessageCompleted
    | AssistantMessageFailed
    | AssistantMessageInterrupted
    | ToolCallRequested
    | ToolCallApproved
    | ToolCallDenied
    | ToolCallCompleted
    | ConversationTruncated
    | ConversationArchivedEvent
    | ConversationRestored
    | ConversationDeleted
)
