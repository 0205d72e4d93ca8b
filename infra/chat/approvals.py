"""Tool-call approvals: how the run waiting for a decision hears of it, and reading approvals back.

A decision is recorded in the conversation's stream (``domain.chat.turns.decide_approval``) by
whichever process served ``POST /runs/{run_id}/approvals/{approval_id}``; the run waiting for it may
live in another process. After commit the deciding process nudges the run
(``infra.runs.runner.notify_nudge``: one pub/sub subscription per process, not one per waiting
call), and the waiting run re-reads the conversation. The nudge is only a hint: the waiter also
re-reads every ``POLL_S`` seconds, so a lost message costs latency, never a decision.

Approvals are read from the messages read model (each assistant message keeps its tool calls), so
``GET /runs/{run_id}/approvals`` sees a decision as soon as it is committed.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from infra.db.tables.chat import messages as mt

POLL_S = 2.0
"""Longest wait between two reads of a pending decision (module constant; tests patch it)."""


async def run_tool_calls(session: AsyncSession, run_id: uuid.UUID) -> list[tuple[uuid.UUID, uuid.UUID, dict[str, Any]]]:
    """Every tool call the run's assistant message made, as ``(conversation_id, message_id, call)``
    with ``call`` the stored record (``domain.chat.events.ToolCallRecord`` as JSON)."""
    rows = (
        await session.execute(
            select(mt.c.conversation_id, mt.c.id, mt.c.tool_calls).where(mt.c.run_id == run_id).order_by(mt.c.position)
        )
    ).all()
    return [(row.conversation_id, row.id, call) for row in rows for call in (row.tool_calls or [])]
