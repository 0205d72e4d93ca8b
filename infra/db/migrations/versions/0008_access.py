"""access: groups, group members, ACL grants, and the tenant and creator of prompts.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "groups",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_by", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_groups")),
    )
    op.create_index("ix_groups_tenant_id", "groups", ["tenant_id"])
    op.create_table(
        "group_members",
        sa.Column("group_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("role IN ('manager', 'member')", name=op.f("ck_group_members_role")),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_group_members_group_id_groups"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_group_members_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("group_id", "user_id", name=op.f("pk_group_members")),
    )
    op.create_index("ix_group_members_user_id", "group_members", ["user_id"])
    op.create_table(
        "acl_grants",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("entity_type", sa.Text(), nullable=False),
        sa.Column("entity_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("grantee_type", sa.Text(), nullable=False),
        sa.Column("grantee_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("grantee_type IN ('user', 'group')", name=op.f("ck_acl_grants_grantee_type")),
        sa.CheckConstraint("role IN ('owner', 'manager', 'editor', 'viewer')", name=op.f("ck_acl_grants_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_acl_grants")),
        sa.UniqueConstraint(
            "entity_type",
            "entity_id",
            "grantee_type",
            "grantee_id",
            name=op.f("uq_acl_grants_entity_type_entity_id_grantee_type_grantee_id"),
        ),
    )
    op.create_index(
        "ix_acl_grants_grantee_type_grantee_id_entity_type", "acl_grants", ["grantee_type", "grantee_id", "entity_type"]
    )
    op.add_column("prompts", sa.Column("tenant_id", postgresql.UUID(as_uuid=True), nullable=True))
    op.add_column("prompts", sa.Column("created_by", postgresql.UUID(as_uuid=True), nullable=True))


def downgrade() -> None:
    op.drop_column("prompts", "created_by")
    op.drop_column("prompts", "tenant_id")
    op.drop_table("acl_grants")
    op.drop_table("group_members")
    op.drop_table("groups")
