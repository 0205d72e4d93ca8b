"""Event store tables: events, snapshots, projection checkpoints, and the audit log read model."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, PrimaryKeyConstraint, Sequence, Table, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from infra.db.metadata import metadata

# Positions come from this sequence, drawn only while holding the append lock (see
# infra/eventstore/postgres.py), so position order is commit order.
events_position_seq = Sequence("events_position_seq", metadata=metadata)

events = Table(
    "events",
    metadata,
    Column("stream_id", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("position", BigInteger, nullable=False, unique=True),
    Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("type_id", Text, nullable=False),
    Column("data", JSONB, nullable=False),
    Column("metadata", JSONB, nullable=False),
    Column("tenant_id", Text, nullable=True),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    PrimaryKeyConstraint("stream_id", "version"),
)

snapshots = Table(
    "snapshots",
    metadata,
    Column("stream_id", Text, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("schema", Text, nullable=False),
    Column("state", JSONB, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)

projection_checkpoints = Table(
    "projection_checkpoints",
    metadata,
    Column("name", Text, primary_key=True),
    Column("position", BigInteger, nullable=False, server_default=text("0")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("stream_id", Text, nullable=False),
    Column("type_id", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("entity_type", Text, nullable=False),
    Column("entity_id", Text, nullable=False),
    Column("tenant_id", Text, nullable=True),
    Column("actor", Text, nullable=True),
    Column("request_id", Text, nullable=True),
    Column("correlation_id", Text, nullable=True),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("ip", Text, nullable=True),
    Column("user_agent", Text, nullable=True),
    # The fields a change touched (the event's ``changed``), and the event's payload; events never
    # carry secret values, so neither does this.
    Column("changed", ARRAY(Text), nullable=True),
    Column("data", JSONB, nullable=True),
    # Filters always page by position (newest first), so each index ends with it.
    Index("ix_audit_log_actor_position", "actor", "position"),
    Index("ix_audit_log_action_position", "action", "position"),
    Index("ix_audit_log_entity_type_entity_id_position", "entity_type", "entity_id", "position"),
    Index("ix_audit_log_tenant_id_position", "tenant_id", "position"),
    Index("ix_audit_log_recorded_at", "recorded_at"),
)
