"""Reading sessions: a user's live sessions, and the principal behind verified access-token claims
(whether its session and user are still live). Starting and ending sessions is in accounts.py."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.shared.principal import Principal
from infra.db.tables.identity import auth_sessions, tenants, users
from infra.identity.accounts import DEFAULT_TENANT_SLUG
from infra.identity.tokens import AccessClaims


async def live_sessions(
    session: AsyncSession, user_id: uuid.UUID, *, limit: int, before: uuid.UUID | None = None
) -> list[Any]:
    """The user's sessions that still work, newest first (ids are UUIDv7)."""
    query = (
        select(auth_sessions)
        .where(
            auth_sessions.c.user_id == user_id,
            auth_sessions.c.revoked_at.is_(None),
            auth_sessions.c.expires_at > func.now(),
        )
        .order_by(auth_sessions.c.id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(auth_sessions.c.id < before)
    return list((await session.execute(query)).all())


async def resolve(session: AsyncSession, claims: AccessClaims) -> Principal | None:
    """The principal behind verified access-token claims, or None when its session was revoked or
    expired, or its user disabled, since the token was issued."""
    try:
        user_id, session_id = uuid.UUID(claims.subject), uuid.UUID(claims.session_id)
    except ValueError:
        return None
    row = (
        await session.execute(
            select(users.c.tenant_id, users.c.role, users.c.permissions, tenants.c.slug)
            .join(auth_sessions, auth_sessions.c.user_id == users.c.id)
            .join(tenants, tenants.c.id == users.c.tenant_id)
            .where(
                users.c.id == user_id,
                auth_sessions.c.id == session_id,
                users.c.disabled_at.is_(None),
                auth_sessions.c.revoked_at.is_(None),
                auth_sessions.c.expires_at > func.now(),
            )
        )
    ).first()
    if row is None or str(row.tenant_id) != claims.tenant_id:
        return None
    return Principal(
        user_id=user_id,
        tenant_id=row.tenant_id,
        role=row.role,
        session_id=session_id,
        scopes=claims.scopes,
        permissions=frozenset(row.permissions),
        instance_admin=row.role == "admin" and row.slug == DEFAULT_TENANT_SLUG,
    )
