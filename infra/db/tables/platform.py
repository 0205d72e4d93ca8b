"""HTTP platform tables: idempotency keys (replayable POST responses) and prompts (the CRUD proof resource)."""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from infra.db.metadata import metadata

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    # The caller the key belongs to ("anonymous" until authentication lands): keys never collide
    # across principals.
    Column("scope", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("request_method", Text, nullable=False),
    Column("request_path", Text, nullable=False),
    Column("request_hash", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("response_status", Integer, nullable=True),
    Column("response_headers", JSONB, nullable=True),
    Column("response_body", LargeBinary, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    # An in-flight reservation expires after a short lease (a crashed request frees its key);
    # a completed one after the idempotency TTL. Expired rows are overwritten on reuse.
    Column("expires_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("scope", "key"),
    CheckConstraint("state IN ('in_flight', 'completed')", name="state"),
    Index("ix_idempotency_keys_expires_at", "expires_at"),
)

prompts = Table(
    "prompts",
    metadata,
    Column("id", UUID(as_uuid=True), nullable=False),
    # Who may see a prompt is decided by its ACL grants; the tenant and creator are kept for audit
    # and scoping. Null only on rows created before authorization existed.
    Column("tenant_id", UUID(as_uuid=True), nullable=True),
    Column("created_by", UUID(as_uuid=True), nullable=True),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=True),
    Column("body", Text, nullable=False),
    Column("tags", ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("id"),
    # Lists page by id (UUIDv7, so newest first); the tag filter is an array containment.
    Index("ix_prompts_tags", "tags", postgresql_using="gin"),
)
