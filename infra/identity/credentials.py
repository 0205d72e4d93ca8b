"""Changing a signed-in user's password: verify the current one, store the new hash, and sign out
every other session of the user (a stolen session must not survive the change meant to end it).

Runs inside the caller's write transaction and appends its audit events there (stream
``user-<id>``); events never carry a password or a hash.
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.identity import events as ev
from domain.shared.errors import Conflict, DomainError, NotFound
from domain.shared.events import EventMetadata
from infra.db.tables.identity import auth_sessions, users
from infra.eventstore.postgres import PostgresEventStore
from infra.identity.accounts import record
from infra.identity.passwords import PasswordHasher, check_policy


class WrongPassword(DomainError):
    """The current password is not correct."""

    code = "wrong_password"


class NoPassword(Conflict):
    """This account signs in through an identity provider and has no password to change."""

    code = "no_password"


async def change_password(
    session: AsyncSession,
    hasher: PasswordHasher,
    user_id: uuid.UUID,
    current_session_id: uuid.UUID,
    current: str,
    new: str,
    meta: EventMetadata,
) -> int:
    """Replace the password of ``user_id`` and revoke their sessions other than
    ``current_session_id``; returns how many were revoked. Raises ``WrongPassword``,
    ``NoPassword`` or the policy's ``Invalid``."""
    check_policy(new)  # cheap, before any hashing
    stored = await session.scalar(
        select(users.c.password_hash).where(users.c.id == user_id, users.c.disabled_at.is_(None)).with_for_update()
    )
    if stored is None:
        exists = await session.scalar(select(users.c.id).where(users.c.id == user_id))
        if exists is None:  # pragma: no cover - the caller's principal was resolved a moment ago
            raise NotFound("No such user.", code="user_not_found")
        raise NoPassword()
    if not await hasher.verify(stored, current):
        raise WrongPassword()
    new_hash = await hasher.hash(new)
    await session.execute(
        update(users).where(users.c.id == user_id).values(password_hash=new_hash, password_changed_at=func.now())
    )
    revoked = (
        await session.execute(
            update(auth_sessions)
            .where(
                auth_sessions.c.user_id == user_id,
                auth_sessions.c.id != current_session_id,
                auth_sessions.c.revoked_at.is_(None),
                auth_sessions.c.expires_at > func.now(),
            )
            .values(revoked_at=func.now(), revoked_reason="password_changed")
            .returning(auth_sessions.c.id)
        )
    ).scalars()
    revoked_ids = sorted(revoked)
    store = PostgresEventStore(session)
    stream = f"user-{user_id}"
    await record(
        store,
        stream,
        ev.PasswordChanged(user_id=user_id, session_id=current_session_id, revoked_sessions=len(revoked_ids)),
        meta,
    )
    for session_id in revoked_ids:
        await record(
            store, stream, ev.SessionRevoked(session_id=session_id, user_id=user_id, reason="password_changed"), meta
        )
    return len(revoked_ids)
