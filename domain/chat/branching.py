"""Branching a conversation (pure): truncating its current branch (edit and regenerate start from
there) and forking it at a message into a new conversation with fresh message ids and lineage."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from domain.chat.conversation import (
    ConversationState,
    MessageState,
    conversation_id_of,
    require_writable,
)
from domain.chat.errors import MessageNotFinished, MessageNotFound
from domain.chat.events import ConversationForked, ConversationTruncated, ForkedMessage
from domain.shared.events import Event


def fork(
    source: ConversationState,
    *,
    conversation_id: uuid.UUID,
    owner_id: uuid.UUID,
    at_message_id: uuid.UUID,
    new_id: Callable[[], uuid.UUID],
) -> ConversationForked:
    """The first event of a new conversation holding ``source``'s branch up to ``at_message_id``
    (inclusive) under fresh message ids. Allowed while the source runs, but not at the message
    still being written."""
    require_writable(source, while_running=True)
    at = source.message(at_message_id)
    if at is None:
        raise MessageNotFound()
    if at.status == "streaming":
        raise MessageNotFinished()
    assert source.tenant_id is not None
    copied = [
        ForkedMessage(
            message_id=new_id(),
            source_message_id=m.message_id,
            role=m.role,
            content=m.content,
            status=m.status,
            model_id=m.model_id,
            usage=m.usage,
            tool_calls=m.tool_calls,
        )
        for m in source.messages
        if m.position <= at.position
    ]
    return ConversationForked(
        conversation_id=conversation_id,
        tenant_id=source.tenant_id,
        owner_id=owner_id,
        parent_conversation_id=conversation_id_of(source),
        forked_from_message_id=at_message_id,
        title=source.title,
        system_prompt=source.system_prompt,
        model_id=source.model_id,
        tools=source.tools,
        messages=copied,
    )


def truncation(state: ConversationState, after: MessageState | None) -> ConversationTruncated | None:
    cut = -1 if after is None else after.position
    removed = [m.message_id for m in state.messages if m.position > cut]
    if not removed:
        return None
    return ConversationTruncated(
        conversation_id=conversation_id_of(state),
        after_message_id=None if after is None else after.message_id,
        removed_message_ids=removed,
    )


def truncate(state: ConversationState, after_message_id: uuid.UUID | None) -> list[Event]:
    """Drop every message after ``after_message_id`` (all of them when None) from the branch."""
    require_writable(state)
    after = None
    if after_message_id is not None:
        after = state.message(after_message_id)
        if after is None:
            raise MessageNotFound()
    event = truncation(state, after)
    return [] if event is None else [event]
