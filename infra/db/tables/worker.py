"""Worker tables: the transactional outbox and the processed-message ledger of idempotent actors."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Identity, Index, Integer, Table, Text, text
from sqlalchemy.dialects.postgresql import JSONB, UUID

from infra.db.metadata import metadata

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("message_id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("actor", Text, nullable=False),
    Column("queue", Text, nullable=False),
    Column("kwargs", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("available_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text, nullable=True),
    Index("ix_outbox_available_at_id", "available_at", "id"),
)

processed_messages = Table(
    "processed_messages",
    metadata,
    Column("message_id", UUID(as_uuid=True), primary_key=True),
    Column("actor", Text, nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Index("ix_processed_messages_processed_at", "processed_at"),
)
