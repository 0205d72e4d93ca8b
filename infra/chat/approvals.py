"""Tool-call approvals: waking the run that waits for a decision, and reading approvals back.

A decision is recorded in the conversation's stream (``domain.chat.turns.decide_approval``) by
whichever process served ``POST /runs/{run_id}/approvals/{approval_id}``; the run waiting for it may
live in another process. After commit the deciding process publishes on the run's channel, and the
waiting run re-reads the conversation. The message is only a nudge: the waiter also re-reads every
``POLL_S`` seconds, so a lost message costs latency, never a decision.

Approvals are read from the messages read model (each assistant message keeps its tool calls), so
``GET /runs/{run_id}/approvals`` sees a decision as soon as it is committed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from infra.db.tables.chat import messages as mt

CHANNEL_PREFIX = "liteskill:run-approvals:"

POLL_S = 2.0
"""Longest wait between two reads of a pending decision (module constant; tests patch it)."""


def channel(run_id: uuid.UUID) -> str:
    return f"{CHANNEL_PREFIX}{run_id}"


class ApprovalSignals:
    """Redis pub/sub between the process recording a decision and the run waiting for it."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def notify(self, run_id: uuid.UUID) -> None:
        await self.redis.publish(channel(run_id), "decided")

    @asynccontextmanager
    async def listening(self, run_id: uuid.UUID) -> AsyncIterator[Callable[[float], Awaitable[None]]]:
        """Subscribe to the run's channel for the block; yields ``wait(timeout_s)``, which returns
        at the next message or after ``timeout_s`` (whichever comes first)."""
        pubsub: Any = self.redis.pubsub()
        await pubsub.subscribe(channel(run_id))

        async def wait(timeout_s: float) -> None:
            await pubsub.get_message(ignore_subscribe_messages=True, timeout=max(0.0, timeout_s))

        try:
            yield wait
        finally:
            await pubsub.unsubscribe()
            await pubsub.aclose()


async def run_tool_calls(session: AsyncSession, run_id: uuid.UUID) -> list[tuple[uuid.UUID, uuid.UUID, dict[str, Any]]]:
    """Every tool call the run's assistant message made, as ``(conversation_id, message_id, call)``
    with ``call`` the stored record (``domain.chat.events.ToolCallRecord`` as JSON)."""
    rows = (
        await session.execute(
            select(mt.c.conversation_id, mt.c.id, mt.c.tool_calls).where(mt.c.run_id == run_id).order_by(mt.c.position)
        )
    ).all()
    return [(row.conversation_id, row.id, call) for row in rows for call in (row.tool_calls or [])]
