"""Identity tables: tenants, users, login sessions and their rotating refresh tokens, invitations,
OIDC providers and the external identities linked to users."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, ForeignKey, Index, LargeBinary, Table, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID

from infra.db.metadata import metadata

tenants = Table(
    "tenants",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("slug", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    # None: follow LITESKILL_REGISTRATION_OPEN; an admin's runtime choice otherwise.
    Column("registration_open", Boolean, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
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
    # System permissions granted on top of the instance role (admins hold them all).
    Column("permissions", ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")),
    Column("password_changed_at", DateTime(timezone=True), nullable=True),
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

invitations = Table(
    "invitations",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), ForeignKey("tenants.id"), nullable=False),
    Column("email", Text, nullable=False),  # lower-cased; only this address may accept
    Column("role", Text, nullable=False),  # the instance role the new account gets
    Column("token_hash", LargeBinary, nullable=False, unique=True),  # SHA-256; the token is never stored
    Column("created_by", UUID(as_uuid=True), nullable=True),  # None: created by the system (CLI, tenant setup)
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("accepted_at", DateTime(timezone=True), nullable=True),
    Column("accepted_by", UUID(as_uuid=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Index("ix_invitations_tenant_id", "tenant_id"),
)

oidc_providers = Table(
    "oidc_providers",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), ForeignKey("tenants.id"), nullable=False),
    Column("slug", Text, nullable=False, unique=True),  # the {provider} in /auth/oidc/{provider}/...
    Column("name", Text, nullable=False),
    Column("issuer", Text, nullable=False),
    Column("client_id", Text, nullable=False),
    Column("client_secret", Text, nullable=True),  # a secrets-service token, never plaintext
    Column("scopes", ARRAY(Text), nullable=False, server_default=text("'{openid,email,profile}'::text[]")),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("created_by", UUID(as_uuid=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)

user_identities = Table(
    "user_identities",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("user_id", UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("provider_id", UUID(as_uuid=True), ForeignKey("oidc_providers.id", ondelete="CASCADE"), nullable=False),
    Column("issuer", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("email", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("last_login_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("tenant_id", "issuer", "subject"),
    Index("ix_user_identities_user_id", "user_id"),
)
