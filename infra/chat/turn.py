"""The assistant turn: the work of a ``chat`` run (infra.runs.runner) answering a conversation.

``start_turn`` records the user message and the assistant turn in the caller's transaction (the
seam of ``domain.chat.turns``) together with the queued run row; after commit the caller starts
``TurnWork`` with the ``RunRunner``. The work builds the model's context from the conversation
(``domain.chat.context``), streams the metered model and publishes ``message.started``,
``message.delta`` per text delta (Redis only), ``tool_call.*`` as the model calls tools, ``usage``
and ``message.completed``; the runner adds ``run.started`` and the one terminal event.

Tool loop: while the model's response ends with tool calls, ``infra.chat.tools.ToolRound`` records
and settles them (approvals, the MCP gateway) and the model is asked again with their results, up
to ``max_tool_rounds`` rounds; calls asked for beyond that are denied by the system and the message
completes with stop reason ``max_tool_rounds``. Usage adds up every round.

After the first assistant message of a conversation without a title completes, the same model is
asked for a short title (``infra.chat.titles``), recorded as a generated ``TitleChanged`` (metered
with purpose ``title``) before the run ends, never over a title the user set.

The conversation hears about the turn at most every ``progress.CHECKPOINT_EVERY_S`` (the text so
far, written beside the stream: the deltas never wait for the database, and the first checkpoint of
a turn comes after a random half to whole period, so turns that start together do not all write at
once) and once at its end (after any checkpoint in flight), always *before* the run's terminal event, so a
client that saw the terminal event reads the final message: completed; failed with the provider
failure's problem code (e.g. ``provider_rate_limited``); interrupted with the partial text on
cancel. A run whose process died
is ended by the reaper, whose ``on_interrupted("chat")`` hook (registered here, imported by the
background runtime) marks the message interrupted with its last checkpointed text. Every ending
returns the conversation to ``active``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from domain.chat import turns
from domain.chat.context import build_context
from domain.chat.conversation import ConversationState, change_title
from domain.chat.conversation import fold as chat_fold
from domain.chat.events import TokenUsage
from domain.llm.messages import AssistantMessage, ChatRequest, Message, ToolCall
from domain.llm.ports import ChatModel
from domain.llm.pricing import cost, pricing_from
from domain.llm.stream import Failed, Finished, TextDelta
from domain.llm.stream import ToolCallArgumentsDelta as LlmToolCallArgumentsDelta
from domain.llm.stream import ToolCallCompleted as LlmToolCallCompleted
from domain.llm.stream import ToolCallStarted as LlmToolCallStarted
from domain.llm.stream import Usage as TokenCount
from domain.llm.usage import Purpose, UsageContext
from domain.mcp.ports import ToolGateway
from domain.runs.events import (
    MessageCompleted,
    MessageDelta,
    MessageStarted,
    RunProblem,
    ToolCallArgumentsDelta,
    ToolCallStarted,
    Usage,
    problem,
)
from domain.shared.errors import ConcurrencyConflict
from domain.shared.events import Event, EventMetadata
from domain.shared.principal import Principal
from infra.chat import commands, titles
from infra.chat.progress import Progress, uncancellable
from infra.chat.tools import ToolRound, definitions, offered_tools
from infra.db.engine import Database
from infra.llm.metering import MeteredChatModel, UsageRecorder
from infra.llm.registry import ModelInfo
from infra.runs.reaper import hooks
from infra.runs.rows import Run
from infra.runs.runner import RunContext, RunFailure

log = logging.getLogger(__name__)

RECORD_ATTEMPTS = 3


# The HTTP status a provider failure maps to in the run's problem.
_FAILURE_STATUS: dict[str, int] = {
    "rate_limited": 429,
    "timeout": 504,
    "overloaded": 503,
    "context_too_long": 422,
    "bad_request": 422,
}


def failure_problem(failure: Failed) -> RunProblem:
    status = _FAILURE_STATUS.get(failure.kind, 502)
    title = {429: "Too Many Requests", 504: "Gateway Timeout", 503: "Service Unavailable"}.get(status, "Bad Gateway")
    if status == 422:
        title = "Unprocessable Content"
    return problem(status, f"provider_{failure.kind}", title, failure.message or None)


@dataclass(frozen=True, slots=True)
class _Response:
    """How one model round ended: the tool calls it asked for, its stop reason, or its failure."""

    calls: list[ToolCall]
    stop_reason: str | None = None
    failure: Failed | None = None


@dataclass(frozen=True, slots=True)
class TurnWork:
    """The work of one chat run; ``model`` and ``info`` were resolved when the turn was posted.
    Without a ``gateway`` the model is offered no tools."""

    db: Database
    usage_sink: UsageRecorder
    principal: Principal
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    model: ChatModel
    info: ModelInfo
    meta: EventMetadata
    gateway: ToolGateway | None = None
    posted: ConversationState | None = None
    """The conversation as the post left it (saves reading it again when the work starts; while
    the turn runs, nothing the work reads from it can change)."""
    max_tool_rounds: int = 10
    approval_timeout_s: float = 600.0
    _writes: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def _load(self) -> ConversationState:
        async with self.db.read() as session:
            return (await commands.load_conversation(session, self.conversation_id)).state

    async def _record(
        self,
        decide: Callable[[ConversationState], Sequence[Event]],
        also: Callable[[AsyncSession], Awaitable[None]] | None = None,
    ) -> ConversationState:
        """Decide on the conversation's current state and append, in one transaction with ``also``
        (run first: a run's row is locked before the event store's append lock, the order the cancel
        route takes them in); a concurrent writer (a rename, an approval) makes us decide again on
        the newer state. One write at a time per turn."""
        async with self._writes:
            for attempt in range(RECORD_ATTEMPTS):
                try:
                    async with self.db.write() as session:
                        if also is not None:
                            await also(session)
                        loaded = await commands.load_conversation(session, self.conversation_id)
                        events = decide(loaded.state)
                        await commands.append(session, self.conversation_id, loaded, events, self.meta)
                        return chat_fold(events, loaded.state)
                except ConcurrencyConflict:
                    if attempt == RECORD_ATTEMPTS - 1:
                        raise
        raise AssertionError("unreachable")

    def _message_usage(self, progress: Progress) -> TokenUsage | None:
        if progress.tokens == TokenCount():
            return None
        price = cost(progress.tokens, pricing_from(self.info.pricing))
        return TokenUsage(
            input_tokens=progress.tokens.input_tokens,
            output_tokens=progress.tokens.output_tokens,
            cost=None if price is None else str(price),
        )

    async def _respond(self, ctx: RunContext, model: ChatModel, request: ChatRequest, progress: Progress) -> _Response:
        """One model round: stream text and tool-call progress to the run, collect the calls."""
        calls: list[ToolCall] = []
        names: dict[str, str] = {}
        stop_reason: str | None = None
        failure: Failed | None = None
        stream = model.stream(request)
        try:
            async for event in stream:
                if isinstance(event, TextDelta):
                    if not event.text:
                        continue
                    await ctx.publish(MessageDelta(message_id=self.message_id, text=event.text))
                    progress.text.append(event.text)  # after publishing: the kept text is what was streamed
                    progress.checkpoint(lambda so_far: self._checkpoint(ctx, so_far))
                elif isinstance(event, LlmToolCallStarted):
                    names[event.id] = event.name
                    await ctx.publish(ToolCallStarted(tool_call_id=event.id, name=event.name))
                elif isinstance(event, LlmToolCallArgumentsDelta):
                    name = names.get(event.id, "")
                    await ctx.publish(ToolCallArgumentsDelta(tool_call_id=event.id, name=name, text=event.delta))
                elif isinstance(event, LlmToolCallCompleted):
                    calls.append(ToolCall(event.id, event.name, event.arguments))
                elif isinstance(event, TokenCount):
                    progress.tokens = progress.tokens + event
                elif isinstance(event, Finished):
                    stop_reason = event.stop_reason
                elif isinstance(event, Failed):
                    failure = event
        finally:
            closer: Any = getattr(stream, "aclose", None)
            if closer is not None:
                await closer()
        return _Response(calls=calls, stop_reason=stop_reason, failure=failure)

    async def __call__(self, ctx: RunContext) -> None:
        progress = Progress()
        try:
            state = self.posted if self.posted is not None else await self._load()
            capable = bool(self.info.capabilities.get("tools"))
            offered = await offered_tools(self.gateway, self.principal, state, capable=capable)
            history = build_context(
                state,
                answering=self.message_id,
                context_window=self.info.context_window,
                max_output_tokens=self.info.max_output_tokens,
            )
            metered = MeteredChatModel(self.model, self.usage_sink, self._usage_context(ctx, "chat"))
            tool_round = ToolRound(
                gateway=self.gateway,
                wait=ctx.wait_nudge,
                principal=self.principal,
                conversation_id=self.conversation_id,
                message_id=self.message_id,
                run_id=ctx.run_id,
                request_id=self.meta.request_id,
                approval_timeout_s=self.approval_timeout_s,
                record=self._record,
                load=self._load,
                publish=ctx.publish,
            )
            await ctx.publish(MessageStarted(message_id=self.message_id))
            turn: list[Message] = []
            rounds, round_start = 0, 0
            while True:
                request = ChatRequest(
                    model=self.info.upstream_id,
                    messages=[*history, *turn],
                    tools=definitions(offered),
                    max_tokens=self.info.max_output_tokens,
                )
                response = await self._respond(ctx, metered, request, progress)
                if response.failure is not None or not response.calls:
                    break
                text = progress.content
                if rounds == self.max_tool_rounds:
                    await tool_round.refuse(response.calls, text=text)
                    response = _Response(calls=[], stop_reason="max_tool_rounds")
                    break
                rounds += 1
                results = await tool_round.run(response.calls, offered, state.tools.approval, text=text)
                turn += [AssistantMessage(content=text[round_start:], tool_calls=response.calls), *results]
                round_start = len(text)
            await progress.settle()
            usage = await self._publish_usage(ctx, progress)
        except asyncio.CancelledError:
            await uncancellable(lambda: progress.settle(cancel=True))
            reason: Any = "cancelled" if ctx.cancelled.is_set() else "lease_expired"
            partial, used = progress.content, self._message_usage(progress)
            await uncancellable(
                lambda: self._end(
                    lambda s: turns.interrupt(s, message_id=self.message_id, reason=reason, content=partial, usage=used)
                )
            )
            raise
        except Exception as exc:
            await progress.settle(cancel=True)
            detail = str(exc)[:500] or None
            code = str(getattr(exc, "code", "internal_error"))
            partial, used = progress.content, self._message_usage(progress)
            await self._end(
                lambda s: turns.fail(
                    s, message_id=self.message_id, error_code=code, error_detail=detail, content=partial, usage=used
                )
            )
            raise
        content = progress.content
        if response.failure is not None:
            run_problem = failure_problem(response.failure)
            await self._end(
                lambda s: turns.fail(
                    s,
                    message_id=self.message_id,
                    error_code=run_problem.code,
                    error_detail=run_problem.detail,
                    content=content,
                    usage=usage,
                )
            )
            raise RunFailure(run_problem)
        stop_reason = response.stop_reason
        await self._record(
            lambda s: turns.complete(
                s, message_id=self.message_id, content=content, usage=usage, finish_reason=stop_reason
            )
        )
        await ctx.publish(MessageCompleted(message_id=self.message_id, stop_reason=stop_reason))
        if titles.wants_title(state, self.message_id):
            await self._title(ctx, state, content)

    async def _publish_usage(self, ctx: RunContext, progress: Progress) -> TokenUsage | None:
        """The turn's tokens and cost (all its model rounds) as one ``usage`` event and the run's usage."""
        usage = self._message_usage(progress)
        if usage is not None:
            price = None if usage.cost is None else float(usage.cost)
            await ctx.publish(Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, cost=price))
            ctx.usage = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens, "cost": price}
        return usage

    def _usage_context(self, ctx: RunContext, purpose: Purpose) -> UsageContext:
        return UsageContext(
            tenant_id=self.principal.tenant_id,
            user_id=self.principal.user_id,
            api_key_id=self.principal.api_key_id,
            provider_id=self.info.provider_id,
            model_id=self.info.id,
            model_name=self.info.name,
            purpose=purpose,
            conversation_id=self.conversation_id,
            run_id=ctx.run_id,
            pricing=pricing_from(self.info.pricing),
        )

    async def _title(self, ctx: RunContext, state: ConversationState, answer: str) -> None:
        """Ask the model for the conversation's title after its first exchange; best effort."""
        metered = MeteredChatModel(self.model, self.usage_sink, self._usage_context(ctx, "title"))
        title = await titles.ask(metered, self.info.upstream_id, titles.question_of(state, self.message_id), answer)
        if title is None:
            return
        try:
            await self._record(
                lambda s: change_title(s, title, generated=True) if s.title is None and s.status != "archived" else []
            )
        except Exception:
            log.warning(
                "could not title the conversation", extra={"conversation_id": str(self.conversation_id)}, exc_info=True
            )

    async def _checkpoint(self, ctx: RunContext, so_far: str) -> None:
        """Keep the text so far in the conversation (what survives a crash); best effort."""
        try:
            await self._record(
                lambda s: turns.checkpoint(s, message_id=self.message_id, content=so_far), also=ctx.checkpoint
            )
        except Exception:
            log.warning("chat checkpoint failed", extra={"run_id": str(ctx.run_id)}, exc_info=True)

    async def _end(self, decide: Callable[[ConversationState], Sequence[Event]]) -> None:
        """Record the turn's end; a failure to do so is logged (the reaper's hook cannot help here,
        the run does end), never raised over the run's own ending."""
        try:
            await self._record(decide)
        except Exception:
            log.exception(
                "could not record the end of a chat turn", extra={"conversation_id": str(self.conversation_id)}
            )


@hooks.on_interrupted("chat")
async def keep_partial_text(session: AsyncSession, run: Run) -> None:
    """The reaper ended this chat run (its process died): its message keeps the last checkpointed
    text, marked interrupted, and the conversation is usable again."""
    if run.conversation_id is None:
        return
    loaded = await commands.load_conversation(session, run.conversation_id)
    state = loaded.state
    if state.running_run_id != run.id or state.running_message_id is None:
        return
    events = turns.interrupt(state, message_id=state.running_message_id, reason="lease_expired")
    meta = EventMetadata(actor="system", tenant_id=str(run.tenant_id), causation_id=str(run.id))
    await commands.append(session, run.conversation_id, loaded, events, meta)
