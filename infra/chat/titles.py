"""Conversation titles written by the model: after the first exchange of a conversation without a
title, the turn's model is asked (its stream folded) for a short title; a failure is logged and
ignored, and the caller never overwrites a title the user set (before or meanwhile)."""

from __future__ import annotations

import asyncio
import logging
import uuid

from domain.chat.conversation import ConversationState
from domain.llm.messages import ChatRequest, SystemMessage, UserMessage
from domain.llm.ports import ChatModel
from domain.llm.stream import StreamEvent, fold

log = logging.getLogger(__name__)

TITLE_MAX_CHARS = 80
TITLE_TIMEOUT_S = 30.0
TITLE_MAX_TOKENS = 32
TITLE_PROMPT = (
    "Write a short title (at most six words) for the conversation below."
    " Answer with the title only, without quotes or punctuation at the end."
)
_QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb"


def generated_title(text: str) -> str | None:
    """The model's answer made a title: its first non-blank line, surrounding quotes stripped, at
    most ``TITLE_MAX_CHARS`` characters; None when nothing is left."""
    line = next((part for part in text.splitlines() if part.strip()), "")
    title = line.strip().strip(_QUOTES).strip()
    if len(title) > TITLE_MAX_CHARS:
        title = title[:TITLE_MAX_CHARS].rstrip()
    return title or None


def wants_title(state: ConversationState, message_id: uuid.UUID) -> bool:
    """True when ``message_id`` answers the first exchange of a conversation without a title."""
    if state.title is not None:
        return False
    return not any(
        m.role == "assistant" and m.status == "completed" and m.message_id != message_id for m in state.messages
    )


def question_of(state: ConversationState, message_id: uuid.UUID) -> str:
    """The user message that assistant message ``message_id`` answers."""
    question = ""
    for m in state.messages:
        if m.message_id == message_id:
            break
        if m.role == "user":
            question = m.content
    return question


async def ask(model: ChatModel, upstream_id: str, question: str, answer: str) -> str | None:
    """The title ``model`` gives the exchange, or None (no usable answer, or a failure, logged)."""
    request = ChatRequest(
        model=upstream_id,
        messages=[SystemMessage(content=TITLE_PROMPT), UserMessage.text(f"User: {question}\n\nAssistant: {answer}")],
        max_tokens=TITLE_MAX_TOKENS,
    )
    try:
        async with asyncio.timeout(TITLE_TIMEOUT_S):
            events: list[StreamEvent] = [event async for event in model.stream(request)]
    except Exception:
        log.warning("the title request failed", exc_info=True)
        return None
    done = fold(events)
    if done.error is not None:
        log.warning("the model could not write a title: %s: %s", done.error.kind, done.error.message)
        return None
    return generated_title(done.text)
