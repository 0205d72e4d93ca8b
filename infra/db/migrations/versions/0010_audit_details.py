"""audit details: ip, user agent, changed fields and payload on audit_log rows (filled on the
next `liteskill projections rebuild`, and for new events as they are projected).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("ip", sa.Text(), nullable=True))
    op.add_column("audit_log", sa.Column("user_agent", sa.Text(), nullable=True))
    op.add_column("audit_log", sa.Column("changed", postgresql.ARRAY(sa.Text()), nullable=True))
    op.add_column("audit_log", sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    op.drop_column("audit_log", "data")
    op.drop_column("audit_log", "changed")
    op.drop_column("audit_log", "user_agent")
    op.drop_column("audit_log", "ip")
