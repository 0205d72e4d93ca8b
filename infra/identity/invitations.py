"""Invitations: single-use, expiring, revocable tokens that let one email address into a tenant
with a given role, even while registration is closed.

A token is ``lsi_`` + 32 random bytes (base64url); only its SHA-256 is stored and the plaintext is
returned once, at creation. Inviting an email that already has a pending invitation in the tenant
revokes the old one (reason ``replaced``), so re-sending an invitation is just inviting again and
at most one token per email works. Accepting locks the invitation row (``FOR UPDATE``), so two
registrations racing with one token create exactly one account.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.identity import admin_events as ev
from domain.shared.clock import utcnow
from domain.shared.errors import Conflict, DomainError, Forbidden, NotFound
from domain.shared.events import EventMetadata
from domain.shared.ids import new_id
from infra.db.tables.identity import invitations as t
from infra.db.tables.identity import users
from infra.eventstore.postgres import PostgresEventStore
from infra.identity.accounts import normalize_email, record

TOKEN_PREFIX = "lsi_"  # noqa: S105 - a public marker, not a secret
TOKEN_BYTES = 32
INVITATION_TTL = timedelta(days=7)

Status = Literal["pending", "accepted", "revoked", "expired"]
Role = Literal["admin", "user"]


class InvitationNotFound(NotFound):
    """No invitation with this id or token."""

    code = "invitation_not_found"


class InvitationUnusable(DomainError):
    """The invitation was already used, was revoked or has expired (the edge answers 410)."""

    code = "invitation_unusable"


class InvitationEmailMismatch(Forbidden):
    """The invitation was issued to another email address."""

    code = "invitation_email_mismatch"


@dataclass(frozen=True, slots=True)
class Invitation:
    id: uuid.UUID
    tenant_id: uuid.UUID
    email: str
    role: Role
    status: Status
    created_by: uuid.UUID | None
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None
    accepted_by: uuid.UUID | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewInvitation:
    invitation: Invitation
    token: str
    """The plaintext token: returned once, stored nowhere."""


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def status_of(row: Any, now: datetime) -> Status:
    if row.accepted_at is not None:
        return "accepted"
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at <= now:
        return "expired"
    return "pending"


def _status_clause(status: Status) -> ColumnElement[bool]:
    now = func.now()
    if status == "accepted":
        return t.c.accepted_at.is_not(None)
    if status == "revoked":
        return and_(t.c.accepted_at.is_(None), t.c.revoked_at.is_not(None))
    if status == "expired":
        return and_(t.c.accepted_at.is_(None), t.c.revoked_at.is_(None), t.c.expires_at <= now)
    return and_(t.c.accepted_at.is_(None), t.c.revoked_at.is_(None), t.c.expires_at > now)


def _invitation(row: Any, now: datetime | None = None) -> Invitation:
    return Invitation(
        id=row.id,
        tenant_id=row.tenant_id,
        email=row.email,
        role=row.role,
        status=status_of(row, now or utcnow()),
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        accepted_at=row.accepted_at,
        accepted_by=row.accepted_by,
        revoked_at=row.revoked_at,
    )


async def create(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    email: str,
    role: Role,
    created_by: uuid.UUID | None,
    meta: EventMetadata,
    *,
    ttl: timedelta = INVITATION_TTL,
) -> NewInvitation:
    """Invite ``email`` into ``tenant_id``; a pending invitation to the same email is replaced.
    The caller checks who may invite whom."""
    email = normalize_email(email)
    store = PostgresEventStore(session)
    # One invitation change per (tenant, email) at a time, so two racing invites leave one pending.
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(f"invite:{tenant_id}:{email}", 0))))
    taken = await session.scalar(select(users.c.id).where(users.c.tenant_id == tenant_id, users.c.email == email))
    if taken is not None:
        raise Conflict("An account with this email exists in this tenant.", code="email_taken")
    replaced = await session.execute(
        update(t)
        .where(t.c.tenant_id == tenant_id, t.c.email == email, _status_clause("pending"))
        .values(revoked_at=func.now())
        .returning(t.c.id)
    )
    for (old_id,) in replaced.all():
        await record(
            store, ev.invitation_stream(old_id), ev.InvitationRevoked(invitation_id=old_id, reason="replaced"), meta
        )
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    invitation_id = new_id()
    row = (
        await session.execute(
            insert(t)
            .values(
                id=invitation_id,
                tenant_id=tenant_id,
                email=email,
                role=role,
                token_hash=hash_token(token),
                created_by=created_by,
                expires_at=utcnow() + ttl,
            )
            .returning(t)
        )
    ).one()
    event = ev.InvitationCreated(
        invitation_id=invitation_id, tenant_id=tenant_id, email=email, role=role, expires_at=row.expires_at
    )
    await record(store, ev.invitation_stream(invitation_id), event, meta)
    return NewInvitation(invitation=_invitation(row), token=token)


async def get(session: AsyncSession, tenant_id: uuid.UUID, invitation_id: uuid.UUID) -> Invitation:
    row = (await session.execute(select(t).where(t.c.id == invitation_id, t.c.tenant_id == tenant_id))).one_or_none()
    if row is None:
        raise InvitationNotFound()
    return _invitation(row)


async def list_page(
    session: AsyncSession, tenant_id: uuid.UUID, *, limit: int, before: uuid.UUID | None, status: Status | None
) -> list[Invitation]:
    query = select(t).where(t.c.tenant_id == tenant_id).order_by(t.c.id.desc()).limit(limit)
    if status is not None:
        query = query.where(_status_clause(status))
    if before is not None:
        query = query.where(t.c.id < before)
    now = utcnow()
    return [_invitation(r, now) for r in (await session.execute(query)).all()]


async def revoke(
    session: AsyncSession, tenant_id: uuid.UUID, invitation_id: uuid.UUID, meta: EventMetadata
) -> tuple[Invitation, bool]:
    """Revoke a pending (or expired) invitation; returns it and whether this call revoked it.
    Revoking twice is a no-op; an accepted one is a
    409 ``invitation_used`` (the account exists: disable it instead)."""
    row = (
        await session.execute(select(t).where(t.c.id == invitation_id, t.c.tenant_id == tenant_id).with_for_update())
    ).one_or_none()
    if row is None:
        raise InvitationNotFound()
    if row.accepted_at is not None:
        raise Conflict("This invitation was already accepted; disable the user instead.", code="invitation_used")
    if row.revoked_at is not None:
        return _invitation(row), False
    row = (
        await session.execute(update(t).where(t.c.id == invitation_id).values(revoked_at=func.now()).returning(t))
    ).one()
    await record(
        PostgresEventStore(session),
        ev.invitation_stream(invitation_id),
        ev.InvitationRevoked(invitation_id=invitation_id, reason="revoked"),
        meta,
    )
    return _invitation(row), True


async def claim(session: AsyncSession, token: str, email: str) -> Invitation:
    """Lock the pending invitation behind ``token`` for ``email`` (already normalised) in this
    transaction; ``accept`` marks it used once the account exists."""
    if not token.startswith(TOKEN_PREFIX):
        raise InvitationNotFound("No invitation matches this token.")
    row = (await session.execute(select(t).where(t.c.token_hash == hash_token(token)).with_for_update())).one_or_none()
    if row is None:
        raise InvitationNotFound("No invitation matches this token.")
    status = status_of(row, utcnow())
    if status == "accepted":
        raise InvitationUnusable("This invitation was already used.", code="invitation_used")
    if status == "revoked":
        raise InvitationUnusable("This invitation was revoked.", code="invitation_revoked")
    if status == "expired":
        raise InvitationUnusable("This invitation has expired; ask for a new one.", code="invitation_expired")
    if row.email != email:
        raise InvitationEmailMismatch("This invitation was issued to another email address.")
    return _invitation(row)


async def accept(session: AsyncSession, invitation: Invitation, user_id: uuid.UUID, meta: EventMetadata) -> None:
    await session.execute(update(t).where(t.c.id == invitation.id).values(accepted_at=func.now(), accepted_by=user_id))
    await record(
        PostgresEventStore(session),
        ev.invitation_stream(invitation.id),
        ev.InvitationAccepted(invitation_id=invitation.id, user_id=user_id),
        meta,
    )
