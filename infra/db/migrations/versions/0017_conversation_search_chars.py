"""Conversations count the characters their search vector was built from, so a new message adds to
the vector instead of rebuilding it from the whole conversation (existing rows: counted from their
title and current branch, as the rebuild would feed them, at most 200,000).

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('conversations', sa.Column('search_chars', sa.Integer(), server_default=sa.text('0'), nullable=False))
    op.execute(
        """
        UPDATE conversations c SET search_chars = least(200000, length(coalesce(c.title, '') || ' ' || coalesce((
            SELECT string_agg(m.content, ' ' ORDER BY m.position) FROM messages m
            WHERE m.conversation_id = c.id AND m.in_branch
        ), '')))
        WHERE c.search IS NOT NULL
        """
    )


def downgrade() -> None:
    op.drop_column('conversations', 'search_chars')
