"""Accounts and sessions: registration, password login, rotating refresh tokens, logout, and
resolving an access token to a ``Principal``.

Every function runs inside the caller's write transaction and appends its audit events there.
Refresh tokens are opaque (``lsr_`` + 256 random bits), stored as SHA-256 and single-use: each
refresh marks the presented token used and issues a new one. Presenting a token that was already
used means it leaked (the legitimate client already rotated past it), so the whole session is
revoked and every token of it stops working.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.identity import events as ev
from domain.shared.clock import utcnow
from domain.shared.errors import ConcurrencyConflict, Conflict, Forbidden, Invalid
from domain.shared.events import Event, EventMetadata, NewEvent
from domain.shared.ids import new_id
from infra.db.tables.identity import auth_sessions, refresh_tokens, tenants, users
from infra.eventstore.postgres import PostgresEventStore
from infra.identity.auth_cache import note_change
from infra.identity.passwords import PasswordHasher, check_policy
from infra.identity.tokens import TokenSigner

SESSION_LIFETIME = timedelta(days=30)
REFRESH_PREFIX = "lsr_"
DEFAULT_TENANT_SLUG = "default"
_REGISTRATION_LOCK = 0x4C53_5247  # "LSRG": serialises registrations so exactly one first user is admin
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


@dataclass(frozen=True, slots=True)
class Account:
    id: uuid.UUID
    tenant_id: uuid.UUID
    email: str
    name: str | None
    role: Literal["admin", "user"]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Tokens:
    account: Account
    session_id: uuid.UUID
    access_token: str
    refresh_token: str
    expires_in: int


def normalize_email(email: str) -> str:
    cleaned = email.strip().lower()
    if len(cleaned) > 254 or not _EMAIL.match(cleaned):
        raise Invalid("This is not an email address.", code="invalid_email", field="email")
    return cleaned


def _hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def record(store: PostgresEventStore, stream_id: str, payload: Event, meta: EventMetadata) -> None:
    """Append one audit event at the end of ``stream_id``. Audit streams have no invariants to
    protect, so a concurrent append is retried (after the first attempt this transaction holds
    the append lock, so the retry reads the exact version). Credential changes are noted on the
    session so cached credentials are forgotten when it commits (infra.identity.auth_cache)."""
    note_change(store.session, payload)
    for attempt in range(3):
        version = await store.stream_version(stream_id)
        try:
            await store.append(stream_id, version, [NewEvent(payload=payload, metadata=meta)])
            return
        except ConcurrencyConflict:
            if attempt == 2:
                raise


def _account(row: Any) -> Account:
    return Account(
        id=row.id, tenant_id=row.tenant_id, email=row.email, name=row.name, role=row.role, created_at=row.created_at
    )


class Accounts:
    def __init__(self, session: AsyncSession, hasher: PasswordHasher, signer: TokenSigner) -> None:
        self.session = session
        self.events = PostgresEventStore(session)
        self.hasher = hasher
        self.signer = signer

    async def registration_open(self, tenant_id: uuid.UUID, default: bool) -> bool:
        """Whether anyone may sign up to ``tenant_id`` without an invitation: an admin's runtime
        choice when one was made, else ``default`` (LITESKILL_REGISTRATION_OPEN)."""
        chosen = await self.session.scalar(select(tenants.c.registration_open).where(tenants.c.id == tenant_id))
        return default if chosen is None else bool(chosen)

    async def default_tenant(self) -> uuid.UUID:
        found = await self.session.scalar(select(tenants.c.id).where(tenants.c.slug == DEFAULT_TENANT_SLUG))
        if found is not None:
            return found  # type: ignore[no-any-return]
        tenant_id = new_id()
        await self.session.execute(insert(tenants).values(id=tenant_id, slug=DEFAULT_TENANT_SLUG, name="Default"))
        return tenant_id

    async def register(
        self,
        email: str,
        password: str,
        name: str | None,
        meta: EventMetadata,
        *,
        ip: str | None,
        agent: str | None,
        tenant: str = DEFAULT_TENANT_SLUG,
        invitation_token: str | None = None,
        registration_default: bool | None = None,
    ) -> Tokens:
        """Sign up to ``tenant`` (a slug) while its registration is open (``registration_default``
        is LITESKILL_REGISTRATION_OPEN; None skips the check, for trusted callers like the CLI), or
        with an invitation, which works even when registration is closed and decides the tenant and
        role itself. An unknown tenant answers like a closed one (``registration_closed``)."""
        from infra.identity import invitations  # it builds on this module

        email = normalize_email(email)
        check_policy(password)
        if invitation_token is None:
            # Checked before the (slow) hash so a closed tenant costs no CPU; again under the lock.
            await self._open_tenant(tenant, registration_default, create=False)
        password_hash = await self.hasher.hash(password)
        if invitation_token is not None:
            invitation = await invitations.claim(self.session, invitation_token, email)
            account, meta = await self.create_account(
                invitation.tenant_id, email, name, password_hash, meta, role=invitation.role
            )
            await invitations.accept(self.session, invitation, account.id, meta)
            return await self.start_session(account, "registration", meta, ip=ip, agent=agent)
        await self.session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _REGISTRATION_LOCK})
        # Under the lock: racing first sign-ups create the default tenant once.
        tenant_id = await self._open_tenant(tenant, registration_default, create=True)
        assert tenant_id is not None
        account, meta = await self.create_account(tenant_id, email, name, password_hash, meta)
        return await self.start_session(account, "registration", meta, ip=ip, agent=agent)

    async def _open_tenant(self, slug: str, default: bool | None, *, create: bool) -> uuid.UUID | None:
        """The tenant ``slug`` if anyone may sign up to it, else ``registration_closed``. The
        default tenant may not exist yet (an empty instance): it is created when ``create``."""
        tenant_id: uuid.UUID | None = await self.session.scalar(select(tenants.c.id).where(tenants.c.slug == slug))
        if tenant_id is None:
            is_open = slug == DEFAULT_TENANT_SLUG and default is not False
        else:
            is_open = default is None or await self.registration_open(tenant_id, default)
        if not is_open:
            raise Forbidden("Registration is closed; ask an admin for an invitation.", code="registration_closed")
        if tenant_id is None and create:
            tenant_id = await self.default_tenant()
        return tenant_id

    async def create_account(
        self,
        tenant_id: uuid.UUID,
        email: str,
        name: str | None,
        password_hash: str | None,
        meta: EventMetadata,
        *,
        role: Literal["admin", "user"] | None = None,
    ) -> tuple[Account, EventMetadata]:
        """Insert a user into ``tenant_id`` (``email`` already normalised) and record it. The first
        account of a tenant is its admin unless ``role`` says otherwise; registrations are
        serialised so two racing first sign-ups yield exactly one admin. Returns the account and
        ``meta`` re-addressed to it (tenant and actor) for the events that follow."""
        await self.session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _REGISTRATION_LOCK})
        taken = await self.session.scalar(
            select(users.c.id).where(users.c.tenant_id == tenant_id, users.c.email == email)
        )
        if taken is not None:
            raise Conflict("An account with this email exists.", code="email_taken")
        if role is None:
            first = not await self.session.scalar(
                select(func.count()).select_from(users).where(users.c.tenant_id == tenant_id)
            )
            role = "admin" if first else "user"
        user_id = new_id()
        row = (
            await self.session.execute(
                insert(users)
                .values(id=user_id, tenant_id=tenant_id, email=email, name=name, password_hash=password_hash, role=role)
                .returning(users)
            )
        ).one()
        account = _account(row)
        meta = _with(meta, tenant_id=str(tenant_id), actor=f"user:{user_id}")
        await record(
            self.events,
            f"user-{user_id}",
            ev.UserRegistered(user_id=user_id, tenant_id=tenant_id, email=email, role=role),
            meta,
        )
        return account, meta

    async def login(
        self,
        email: str,
        password: str,
        meta: EventMetadata,
        *,
        ip: str | None,
        agent: str | None,
        tenant: str = DEFAULT_TENANT_SLUG,
    ) -> Tokens | None:
        """Tokens, or None after recording the failure (the caller commits, then answers 401).
        An unknown ``tenant`` (slug) fails exactly like an unknown account: no tenant enumeration."""
        try:
            email = normalize_email(email)
        except Invalid:
            email = email.strip().lower()[:254]
        in_tenant = users.c.tenant_id == select(tenants.c.id).where(tenants.c.slug == tenant).scalar_subquery()
        row = (await self.session.execute(select(users).where(users.c.email == email, in_tenant))).first()
        ok = await self.hasher.verify(row.password_hash if row is not None else None, password)
        if row is None or not ok or row.disabled_at is not None:
            reason: Literal["unknown_account", "wrong_password", "disabled"] = (
                "unknown_account" if row is None else "wrong_password" if not ok else "disabled"
            )
            stream = (
                f"user-{row.id}"
                if row is not None
                else f"login_attempt-{hashlib.sha256(email.encode()).hexdigest()[:32]}"
            )
            tenant_id = str(row.tenant_id) if row is not None else meta.tenant_id
            failed = ev.LoginFailed(email=email, reason=reason)
            await record(self.events, stream, failed, _with(meta, tenant_id=tenant_id))
            return None
        account = _account(row)
        meta = _with(meta, tenant_id=str(account.tenant_id), actor=f"user:{account.id}")
        return await self.start_session(account, "password", meta, ip=ip, agent=agent)

    async def start_session(
        self,
        account: Account,
        method: Literal["password", "registration", "oidc"],
        meta: EventMetadata,
        *,
        ip: str | None,
        agent: str | None,
    ) -> Tokens:
        session_id = new_id()
        await self.session.execute(
            insert(auth_sessions).values(
                id=session_id,
                tenant_id=account.tenant_id,
                user_id=account.id,
                expires_at=utcnow() + SESSION_LIFETIME,
                ip=ip,
                user_agent=agent[:500] if agent else None,
            )
        )
        await record(
            self.events,
            f"user-{account.id}",
            ev.SessionStarted(session_id=session_id, user_id=account.id, method=method),
            meta,
        )
        return await self._issue(account, session_id)

    async def _issue(self, account: Account, session_id: uuid.UUID) -> Tokens:
        refresh = REFRESH_PREFIX + secrets.token_urlsafe(32)
        await self.session.execute(
            insert(refresh_tokens).values(token_hash=_hash_token(refresh), session_id=session_id)
        )
        access = self.signer.issue(
            subject=str(account.id), tenant_id=str(account.tenant_id), session_id=str(session_id)
        )
        return Tokens(
            account=account,
            session_id=session_id,
            access_token=access,
            refresh_token=refresh,
            expires_in=self.signer.access_ttl_s,
        )

    async def refresh(self, token: str, meta: EventMetadata) -> Tokens | None:
        """New tokens for an unused refresh token of a live session; None otherwise. A reused
        token revokes its session (the caller commits, then answers 401)."""
        found = (
            await self.session.execute(
                select(refresh_tokens.c.used_at, auth_sessions, users.c.disabled_at)
                .join(auth_sessions, auth_sessions.c.id == refresh_tokens.c.session_id)
                .join(users, users.c.id == auth_sessions.c.user_id)
                .where(refresh_tokens.c.token_hash == _hash_token(token))
                .with_for_update(of=auth_sessions)
            )
        ).first()
        if found is None or found.revoked_at is not None or found.disabled_at is not None:
            return None
        if found.used_at is not None:
            await self.revoke(
                found.id, found.user_id, "refresh_token_reused", _with(meta, tenant_id=str(found.tenant_id))
            )
            return None
        if found.expires_at <= utcnow():
            return None
        await self.session.execute(
            update(refresh_tokens).where(refresh_tokens.c.token_hash == _hash_token(token)).values(used_at=func.now())
        )
        await self.session.execute(
            update(auth_sessions).where(auth_sessions.c.id == found.id).values(last_used_at=func.now())
        )
        row = (await self.session.execute(select(users).where(users.c.id == found.user_id))).one()
        return await self._issue(_account(row), found.id)

    async def revoke(
        self,
        session_id: uuid.UUID,
        user_id: uuid.UUID,
        reason: Literal["logout", "refresh_token_reused", "expired", "revoked", "disabled"],
        meta: EventMetadata,
    ) -> bool:
        done = await self.session.execute(
            update(auth_sessions)
            .where(
                auth_sessions.c.id == session_id,
                auth_sessions.c.user_id == user_id,
                auth_sessions.c.revoked_at.is_(None),
            )
            .values(revoked_at=func.now(), revoked_reason=reason)
            .returning(auth_sessions.c.id)
        )
        if done.first() is None:
            return False
        await record(
            self.events,
            f"user-{user_id}",
            ev.SessionRevoked(session_id=session_id, user_id=user_id, reason=reason),
            meta,
        )
        return True


def _with(meta: EventMetadata, **changes: Any) -> EventMetadata:
    import msgspec

    return msgspec.structs.replace(meta, **changes)
