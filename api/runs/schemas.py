"""Read schema of a run (``GET /api/v1/runs/{run_id}``); its events are domain.runs.events."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec


class RunError(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The problem a failed or interrupted run ended with (``code`` is stable: switch on it)."""

    type: str
    title: str
    status: int
    code: str
    detail: str | None = None


class Run(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    object: Literal["run"] = "run"
    kind: str
    """chat | agent | team | ingestion (open enum)."""
    status: str
    """queued | running | completed | failed | cancelled | interrupted (open enum)."""
    conversation_id: uuid.UUID | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    last_seq: int
    """The seq of the last event recorded durably (the stream may be ahead while running)."""
    cancel_requested_at: datetime | None
    usage: dict[str, Any] | None
    error: RunError | None
