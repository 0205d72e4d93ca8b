"""The tool side of an assistant turn: which tools the model is offered, and one round of the
model's tool calls run through the MCP gateway, with approvals.

Offered tools: those of the conversation's selected MCP servers the poster may use (viewer or more,
through the gateway's directory), without tools their server denies, and only when the model
declares the ``tools`` capability. A call's approval is the strictest of its server's (per-tool)
policy and the conversation's setting (``domain.mcp.approval``).

One round, after the model's response ended with tool calls: the calls are recorded in one write
(with the text so far) at the message's current ``offset``; then each call runs concurrently:
- ``auto``: the gateway calls the tool (arguments validated against its schema, the server's call
  timeout, the result size limit), the result is recorded, ``tool_call.completed`` published;
- ``manual``: ``approval.requested`` is published and the call waits for a decision
  (``POST /runs/{run_id}/approvals/{approval_id}`` by anyone with editor rights on the
  conversation); after ``approval_timeout_s`` the system denies it; ``approval.decided`` is
  published (``approve``, ``deny`` or ``timeout``); an approved call then runs as above;
- a denied call, or a call of a tool the model was not offered, gets a refusal as its result.
Every result goes back to the model in the next round (``domain.chat.context.tool_result``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from domain.chat import turns
from domain.chat.context import refusal
from domain.chat.conversation import ConversationState, ToolCallState, fold
from domain.chat.errors import ToolCallNotPending
from domain.llm.messages import ToolCall, ToolDefinition, ToolResultMessage
from domain.mcp.approval import strictest
from domain.mcp.ports import ToolGateway
from domain.mcp.types import Approval, CallContext, ToolInfo
from domain.runs.events import ApprovalDecided, ApprovalRequested, RunEvent
from domain.runs.events import ToolCallCompleted as ToolCallCompletedEvent
from domain.shared.events import Event
from domain.shared.principal import Principal
from infra.chat.approvals import POLL_S

Decide = Callable[[ConversationState], Sequence[Event]]
Record = Callable[[Decide], Awaitable[ConversationState]]
"""Decide on the conversation's current state and append (retrying on a concurrent writer); returns
the state after the append."""
Load = Callable[[], Awaitable[ConversationState]]
Publish = Callable[[RunEvent], Awaitable[int]]

TIMEOUT_REASON = "No decision before the approval timed out."
ROUNDS_REASON = "The turn reached its limit of tool rounds."


async def offered_tools(
    gateway: ToolGateway | None, principal: Principal, state: ConversationState, *, capable: bool
) -> list[ToolInfo]:
    """The tools the model may call in this conversation (see the module's docstring)."""
    if gateway is None or not capable or not state.tools.mcp_server_ids:
        return []
    tools = await gateway.list_tools(principal, state.tools.mcp_server_ids)
    return [t for t in tools if t.approval != "deny"]


def definitions(tools: Sequence[ToolInfo]) -> list[ToolDefinition]:
    return [
        ToolDefinition(
            name=t.qualified_name,
            description=t.description or t.title or "",
            input_schema=t.input_schema or {"type": "object", "properties": {}},
        )
        for t in tools
    ]


def result_text(text: str, structured: dict[str, Any] | None) -> str:
    """What the model reads of a tool's result: its text, else its structured content as JSON."""
    if text or structured is None:
        return text
    return json.dumps(structured, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class ToolRound:
    """Runs one round of tool calls for the assistant message ``message_id`` of run ``run_id``."""

    gateway: ToolGateway | None
    wait: Callable[[float], Awaitable[None]]
    """Wait up to the given seconds for a nudge (``RunContext.wait_nudge``)."""
    principal: Principal
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    run_id: uuid.UUID
    request_id: str | None
    approval_timeout_s: float
    record: Record
    load: Load
    publish: Publish

    def _requested(
        self, state: ConversationState, call: ToolCall, offset: int, approval_id: uuid.UUID | None = None
    ) -> list[Event]:
        """``call`` recorded as made at ``offset`` (``manual`` approval when it has an approval id)."""
        return turns.request_tool_call(
            state,
            message_id=self.message_id,
            tool_call_id=call.id,
            name=call.name,
            arguments=call.arguments,
            approval="auto" if approval_id is None else "manual",
            approval_id=approval_id,
            offset=offset,
        )

    async def run(
        self, calls: Sequence[ToolCall], offered: Sequence[ToolInfo], conversation: Approval, *, text: str
    ) -> list[ToolResultMessage]:
        """Record ``calls``, made after the message's ``text`` (checkpointed with them), settle each
        (see the module) and return their results in the calls' order."""
        by_name = {t.qualified_name: t for t in offered}
        approvals: dict[str, uuid.UUID | None] = {}
        offset = len(text)

        def request(state: ConversationState) -> list[Event]:
            events: list[Event] = turns.checkpoint(state, message_id=self.message_id, content=text)
            for call in calls:
                tool = by_name.get(call.name)
                manual = tool is not None and strictest((tool.approval, conversation)) == "manual"
                approvals[call.id] = approvals.get(call.id) or (uuid.uuid4() if manual else None)
                events += self._requested(fold(events, state), call, offset, approvals[call.id])
            return events

        await self.record(request)
        results = await asyncio.gather(
            *(self._settle(call, by_name.get(call.name), approvals[call.id]) for call in calls)
        )
        return list(results)

    async def _settle(self, call: ToolCall, tool: ToolInfo | None, approval_id: uuid.UUID | None) -> ToolResultMessage:
        if tool is None:
            text = f"There is no tool named {call.name!r} here."
            return await self._complete(call, text, is_error=True, status="not_found")
        if approval_id is not None:
            await self.publish(
                ApprovalRequested(
                    approval_id=approval_id, tool_call_id=call.id, name=call.name, arguments=call.arguments
                )
            )
            decided = await self._decision(call.id)
            timed_out = decided.status == "denied" and decided.decided_by == "system"
            decision = "timeout" if timed_out else ("deny" if decided.status == "denied" else "approve")
            await self.publish(
                ApprovalDecided(approval_id=approval_id, tool_call_id=call.id, decision=decision, reason=decided.reason)
            )
            if decided.status == "denied":
                text = refusal(decided.decided_by, decided.reason)
                await self.publish(
                    ToolCallCompletedEvent(
                        tool_call_id=call.id, name=call.name, arguments=call.arguments, result=text, is_error=True
                    )
                )
                return ToolResultMessage(tool_call_id=call.id, content=text, is_error=True)
        assert self.gateway is not None
        context = CallContext(conversation_id=self.conversation_id, run_id=self.run_id, request_id=self.request_id)
        outcome = await self.gateway.call(self.principal, call.name, call.arguments, context=context)
        text = result_text(outcome.text, outcome.structured)
        return await self._complete(call, text, is_error=outcome.is_error, status=outcome.status)

    async def _complete(self, call: ToolCall, text: str, *, is_error: bool, status: str) -> ToolResultMessage:
        await self.record(
            lambda s: turns.complete_tool_call(s, tool_call_id=call.id, result=text, is_error=is_error, status=status)
        )
        await self.publish(
            ToolCallCompletedEvent(
                tool_call_id=call.id, name=call.name, arguments=call.arguments, result=text, is_error=is_error
            )
        )
        return ToolResultMessage(tool_call_id=call.id, content=text, is_error=is_error)

    async def _decision(self, tool_call_id: str) -> ToolCallState:
        """Wait until the call is approved or denied; deny it as the system once the timeout passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.approval_timeout_s
        while True:
            call = (await self.load()).tool_calls.get(tool_call_id)
            if call is None:
                raise RuntimeError(f"tool call {tool_call_id} left the running turn")
            if call.status != "awaiting_approval":
                return call
            remaining = deadline - loop.time()
            if remaining <= 0:
                await self.record(lambda s: _deny_if_pending(s, tool_call_id, TIMEOUT_REASON))
                continue
            await self.wait(min(remaining, POLL_S))

    async def refuse(self, calls: Sequence[ToolCall], *, text: str) -> None:
        """Record ``calls`` (made after ``text``) as denied by the system: the turn ends at its
        round limit."""
        offset = len(text)

        def decide(state: ConversationState) -> list[Event]:
            events: list[Event] = turns.checkpoint(state, message_id=self.message_id, content=text)
            for call in calls:
                events += self._requested(fold(events, state), call, offset)
                events += turns.deny_tool_call(
                    fold(events, state),
                    tool_call_id=call.id,
                    decided_by="system",
                    reason=ROUNDS_REASON,
                    pending_only=False,
                )
            return events

        await self.record(decide)


def _deny_if_pending(state: ConversationState, tool_call_id: str, reason: str) -> list[Event]:
    try:
        return turns.deny_tool_call(state, tool_call_id=tool_call_id, decided_by="system", reason=reason)
    except ToolCallNotPending:
        return []  # decided by a person meanwhile
