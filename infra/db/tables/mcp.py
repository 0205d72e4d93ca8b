"""MCP servers registered per tenant, and the ledger of every tool call made through the gateway."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from infra.db.metadata import metadata

mcp_servers = Table(
    "mcp_servers",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), ForeignKey("tenants.id"), nullable=False),
    Column("name", Text, nullable=False),
    Column("transport", Text, nullable=False),  # streamable_http | sse | stdio
    Column("url", Text, nullable=True),  # streamable_http, sse
    Column("command", Text, nullable=True),  # stdio
    Column("args", JSONB, nullable=False, server_default=text("'[]'::jsonb")),  # stdio
    # Secrets-service token of a JSON object: HTTP headers, OAuth bearer token, stdio env values.
    Column("secrets", Text, nullable=True),
    # What responses may say about the secrets: header names, env names, has_bearer_token.
    Column("secret_info", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("credential_host", Text, nullable=True),  # the host the secrets were saved for
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("approval", Text, nullable=False, server_default=text("'manual'")),  # auto | manual | deny
    # {"<tool name>": "auto" | "manual" | "deny"}: per-tool overrides of ``approval``.
    Column("tool_approval", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("allowed_tools", JSONB, nullable=True),  # None: every tool the server offers
    Column("call_timeout_s", Integer, nullable=False, server_default=text("60")),
    Column("version", Integer, nullable=False, server_default=text("1")),
    Column("created_by", UUID(as_uuid=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    UniqueConstraint("tenant_id", "name"),
)

tool_calls = Table(
    "tool_calls",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("call_id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("user_id", UUID(as_uuid=True), nullable=True),
    Column("server_id", UUID(as_uuid=True), nullable=True),
    Column("server_name", Text, nullable=False),
    Column("tool", Text, nullable=False),
    Column("arguments", JSONB, nullable=True),
    Column("result_summary", Text, nullable=True),
    Column("status", Text, nullable=False),  # ok | error | invalid_arguments | timeout | unavailable | too_large
    Column("is_error", Boolean, nullable=False, server_default=text("false")),
    Column("duration_ms", Integer, nullable=True),
    Column("conversation_id", UUID(as_uuid=True), nullable=True),
    Column("run_id", UUID(as_uuid=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Index("ix_tool_calls_tenant_id_created_at", "tenant_id", "created_at"),
    Index("ix_tool_calls_server_id_created_at", "server_id", "created_at"),
)
