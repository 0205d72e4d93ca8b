"""What the model sees of a conversation: the system prompt and the current branch, made to fit the
model's context window (pure; ``infra.chat.turn`` sends it).

The branch is cut into turns (a user message and what answered it). Failed turns (the question and
its failed answer) and empty answers are left out; the oldest turns are dropped first until the
estimate fits the window less the answer's room, and the latest turn always stays. An assistant
message that called tools becomes, per model round, the text written before the calls, the calls,
and one tool result per call, so a call is never separated from its result: a denied call's
result is the refusal, and a call that never finished (its turn was interrupted) gets a result
saying so.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

from domain.chat.conversation import ConversationState, MessageState
from domain.chat.events import ToolCallRecord
from domain.llm.messages import AssistantMessage, Message, SystemMessage, ToolCall, ToolResultMessage, UserMessage

CHARS_PER_TOKEN = 4
"""The simple token estimate: about four characters of text per token."""

MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens a message costs beyond its text (role and separators)."""

DEFAULT_OUTPUT_RESERVE = 1024
"""Tokens kept free for the answer when the model does not say how long its answers may be."""

UNFINISHED_RESULT = "The tool call did not complete (the turn was interrupted)."


def estimate_tokens(text: str) -> int:
    return MESSAGE_OVERHEAD_TOKENS + (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def refusal(decided_by: str | None, reason: str | None) -> str:
    """The tool result a denied call gives the model."""
    who = "the system" if decided_by in (None, "system") else "the user"
    return f"The tool call was denied by {who}" + (f": {reason}" if reason else ".")


def tool_result(call: ToolCallRecord) -> ToolResultMessage:
    """The result the model is shown for ``call`` (its output, the refusal, or that it never finished)."""
    if call.status == "completed" and call.result is not None:
        return ToolResultMessage(tool_call_id=call.tool_call_id, content=call.result, is_error=call.is_error)
    if call.status == "denied":
        return ToolResultMessage(
            tool_call_id=call.tool_call_id, content=refusal(call.decided_by, call.reason), is_error=True
        )
    return ToolResultMessage(tool_call_id=call.tool_call_id, content=UNFINISHED_RESULT, is_error=True)


def assistant_messages(content: str, calls: Sequence[ToolCallRecord]) -> list[Message]:
    """An assistant message with tool calls as the model produced it: per round (calls sharing an
    offset), the text written before the calls, the calls and their results; then the final text."""
    out: list[Message] = []
    start = 0
    rounds: dict[int, list[ToolCallRecord]] = {}
    for call in calls:
        rounds.setdefault(call.offset, []).append(call)
    for offset in sorted(rounds):
        group = rounds[offset]
        out.append(
            AssistantMessage(
                content=content[start:offset],
                tool_calls=[ToolCall(c.tool_call_id, c.name, c.arguments) for c in group],
            )
        )
        out.extend(tool_result(c) for c in group)
        start = max(start, offset)
    rest = content[start:]
    if rest or not out:
        out.append(AssistantMessage(content=rest))
    return out


def _size(m: MessageState) -> int:
    calls = sum(
        estimate_tokens(json.dumps(c.arguments) + c.name) + estimate_tokens(c.result or "") for c in m.tool_calls
    )
    return estimate_tokens(m.content) + calls


def _turns_of(messages: Sequence[MessageState]) -> list[list[MessageState]]:
    """The branch cut into turns, each starting at a user message (anything before the first is one)."""
    groups: list[list[MessageState]] = []
    for m in messages:
        if m.role == "user" or not groups:
            groups.append([m])
        else:
            groups[-1].append(m)
    return groups


def build_context(
    state: ConversationState, *, answering: uuid.UUID, context_window: int | None, max_output_tokens: int | None
) -> list[Message]:
    """System prompt + the branch up to the message being answered (``answering``, excluded), as
    the module describes."""
    branch: list[MessageState] = []
    for m in state.messages:
        if m.message_id == answering:
            break
        branch.append(m)
    kept: list[list[MessageState]] = []
    for group in _turns_of(branch):
        if any(m.role == "assistant" and m.status == "failed" for m in group):
            continue
        kept.append([m for m in group if m.role == "user" or (m.role == "assistant" and (m.content or m.tool_calls))])
    system = state.system_prompt or ""
    if context_window is not None and kept:
        budget = context_window - (max_output_tokens or min(DEFAULT_OUTPUT_RESERVE, context_window // 4))
        budget -= estimate_tokens(system) if system else 0
        sizes = [sum(_size(m) for m in g) for g in kept]
        while len(kept) > 1 and sum(sizes) > budget:
            kept.pop(0)
            sizes.pop(0)
    out: list[Message] = [SystemMessage(content=system)] if system else []
    for group in kept:
        for m in group:
            if m.role == "user":
                out.append(UserMessage.text(m.content))
            else:
                out.extend(assistant_messages(m.content, m.tool_calls))
    return out
