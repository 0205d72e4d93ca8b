"""OIDC providers of a tenant (create, read, update, delete) and signing in through one: linking the
verified identity ``(tenant, issuer, sub)`` to a user, creating the user when registration is open.

Client secrets are stored as secrets-service tokens bound to ``oidc_provider:<id>``; nothing here
returns or records them in plaintext. Writes run inside the caller's write transaction and append
their audit events there (provider changes to ``oidc_provider-<id>``).

An unlinked identity whose email already belongs to an account of the tenant is never linked
automatically: whoever controls an IdP account claiming that email would take the account over.
The owner signs in with the password first (linking from a signed-in session is left for later).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Row, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from domain.identity import oidc_events as ev
from domain.shared.errors import Conflict, Forbidden, NotFound
from domain.shared.events import EventMetadata
from domain.shared.ids import new_id
from infra.db.tables.identity import oidc_providers, user_identities, users
from infra.eventstore.postgres import PostgresEventStore
from infra.identity.accounts import Account, Accounts, normalize_email, record
from infra.secrets.envelope import Kek
from infra.secrets.service import SecretsService

SECRET_FIELD = "client_secret"  # noqa: S105 - a field name, not a secret


class OidcProviderNotFound(NotFound):
    """No OIDC provider with this id or slug."""

    code = "oidc_provider_not_found"


@dataclass(frozen=True, slots=True)
class OidcProvider:
    id: uuid.UUID
    tenant_id: uuid.UUID
    slug: str
    name: str
    issuer: str
    client_id: str
    secret_token: str | None
    scopes: list[str]
    enabled: bool
    created_at: datetime
    updated_at: datetime

    @property
    def has_client_secret(self) -> bool:
        return self.secret_token is not None


def _provider(row: Row[Any]) -> OidcProvider:
    return OidcProvider(
        id=row.id,
        tenant_id=row.tenant_id,
        slug=row.slug,
        name=row.name,
        issuer=row.issuer,
        client_id=row.client_id,
        secret_token=row.client_secret,
        scopes=list(row.scopes),
        enabled=row.enabled,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _record_name(provider_id: uuid.UUID) -> str:
    return f"oidc_provider:{provider_id}"


def _stream(provider_id: uuid.UUID) -> str:
    return f"oidc_provider-{provider_id}"


async def create(
    session: AsyncSession,
    kek: Kek,
    *,
    tenant_id: uuid.UUID,
    created_by: uuid.UUID | None,
    slug: str,
    name: str,
    issuer: str,
    client_id: str,
    client_secret: str | None,
    scopes: list[str],
    enabled: bool,
    meta: EventMetadata,
) -> OidcProvider:
    provider_id = new_id()
    token = None
    if client_secret is not None:
        token = await SecretsService(session, kek).encrypt(
            str(tenant_id), _record_name(provider_id), SECRET_FIELD, client_secret
        )
    row = (
        await session.execute(
            insert(oidc_providers)
            .values(
                id=provider_id,
                tenant_id=tenant_id,
                slug=slug,
                name=name,
                issuer=issuer,
                client_id=client_id,
                client_secret=token,
                scopes=scopes,
                enabled=enabled,
                created_by=created_by,
            )
            .on_conflict_do_nothing(index_elements=[oidc_providers.c.slug])
            .returning(oidc_providers)
        )
    ).first()
    if row is None:
        raise Conflict("Another OIDC provider already uses this slug.", code="oidc_provider_slug_taken")
    provider = _provider(row)
    await record(
        PostgresEventStore(session),
        _stream(provider_id),
        ev.OidcProviderCreated(
            provider_id=provider_id,
            slug=slug,
            name=name,
            issuer=issuer,
            client_id=client_id,
            scopes=scopes,
            enabled=enabled,
            has_client_secret=token is not None,
        ),
        meta,
    )
    return provider


async def get(
    session: AsyncSession, tenant_id: uuid.UUID, provider_id: uuid.UUID, *, lock: bool = False
) -> OidcProvider:
    query = select(oidc_providers).where(oidc_providers.c.id == provider_id, oidc_providers.c.tenant_id == tenant_id)
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).first()
    if row is None:
        raise OidcProviderNotFound()
    return _provider(row)


async def by_slug(session: AsyncSession, slug: str) -> OidcProvider:
    """An enabled provider; a disabled one is as unknown as a missing one."""
    row = (
        await session.execute(select(oidc_providers).where(oidc_providers.c.slug == slug, oidc_providers.c.enabled))
    ).first()
    if row is None:
        raise OidcProviderNotFound()
    return _provider(row)


async def list_providers(
    session: AsyncSession, tenant_id: uuid.UUID, *, limit: int, before: uuid.UUID | None = None
) -> list[OidcProvider]:
    query = (
        select(oidc_providers)
        .where(oidc_providers.c.tenant_id == tenant_id)
        .order_by(oidc_providers.c.id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(oidc_providers.c.id < before)
    return [_provider(r) for r in (await session.execute(query)).all()]


async def update_provider(
    session: AsyncSession,
    kek: Kek,
    tenant_id: uuid.UUID,
    provider_id: uuid.UUID,
    changes: dict[str, Any],
    client_secret: str | msgspec.UnsetType | None,
    meta: EventMetadata,
) -> OidcProvider:
    """Apply ``changes`` (column -> value) and, unless UNSET, set (str) or clear (None) the secret.
    Only fields whose value actually changes are written and named in the event."""
    current = await get(session, tenant_id, provider_id, lock=True)
    values = {k: v for k, v in changes.items() if getattr(current, k) != v}
    changed = sorted(values)
    if not isinstance(client_secret, msgspec.UnsetType):
        if client_secret is None:
            if current.secret_token is not None:
                values["client_secret"] = None
                changed.append("client_secret")
        else:
            values["client_secret"] = await SecretsService(session, kek).encrypt(
                str(tenant_id), _record_name(provider_id), SECRET_FIELD, client_secret
            )
            changed.append("client_secret")
    if not values:
        return current
    row = (
        await session.execute(
            update(oidc_providers)
            .where(oidc_providers.c.id == provider_id)
            .values(**values, updated_at=func.now())
            .returning(oidc_providers)
        )
    ).one()
    await record(
        PostgresEventStore(session),
        _stream(provider_id),
        ev.OidcProviderUpdated(provider_id=provider_id, changed=changed),
        meta,
    )
    return _provider(row)


async def delete_provider(
    session: AsyncSession, tenant_id: uuid.UUID, provider_id: uuid.UUID, meta: EventMetadata
) -> None:
    """Delete the provider; its linked identities go with it (their users stay)."""
    current = await get(session, tenant_id, provider_id, lock=True)
    await session.execute(delete(oidc_providers).where(oidc_providers.c.id == provider_id))
    await record(
        PostgresEventStore(session),
        _stream(provider_id),
        ev.OidcProviderDeleted(provider_id=provider_id, slug=current.slug),
        meta,
    )


async def client_secret(session: AsyncSession, kek: Kek, provider: OidcProvider) -> str | None:
    if provider.secret_token is None:
        return None
    return await SecretsService(session, kek).decrypt(
        str(provider.tenant_id), _record_name(provider.id), SECRET_FIELD, provider.secret_token
    )


async def record_failure(
    session: AsyncSession, provider: OidcProvider, reason: ev.OidcFailure, subject: str | None, meta: EventMetadata
) -> None:
    meta = msgspec.structs.replace(meta, tenant_id=str(provider.tenant_id))
    await record(
        PostgresEventStore(session),
        _stream(provider.id),
        ev.OidcLoginFailed(provider_id=provider.id, reason=reason, subject=subject),
        meta,
    )


class OidcUserDisabled(Exception):
    """The identity is linked to a disabled user (the caller records the failure and answers 401)."""


async def sign_in(
    accounts: Accounts,
    provider: OidcProvider,
    claims: dict[str, Any],
    *,
    registration_default: bool,
    meta: EventMetadata,
) -> tuple[Account, EventMetadata]:
    """The account behind verified ID token ``claims``: the linked one, else a new one linked now.

    Raises ``OidcUserDisabled``, ``Forbidden`` (``registration_closed``) or ``Conflict``
    (``account_exists``) when no account may be signed in."""
    session = accounts.session
    subject = str(claims["sub"])
    raw_email = claims.get("email")
    meta = msgspec.structs.replace(meta, tenant_id=str(provider.tenant_id))
    linked = (
        await session.execute(
            select(users, user_identities.c.id.label("identity_id"))
            .join(user_identities, user_identities.c.user_id == users.c.id)
            .where(
                user_identities.c.tenant_id == provider.tenant_id,
                user_identities.c.issuer == provider.issuer,
                user_identities.c.subject == subject,
            )
        )
    ).first()
    if linked is not None:
        if linked.disabled_at is not None:
            raise OidcUserDisabled()
        await session.execute(
            update(user_identities)
            .where(user_identities.c.id == linked.identity_id)
            .values(last_login_at=func.now(), email=raw_email if isinstance(raw_email, str) else None)
        )
        account = Account(
            id=linked.id,
            tenant_id=linked.tenant_id,
            email=linked.email,
            name=linked.name,
            role=linked.role,
            created_at=linked.created_at,
        )
        return account, msgspec.structs.replace(meta, actor=f"user:{account.id}")

    if not await accounts.registration_open(provider.tenant_id, registration_default):
        raise Forbidden(
            "Sign-up is closed in this organisation; ask an admin for an invitation.", code="registration_closed"
        )
    if not isinstance(raw_email, str):
        raise Forbidden("The identity provider did not share an email address.", code="oidc_email_required")
    if claims.get("email_verified") is False:
        # An unverified address would let anyone squat a colleague's email in this tenant.
        raise Forbidden("The identity provider has not verified this email address.", code="oidc_email_unverified")
    email = normalize_email(raw_email)
    taken = await session.scalar(
        select(users.c.id).where(users.c.tenant_id == provider.tenant_id, users.c.email == email)
    )
    if taken is not None:
        raise Conflict(
            "An account with this email already exists. Sign in with your password first; "
            "signing in with this provider does not take over an existing account.",
            code="account_exists",
        )
    name = claims.get("name")
    account, meta = await accounts.create_account(
        provider.tenant_id,
        email,
        name[:200] if isinstance(name, str) and name.strip() else None,
        None,
        meta,
    )
    identity_id = new_id()
    await session.execute(
        insert(user_identities).values(
            id=identity_id,
            tenant_id=provider.tenant_id,
            user_id=account.id,
            provider_id=provider.id,
            issuer=provider.issuer,
            subject=subject,
            email=email,
            last_login_at=func.now(),
        )
    )
    await record(
        accounts.events,
        f"user-{account.id}",
        ev.OidcIdentityLinked(
            identity_id=identity_id,
            user_id=account.id,
            provider_id=provider.id,
            issuer=provider.issuer,
            subject=subject,
            email=email,
        ),
        meta,
    )
    return account, meta


async def account_of(session: AsyncSession, user_id: uuid.UUID, tenant_id: uuid.UUID) -> Account | None:
    """The enabled account ``user_id`` of ``tenant_id``, for trading a one-time login code."""
    row = (
        await session.execute(
            select(users).where(users.c.id == user_id, users.c.tenant_id == tenant_id, users.c.disabled_at.is_(None))
        )
    ).first()
    if row is None:
        return None
    return Account(
        id=row.id, tenant_id=row.tenant_id, email=row.email, name=row.name, role=row.role, created_at=row.created_at
    )
