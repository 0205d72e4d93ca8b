"""Secrets tables: per-tenant data keys, stored wrapped by the master key (never in the clear)."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, Index, LargeBinary, Table, Text, text
from sqlalchemy.dialects.postgresql import UUID

from infra.db.metadata import metadata

data_keys = Table(
    "data_keys",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", Text, nullable=False),
    # nonce || AES-256-GCM(data key), associated data: tenant id and kek_id.
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("kek_id", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Index("ix_data_keys_tenant_id", "tenant_id"),
    # One active data key per tenant; lazy creation races resolve through ON CONFLICT.
    Index("ix_data_keys_tenant_id_active", "tenant_id", unique=True, postgresql_where=text("active")),
)
