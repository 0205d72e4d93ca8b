"""Audit events of runs in the event store (stream ``run-<id>``); the live progress of a run is
its Redis stream (domain.runs.events), not these."""

from __future__ import annotations

import uuid

from domain.shared.events import Event, event_type


def run_stream(run_id: uuid.UUID) -> str:
    return f"run-{run_id}"


@event_type("runs.cancel_requested.v1")
class RunCancelRequested(Event, frozen=True, kw_only=True):
    run_id: uuid.UUID
    kind: str
    conversation_id: uuid.UUID | None = None
