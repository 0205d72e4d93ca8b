"""The assistant turn: the work of a ``chat`` run (infra.runs.runner) answering a conversation.

``start_turn`` records the user message and the assistant turn in the caller's transaction (the
seam of ``domain.chat.turns``) together with the queued run row; after commit the caller starts
``TurnWork`` with the ``RunRunner``. The work builds the model's context from the conversation
(system prompt + the current branch, oldest turns dropped first to fit the model's context window,
failed turns left out), streams the metered model and publishes ``message.started``,
``message.delta`` per text delta (Redis only), ``usage`` and ``message.completed``; the runner adds
``run.started`` and the one terminal event.

After the first assistant message of a conversation without a title completes, the same model is
asked (non-streaming: its stream folded) for a short title, recorded as a generated
``TitleChanged`` (metered with purpose ``title``) before the run ends; a failure is logged and
ignored, and a title the user set (before or meanwhile) is never overwritten.

The conversation hears about the turn at most every ``CHECKPOINT_EVERY_S`` (the text so far) and
once at its end, always *before* the run's terminal event, so a client that saw the terminal event
reads the final message: completed; failed with the provider failure's problem code (e.g.
``provider_rate_limited``); interrupted with the partial text on cancel. A run whose process died
is ended by the reaper, whose ``on_interrupted("chat")`` hook (registered here, imported by the
background runtime) marks the message interrupted with its last checkpointed text. Every ending
returns the conversation to ``active``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from domain.chat import turns
from domain.chat.conversation import ConversationState, MessageState, change_title
from domain.chat.events import TokenUsage
from domain.llm.messages import AssistantMessage, ChatRequest, Message, SystemMessage, UserMessage
from domain.llm.ports import ChatModel
from domain.llm.pricing import cost, pricing_from
from domain.llm.stream import Failed, Finished, StreamEvent, TextDelta, fold
from domain.llm.stream import Usage as TokenCount
from domain.llm.usage import Purpose, UsageContext
from domain.runs.events import MessageCompleted, MessageDelta, MessageStarted, RunProblem, Usage, problem
from domain.shared.errors import ConcurrencyConflict
from domain.shared.events import Event, EventMetadata
from domain.shared.principal import Principal
from infra.chat import commands
from infra.db.engine import Database
from infra.llm.metering import MeteredChatModel, UsageRecorder
from infra.llm.registry import ModelInfo
from infra.runs.reaper import hooks
from infra.runs.runner import Run, RunContext, RunFailure

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 3.0
"""Longest time between two checkpoints of the partial text into the conversation (tests patch it)."""

CHARS_PER_TOKEN = 4
"""The simple token estimate: about four characters of text per token."""

MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens a message costs beyond its text (role and separators)."""

RECORD_ATTEMPTS = 3

TITLE_MAX_CHARS = 80
TITLE_TIMEOUT_S = 30.0
TITLE_MAX_TOKENS = 32
TITLE_PROMPT = (
    "Write a short title (at most six words) for the conversation below."
    " Answer with the title only, without quotes or punctuation at the end."
)
_QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb"

DEFAULT_OUTPUT_RESERVE = 1024
"""Tokens kept free for the answer when the model does not say how long its answers may be."""

# The HTTP status a provider failure maps to in the run's problem.
_FAILURE_STATUS: dict[str, int] = {
    "rate_limited": 429,
    "timeout": 504,
    "overloaded": 503,
    "context_too_long": 422,
    "bad_request": 422,
}


def estimate_tokens(text: str) -> int:
    return MESSAGE_OVERHEAD_TOKENS + (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


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
    """System prompt + the branch up to the message being answered (``answering``, excluded), without
    failed turns (their question and failed answer) and empty answers, the oldest turns dropped first
    until the estimate fits ``context_window`` less the answer's room. The latest turn always stays."""
    branch: list[MessageState] = []
    for m in state.messages:
        if m.message_id == answering:
            break
        branch.append(m)
    kept: list[list[MessageState]] = []
    for group in _turns_of(branch):
        if any(m.role == "assistant" and m.status == "failed" for m in group):
            continue
        kept.append([m for m in group if m.role == "user" or (m.role == "assistant" and m.content)])
    system = state.system_prompt or ""
    if context_window is not None and kept:
        budget = context_window - (max_output_tokens or min(DEFAULT_OUTPUT_RESERVE, context_window // 4))
        budget -= estimate_tokens(system) if system else 0
        sizes = [sum(estimate_tokens(m.content) for m in g) for g in kept]
        while len(kept) > 1 and sum(sizes) > budget:
            kept.pop(0)
            sizes.pop(0)
    out: list[Message] = [SystemMessage(content=system)] if system else []
    for group in kept:
        for m in group:
            if m.role == "user":
                out.append(UserMessage.text(m.content))
            elif m.role == "assistant":
                out.append(AssistantMessage(content=m.content))
    return out


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


def failure_problem(failure: Failed) -> RunProblem:
    status = _FAILURE_STATUS.get(failure.kind, 502)
    title = {429: "Too Many Requests", 504: "Gateway Timeout", 503: "Service Unavailable"}.get(status, "Bad Gateway")
    if status == 422:
        title = "Unprocessable Content"
    return problem(status, f"provider_{failure.kind}", title, failure.message or None)


T = TypeVar("T")


async def _uncancellable(make: Callable[[], Awaitable[T]]) -> T:
    """Finish ``make()`` even if the calling task is cancelled again meanwhile (a cancel arrives by
    pub/sub and directly, so the work's task may be cancelled twice)."""
    task = asyncio.ensure_future(make())
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                return task.result()


@dataclass(frozen=True, slots=True)
class TurnWork:
    """The work of one chat run; ``model`` and ``info`` were resolved when the turn was posted."""

    db: Database
    usage_sink: UsageRecorder
    principal: Principal
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    model: ChatModel
    info: ModelInfo
    meta: EventMetadata

    async def _record(self, decide: Callable[[ConversationState], Sequence[Event]]) -> None:
        """Decide on the conversation's current state and append; a concurrent writer (a rename
        while the turn runs) makes us decide again on the newer state."""
        for attempt in range(RECORD_ATTEMPTS):
            try:
                async with self.db.write() as session:
                    loaded = await commands.load_conversation(session, self.conversation_id)
                    await commands.append(session, self.conversation_id, loaded, decide(loaded.state), self.meta)
                return
            except ConcurrencyConflict:
                if attempt == RECORD_ATTEMPTS - 1:
                    raise

    async def __call__(self, ctx: RunContext) -> None:
        text: list[str] = []
        tokens = TokenCount()
        pricing = pricing_from(self.info.pricing)

        def message_usage() -> TokenUsage | None:
            if tokens == TokenCount():
                return None
            price = cost(tokens, pricing)
            return TokenUsage(
                input_tokens=tokens.input_tokens,
                output_tokens=tokens.output_tokens,
                cost=None if price is None else str(price),
            )

        try:
            async with self.db.read() as session:
                state = (await commands.load_conversation(session, self.conversation_id)).state
            request = ChatRequest(
                model=self.info.upstream_id,
                messages=build_context(
                    state,
                    answering=self.message_id,
                    context_window=self.info.context_window,
                    max_output_tokens=self.info.max_output_tokens,
                ),
                max_tokens=self.info.max_output_tokens,
            )
            context = self._usage_context(ctx, "chat")
            metered = MeteredChatModel(self.model, self.usage_sink, context)
            await ctx.publish(MessageStarted(message_id=self.message_id))
            failure: Failed | None = None
            stop_reason: str | None = None
            checkpointed_at = time.monotonic()
            stream = metered.stream(request)
            try:
                async for event in stream:
                    if isinstance(event, TextDelta):
                        if not event.text:
                            continue
                        await ctx.publish(MessageDelta(message_id=self.message_id, text=event.text))
                        text.append(event.text)  # after publishing: the kept text is what was streamed
                        if time.monotonic() - checkpointed_at >= CHECKPOINT_EVERY_S:
                            await self._checkpoint(ctx, "".join(text))
                            checkpointed_at = time.monotonic()
                    elif isinstance(event, TokenCount):
                        tokens = tokens + event
                    elif isinstance(event, Finished):
                        stop_reason = event.stop_reason
                    elif isinstance(event, Failed):
                        failure = event
            finally:
                closer: Any = getattr(stream, "aclose", None)
                if closer is not None:
                    await closer()
            usage = message_usage()
            if usage is not None:
                price = cost(tokens, pricing)
                await ctx.publish(
                    Usage(
                        input_tokens=usage.input_tokens,
                        output_tokens=usage.output_tokens,
                        cost=None if price is None else float(price),
                    )
                )
                ctx.usage = {
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "cost": None if price is None else float(price),
                }
        except asyncio.CancelledError:
            reason: Any = "cancelled" if ctx.cancelled.is_set() else "lease_expired"
            partial, used = "".join(text), message_usage()
            await _uncancellable(
                lambda: self._end(
                    lambda s: turns.interrupt(s, message_id=self.message_id, reason=reason, content=partial, usage=used)
                )
            )
            raise
        except Exception as exc:
            detail = str(exc)[:500] or None
            code = str(getattr(exc, "code", "internal_error"))
            partial, used = "".join(text), message_usage()
            await self._end(
                lambda s: turns.fail(
                    s, message_id=self.message_id, error_code=code, error_detail=detail, content=partial, usage=used
                )
            )
            raise
        content = "".join(text)
        if failure is not None:
            run_problem = failure_problem(failure)
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
        await self._record(
            lambda s: turns.complete(
                s, message_id=self.message_id, content=content, usage=usage, finish_reason=stop_reason
            )
        )
        await ctx.publish(MessageCompleted(message_id=self.message_id, stop_reason=stop_reason))
        if wants_title(state, self.message_id):
            await self._title(ctx, state, content)

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
        question = ""
        for m in state.messages:
            if m.message_id == self.message_id:
                break
            if m.role == "user":
                question = m.content
        request = ChatRequest(
            model=self.info.upstream_id,
            messages=[
                SystemMessage(content=TITLE_PROMPT),
                UserMessage.text(f"User: {question}\n\nAssistant: {answer}"),
            ],
            max_tokens=TITLE_MAX_TOKENS,
        )
        metered = MeteredChatModel(self.model, self.usage_sink, self._usage_context(ctx, "title"))
        try:
            async with asyncio.timeout(TITLE_TIMEOUT_S):
                events: list[StreamEvent] = [event async for event in metered.stream(request)]
            done = fold(events)
            if done.error is not None:
                raise RuntimeError(f"{done.error.kind}: {done.error.message}")
            title = generated_title(done.text)
            if title is None:
                return
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
            await self._record(lambda s: turns.checkpoint(s, message_id=self.message_id, content=so_far))
            await ctx.checkpoint()
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
