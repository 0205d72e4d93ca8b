"""Tenants and their administration: creating tenants (instance admins), a tenant's settings, and
what tenant administrators do to users (role, system permissions, disabling, name).

Everything here is scoped by a tenant id the caller passes from its principal, so a user of another
tenant is the same ``user_not_found`` as a missing one. Changes append their audit events in the
caller's transaction. A tenant always keeps one active admin: demoting or disabling the last one
is refused, with the tenant's admin rows locked so two concurrent demotions cannot both pass.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from domain.identity import admin_events as ev
from domain.identity import events as identity_events
from domain.shared.errors import Conflict, Forbidden, Invalid, NotFound
from domain.shared.events import EventMetadata
from domain.shared.ids import new_id
from domain.shared.principal import Principal
from infra.db.tables.identity import auth_sessions, tenants, users
from infra.eventstore.postgres import PostgresEventStore
from infra.identity import invitations
from infra.identity.accounts import normalize_email, record

SLUG = re.compile(r"^[a-z0-9-]{2,63}$")
Role = Literal["admin", "user"]


class TenantNotFound(NotFound):
    """No tenant with this id."""

    code = "tenant_not_found"


class UserNotFound(NotFound):
    """No user with this id in your tenant."""

    code = "user_not_found"


@dataclass(frozen=True, slots=True)
class Tenant:
    id: uuid.UUID
    slug: str
    name: str
    registration_open: bool | None
    """The admin's choice; None follows the instance default."""
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ManagedUser:
    id: uuid.UUID
    tenant_id: uuid.UUID
    email: str
    name: str | None
    role: Role
    permissions: list[str]
    disabled_at: datetime | None
    created_at: datetime
    updated_at: datetime


def _tenant(row: Any) -> Tenant:
    return Tenant(
        id=row.id,
        slug=row.slug,
        name=row.name,
        registration_open=row.registration_open,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _user(row: Any) -> ManagedUser:
    return ManagedUser(
        id=row.id,
        tenant_id=row.tenant_id,
        email=row.email,
        name=row.name,
        role=row.role,
        permissions=list(row.permissions),
        disabled_at=row.disabled_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


# ---- tenants ---------------------------------------------------------------------------------


async def create_tenant(
    session: AsyncSession, slug: str, name: str, admin_email: str, meta: EventMetadata
) -> tuple[Tenant, invitations.NewInvitation]:
    """A new tenant and an admin invitation into it. The tenant starts with registration closed
    (an admin choice its admin can change), so nobody can sign up and become its first admin
    before the invited one."""
    if not SLUG.match(slug):
        raise Invalid("Use 2 to 63 lowercase letters, digits and dashes.", code="invalid_slug", field="slug")
    admin_email = normalize_email(admin_email)
    tenant_id = new_id()
    row = (
        await session.execute(
            pg_insert(tenants)
            .values(id=tenant_id, slug=slug, name=name, registration_open=False)
            .on_conflict_do_nothing(index_elements=[tenants.c.slug])
            .returning(tenants)
        )
    ).one_or_none()
    if row is None:
        raise Conflict("A tenant with this slug exists.", code="tenant_slug_taken")
    await record(
        PostgresEventStore(session),
        ev.tenant_stream(tenant_id),
        ev.TenantCreated(tenant_id=tenant_id, slug=slug, name=name),
        meta,
    )
    invite_meta = _with(meta, tenant_id=str(tenant_id))
    invitation = await invitations.create(session, tenant_id, admin_email, "admin", None, invite_meta)
    return _tenant(row), invitation


async def get_tenant(session: AsyncSession, tenant_id: uuid.UUID) -> Tenant:
    row = (await session.execute(select(tenants).where(tenants.c.id == tenant_id))).one_or_none()
    if row is None:
        raise TenantNotFound()
    return _tenant(row)


async def list_tenants(session: AsyncSession, *, limit: int, before: uuid.UUID | None) -> list[Tenant]:
    # The default tenant's id may be older or newer than others': order by id like every list.
    query = select(tenants).order_by(tenants.c.id.desc()).limit(limit)
    if before is not None:
        query = query.where(tenants.c.id < before)
    return [_tenant(r) for r in (await session.execute(query)).all()]


async def set_registration_open(
    session: AsyncSession, tenant_id: uuid.UUID, value: bool | None, meta: EventMetadata
) -> Tenant:
    """Set (or with None, reset to the instance default) whether anyone may sign up."""
    row = (await session.execute(select(tenants).where(tenants.c.id == tenant_id).with_for_update())).one_or_none()
    if row is None:
        raise TenantNotFound()
    if row.registration_open == value:
        return _tenant(row)
    row = (
        await session.execute(
            update(tenants)
            .where(tenants.c.id == tenant_id)
            .values(registration_open=value, updated_at=func.now())
            .returning(tenants)
        )
    ).one()
    event = ev.TenantSettingsChanged(tenant_id=tenant_id, registration_open=value, changed=["registration_open"])
    await record(PostgresEventStore(session), ev.tenant_stream(tenant_id), event, meta)
    return _tenant(row)


# ---- users -----------------------------------------------------------------------------------


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def list_users(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    limit: int,
    before: uuid.UUID | None,
    q: str | None,
    disabled: bool | None,
) -> list[ManagedUser]:
    """Users of the tenant, newest first; ``q`` matches the start of the email or the name."""
    query = select(users).where(users.c.tenant_id == tenant_id).order_by(users.c.id.desc()).limit(limit)
    if q:
        pattern = _like_prefix(q.strip().lower())
        query = query.where(
            or_(users.c.email.like(pattern, escape="\\"), func.lower(users.c.name).like(pattern, escape="\\"))
        )
    if disabled is not None:
        query = query.where(users.c.disabled_at.is_not(None) if disabled else users.c.disabled_at.is_(None))
    if before is not None:
        query = query.where(users.c.id < before)
    return [_user(r) for r in (await session.execute(query)).all()]


async def get_user(session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID) -> ManagedUser:
    row = (
        await session.execute(select(users).where(users.c.id == user_id, users.c.tenant_id == tenant_id))
    ).one_or_none()
    if row is None:
        raise UserNotFound()
    return _user(row)


@dataclass(frozen=True, slots=True)
class UserChanges:
    """What an administrator asks to change; None leaves a field as it is (``name`` uses ``set_name``)."""

    role: Role | None = None
    disabled: bool | None = None
    permissions: list[str] | None = None
    set_name: bool = False
    name: str | None = None


async def update_user(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID, changes: UserChanges, meta: EventMetadata
) -> ManagedUser:
    """Apply ``changes`` to a user of the caller's tenant. The caller holds ``manage_users``; only
    admins change roles and permissions or touch admins. Disabling ends the user's sessions."""
    tenant_id = principal.tenant_id
    # Lock the tenant's admins first (then the target), in one order for every caller, so the
    # last-admin check below cannot race another demotion.
    await session.execute(
        select(users.c.id)
        .where(users.c.tenant_id == tenant_id, users.c.role == "admin")
        .order_by(users.c.id)
        .with_for_update()
    )
    row = (
        await session.execute(
            select(users).where(users.c.id == user_id, users.c.tenant_id == tenant_id).with_for_update()
        )
    ).one_or_none()
    if row is None:
        raise UserNotFound()
    if not principal.is_admin:
        if changes.role is not None or changes.permissions is not None:
            raise Forbidden("Only admins change roles and permissions.")
        if row.role == "admin":
            raise Forbidden("Only admins change other admins.")
    values: dict[str, Any] = {}
    if changes.role is not None and changes.role != row.role:
        values["role"] = changes.role
    if changes.permissions is not None:
        wanted = sorted(set(changes.permissions))
        if wanted != sorted(row.permissions):
            values["permissions"] = wanted
    if changes.set_name and changes.name != row.name:
        values["name"] = changes.name
    if changes.disabled is not None and changes.disabled != (row.disabled_at is not None):
        if changes.disabled and row.id == principal.user_id:
            raise Conflict("You cannot disable yourself.", code="cannot_disable_self")
        values["disabled_at"] = func.now() if changes.disabled else None
    stays_admin = values.get("role", row.role) == "admin" and (
        values["disabled_at"] is None if "disabled_at" in values else row.disabled_at is None
    )
    if row.role == "admin" and row.disabled_at is None and not stays_admin:
        active_admins = await session.scalar(
            select(func.count())
            .select_from(users)
            .where(users.c.tenant_id == tenant_id, users.c.role == "admin", users.c.disabled_at.is_(None))
        )
        if (active_admins or 0) <= 1:
            raise Conflict("This is the tenant's last active admin.", code="last_admin")
    if not values:
        return _user(row)
    row = (
        await session.execute(
            update(users).where(users.c.id == user_id).values(**values, updated_at=func.now()).returning(users)
        )
    ).one()
    store = PostgresEventStore(session)
    changed = sorted("disabled" if k == "disabled_at" else k for k in values)
    event = ev.UserUpdated(
        user_id=user_id,
        changed=changed,
        role=row.role,
        permissions=list(row.permissions),
        disabled=row.disabled_at is not None,
        name=row.name,
    )
    await record(store, f"user-{user_id}", event, meta)
    if "disabled_at" in values and row.disabled_at is not None:
        ended = await session.execute(
            update(auth_sessions)
            .where(auth_sessions.c.user_id == user_id, auth_sessions.c.revoked_at.is_(None))
            .values(revoked_at=func.now(), revoked_reason="disabled")
            .returning(auth_sessions.c.id)
        )
        for (session_id,) in ended.all():
            revoked = identity_events.SessionRevoked(session_id=session_id, user_id=user_id, reason="disabled")
            await record(store, f"user-{user_id}", revoked, meta)
    return _user(row)


def _with(meta: EventMetadata, **changes: Any) -> EventMetadata:
    import msgspec

    return msgspec.structs.replace(meta, **changes)
