"""Identity tables: tenants, users, login sessions and their rotating refresh tokens."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, ForeignKey, Index, LargeBinary, Table, Text, text
from sqlalchemy.dialects.postgresql import UUID

from infra.db.metadata import metadata

tenants = Table(
    "tenants",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("slug", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)

users = Table(
    "users",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), ForeignKey("tenants.id"), nullable=False),
    Column("email", Text, nullable=False),  # lower-cased; unique within a tenant
    Column("name", Text, nullable=True),
    Column("password_hash", Text, nullable=True),
    Column("role", Text, nullable=False),
    Column("disabled_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Index("uq_users_tenant_id_email", "tenant_id", "email", unique=True),
)

auth_sessions = Table(
    "auth_sessions",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("user_id", UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("last_used_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoked_reason", Text, nullable=True),
    Column("ip", Text, nullable=True),
    Column("user_agent", Text, nullable=True),
    Index("ix_auth_sessions_user_id", "user_id"),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", LargeBinary, primary_key=True),  # SHA-256; the token is never stored
    Column("session_id", UUID(as_uuid=True), ForeignKey("auth_sessions.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("used_at", DateTime(timezone=True), nullable=True),
    Index("ix_refresh_tokens_session_id", "session_id"),
)
