"""Sharing tables: groups with members, and per-entity ACL grants to users or groups."""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import UUID

from infra.db.metadata import metadata

groups = Table(
    "groups",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("name", Text, nullable=False),
    Column("created_by", UUID(as_uuid=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Index("ix_groups_tenant_id", "tenant_id"),
)

group_members = Table(
    "group_members",
    metadata,
    Column("group_id", UUID(as_uuid=True), ForeignKey("groups.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("role", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    PrimaryKeyConstraint("group_id", "user_id"),
    CheckConstraint("role IN ('manager', 'member')", name="role"),
    # "Which groups is this user in" runs on every ACL check.
    Index("ix_group_members_user_id", "user_id"),
)

acl_grants = Table(
    "acl_grants",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("entity_type", Text, nullable=False),
    Column("entity_id", UUID(as_uuid=True), nullable=False),
    Column("grantee_type", Text, nullable=False),
    Column("grantee_id", UUID(as_uuid=True), nullable=False),
    Column("role", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    UniqueConstraint("entity_type", "entity_id", "grantee_type", "grantee_id"),
    CheckConstraint("grantee_type IN ('user', 'group')", name="grantee_type"),
    CheckConstraint("role IN ('owner', 'manager', 'editor', 'viewer')", name="role"),
    # Visible-set filters start from the caller (and their groups).
    Index("ix_acl_grants_grantee_type_grantee_id_entity_type", "grantee_type", "grantee_id", "entity_type"),
)
