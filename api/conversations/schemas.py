"""Request and response bodies of /api/v1/conversations. Length limits are the domain's
(``domain.chat.conversation``), so they appear in OpenAPI and fail as 400 with a JSON Pointer."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from api.pagination import Page
from domain.chat.limits import MCP_SERVERS_MAX, SYSTEM_PROMPT_MAX, TITLE_MAX

Title = Annotated[str, Meta(max_length=TITLE_MAX, description="Display title; blank means none.")]
SystemPrompt = Annotated[str, Meta(max_length=SYSTEM_PROMPT_MAX, description="Instructions sent before the history.")]


class ConversationTools(msgspec.Struct, kw_only=True):
    """The MCP servers the model may use here, and whether each tool call waits for approval
    (``manual``). The server's own policy still applies: the stricter of the two wins."""

    mcp_server_ids: Annotated[list[uuid.UUID], Meta(max_length=MCP_SERVERS_MAX)] = msgspec.field(default_factory=list)
    approval: Literal["auto", "manual"] = "auto"


class Conversation(msgspec.Struct, kw_only=True):
    """A conversation. ``version`` grows with every event of the conversation and is the ETag.
    ``status``: ``created`` (no messages yet), ``active``, ``running`` (an assistant turn is under
    way), ``archived``."""

    id: uuid.UUID
    object: Literal["conversation"] = "conversation"
    title: str | None
    system_prompt: str | None
    model_id: uuid.UUID | None
    tools: ConversationTools
    status: str
    owner_id: uuid.UUID
    parent_conversation_id: uuid.UUID | None
    forked_from_message_id: uuid.UUID | None
    last_message_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime


class ConversationCreate(msgspec.Struct, kw_only=True):
    """``model_id`` defaults to the tenant's default chat model."""

    model_id: uuid.UUID | None = None
    title: Title | None = None
    system_prompt: SystemPrompt | None = None
    tools: ConversationTools | None = None


class ConversationUpdate(msgspec.Struct, kw_only=True):
    """Only the fields present change; ``title``/``system_prompt`` null clears them."""

    title: Title | UnsetType | None = UNSET
    system_prompt: SystemPrompt | UnsetType | None = UNSET
    model_id: uuid.UUID | UnsetType = UNSET
    tools: ConversationTools | UnsetType = UNSET


class ConversationList(Page[Conversation], kw_only=True):
    """A page of conversations, newest first."""

    data: list[Conversation]  # restated: Litestar's schema generation loses a subclassed generic's parameter


class MessageUsage(msgspec.Struct, kw_only=True):
    input_tokens: int = 0
    output_tokens: int = 0
    cost: str | None = None


class MessageError(msgspec.Struct, kw_only=True):
    code: str
    detail: str | None = None


class MessageToolCall(msgspec.Struct, kw_only=True):
    """A tool call an assistant message made. ``offset``: characters of the message's ``content``
    written before the call (show the call there). ``status``: ``requested`` (running),
    ``awaiting_approval`` (see ``approval_id``), ``approved``, ``denied`` (``result`` holds the
    refusal the model saw, ``decided_by`` who denied), ``completed``."""

    tool_call_id: str
    name: str
    arguments: dict[str, Any]
    status: str
    offset: int = 0
    approval: str = "auto"
    approval_id: uuid.UUID | None = None
    result: str | None = None
    is_error: bool = False
    decided_by: str | None = None
    reason: str | None = None


class Message(msgspec.Struct, kw_only=True):
    """A message of the current branch. ``status``: ``streaming``, ``completed``, ``failed``,
    ``interrupted`` (cancelled or cut off; ``content`` keeps the partial text)."""

    id: uuid.UUID
    object: Literal["message"] = "message"
    conversation_id: uuid.UUID
    position: int
    role: str
    content: str
    status: str
    run_id: uuid.UUID | None
    model_id: uuid.UUID | None
    usage: MessageUsage | None
    error: MessageError | None
    finish_reason: str | None
    created_at: datetime
    updated_at: datetime
    tool_calls: list[MessageToolCall] = msgspec.field(default_factory=list)


class MessageList(Page[Message], kw_only=True):
    """A page of the current branch's messages, oldest first."""

    data: list[Message]


class ConversationEvent(msgspec.Struct, kw_only=True):
    """One domain event of a conversation (its history): ``type`` is the stable event type id."""

    id: uuid.UUID
    object: Literal["conversation_event"] = "conversation_event"
    type: str
    version: int
    actor: str | None
    request_id: str | None
    data: dict[str, Any]
    created_at: datetime


class ConversationEventList(Page[ConversationEvent], kw_only=True):
    """A page of a conversation's events, oldest first."""

    data: list[ConversationEvent]
