"""Provider connections, the models they serve, and the usage ledger of every model call."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from infra.db.metadata import metadata

providers = Table(
    "providers",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), ForeignKey("tenants.id"), nullable=False),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),  # openai | openai_compatible | anthropic | bedrock
    Column("base_url", Text, nullable=True),
    # Non-secret settings (query parameters, region, profile, timeouts, ...).
    Column("config", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # A secrets-service token of a JSON object (api key, secret headers, AWS keys); never plaintext.
    Column("credentials", Text, nullable=True),
    # The host the credentials were saved for: they are never sent anywhere else.
    Column("credential_host", Text, nullable=True),
    Column("source", Text, nullable=False, server_default=text("'api'")),  # api | env
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("version", Integer, nullable=False, server_default=text("1")),
    Column("created_by", UUID(as_uuid=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    UniqueConstraint("tenant_id", "name"),
)

models = Table(
    "models",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), ForeignKey("tenants.id"), nullable=False),
    Column("provider_id", UUID(as_uuid=True), ForeignKey("providers.id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),
    Column("upstream_id", Text, nullable=False),
    Column("kind", Text, nullable=False),  # chat | embedding | rerank
    Column("context_window", Integer, nullable=True),
    Column("max_output_tokens", Integer, nullable=True),
    Column("dimensions", Integer, nullable=True),  # embedding models
    # {"tools": bool, "vision": bool, "streaming_usage": bool}
    Column("capabilities", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # {"currency": "USD", "input": per million, "output": per million, "cached_input": per million}
    Column("pricing", JSONB, nullable=True),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("version", Integer, nullable=False, server_default=text("1")),
    Column("created_by", UUID(as_uuid=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    UniqueConstraint("tenant_id", "name"),
    Index("ix_models_provider_id", "provider_id"),
)

# Tenant-wide model defaults and the admin's outbound allow-list.
llm_settings = Table(
    "llm_settings",
    metadata,
    Column("tenant_id", UUID(as_uuid=True), ForeignKey("tenants.id"), primary_key=True),
    Column("default_chat_model_id", UUID(as_uuid=True), ForeignKey("models.id", ondelete="SET NULL"), nullable=True),
    Column(
        "default_embedding_model_id", UUID(as_uuid=True), ForeignKey("models.id", ondelete="SET NULL"), nullable=True
    ),
    Column("outbound_allow", JSONB, nullable=False, server_default=text("'[]'::jsonb")),  # hosts or CIDRs
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)

usage_records = Table(
    "usage_records",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("user_id", UUID(as_uuid=True), nullable=True),
    Column("api_key_id", UUID(as_uuid=True), nullable=True),
    Column("provider_id", UUID(as_uuid=True), nullable=True),
    Column("model_id", UUID(as_uuid=True), nullable=True),
    Column("model_name", Text, nullable=False),
    Column("purpose", Text, nullable=False),  # chat | agent | embedding | rerank | title
    Column("conversation_id", UUID(as_uuid=True), nullable=True),
    Column("run_id", UUID(as_uuid=True), nullable=True),
    Column("input_tokens", BigInteger, nullable=False, server_default=text("0")),
    Column("output_tokens", BigInteger, nullable=False, server_default=text("0")),
    Column("cached_input_tokens", BigInteger, nullable=False, server_default=text("0")),
    Column("cost", Numeric(20, 10), nullable=True),  # None: the model had no pricing
    Column("currency", Text, nullable=True),
    Column("latency_ms", Integer, nullable=True),
    Column("ttft_ms", Integer, nullable=True),
    Column("status", Text, nullable=False),  # completed | failed | cancelled
    Column("error_kind", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Index("ix_usage_records_tenant_id_created_at", "tenant_id", "created_at"),
    Index("ix_usage_records_tenant_id_user_id_created_at", "tenant_id", "user_id", "created_at"),
    Index("ix_usage_records_conversation_id", "conversation_id"),  # a conversation's usage
)
