"""Runs: one row per unit of background work (a chat turn, an agent, a team, an ingestion).

Live progress goes to a Redis stream per run (infra/runs/stream.py); this row only holds the
run's lifecycle, its lease (which process owns it) and its final usage/error.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, Integer, Table, Text, text
from sqlalchemy.dialects.postgresql import JSONB, UUID

from infra.db.metadata import metadata

runs = Table(
    "runs",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("kind", Text, nullable=False),  # chat | agent | team | ingestion
    Column("conversation_id", UUID(as_uuid=True), nullable=True),
    Column("created_by", UUID(as_uuid=True), nullable=True),
    # queued | running | completed | failed | cancelled | interrupted
    Column("status", Text, nullable=False, server_default=text("'queued'")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("last_seq", Integer, nullable=False, server_default=text("0")),
    Column("lease_owner", Text, nullable=True),
    Column("lease_expires_at", DateTime(timezone=True), nullable=True),
    Column("cancel_requested_at", DateTime(timezone=True), nullable=True),
    Column("usage", JSONB, nullable=True),
    Column("error", JSONB, nullable=True),  # a Problem: {type, title, status, code, detail}
    Index("ix_runs_status_lease_expires_at", "status", "lease_expires_at"),
    Index("ix_runs_conversation_id_created_at", "conversation_id", "created_at"),
)
