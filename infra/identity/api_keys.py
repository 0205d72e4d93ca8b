"""Personal API keys: create, list, revoke, and resolve a presented key to a ``Principal``.

A key is ``lsk_<prefix>_<secret>``: ``prefix`` is 8 random alphanumerics (the public lookup part,
shown in lists), ``secret`` 32 random bytes in base64url. Only the prefix and a SHA-256 of the whole
key are stored; the key is returned once, at creation. With 256 bits of entropy a fast hash is the
right one (nothing to brute-force), and the comparison is constant-time.

Writes run inside the caller's write transaction and append their audit events there, to the
owner's stream ``user-<id>``. Events name the key by id, name and prefix, never by its secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.identity import api_key_events as ev
from domain.shared.clock import utcnow
from domain.shared.errors import NotFound
from domain.shared.events import EventMetadata
from domain.shared.ids import new_id
from domain.shared.principal import Principal
from domain.shared.scopes import effective as effective_scopes
from infra.db.tables.api_keys import api_keys
from infra.db.tables.identity import tenants, users
from infra.eventstore.postgres import PostgresEventStore
from infra.identity.accounts import DEFAULT_TENANT_SLUG, record

KEY_PREFIX = "lsk_"
PREFIX_CHARS = 8
SECRET_BYTES = 32
TOUCH_INTERVAL = timedelta(minutes=1)
"""``last_used_at`` moves at most this often, so authenticated requests are not all writes."""

_ALPHABET = string.ascii_letters + string.digits
_SECRET_CHARS = len(secrets.token_urlsafe(SECRET_BYTES))  # 43
_KEY = re.compile(rf"^{KEY_PREFIX}([A-Za-z0-9]{{{PREFIX_CHARS}}})_([A-Za-z0-9_-]{{{_SECRET_CHARS}}})$")


class ApiKeyNotFound(NotFound):
    """No API key with this id."""

    code = "api_key_not_found"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewApiKey:
    api_key: ApiKey
    key: str
    """The full key: returned once, stored nowhere."""


@dataclass(frozen=True, slots=True)
class KeyUse:
    """A verified key: who it acts as, and whether its ``last_used_at`` is due for an update."""

    principal: Principal
    key_id: uuid.UUID
    touch: bool
    expires_at: datetime | None = None


def is_api_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


def _hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _api_key(row: Row[Any]) -> ApiKey:
    return ApiKey(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        prefix=row.prefix,
        scopes=list(row.scopes),
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
    )


async def create(
    session: AsyncSession,
    principal: Principal,
    name: str,
    scopes: Sequence[str],
    expires_at: datetime | None,
    meta: EventMetadata,
) -> NewApiKey:
    """A new key of ``principal``'s user, in its tenant. The caller checks the inputs' rules."""
    for _ in range(5):  # 62^8 prefixes: a clash is all but impossible, but cheap to rule out
        prefix = "".join(secrets.choice(_ALPHABET) for _ in range(PREFIX_CHARS))
        if await session.scalar(select(api_keys.c.id).where(api_keys.c.prefix == prefix)) is None:
            break
    else:  # pragma: no cover - astronomically unlikely
        raise RuntimeError("could not pick a free API key prefix")
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    unique_scopes = list(dict.fromkeys(scopes))
    key_id = new_id()
    row = (
        await session.execute(
            insert(api_keys)
            .values(
                id=key_id,
                tenant_id=principal.tenant_id,
                user_id=principal.user_id,
                name=name,
                prefix=prefix,
                secret_hash=_hash(key),
                scopes=unique_scopes,
                expires_at=expires_at,
            )
            .returning(api_keys)
        )
    ).one()
    await record(
        PostgresEventStore(session),
        f"user-{principal.user_id}",
        ev.ApiKeyCreated(
            api_key_id=key_id,
            user_id=principal.user_id,
            name=name,
            prefix=prefix,
            scopes=unique_scopes,
            expires_at=expires_at,
        ),
        meta,
    )
    return NewApiKey(api_key=_api_key(row), key=key)


async def list_keys(
    session: AsyncSession, principal: Principal, *, limit: int, before: uuid.UUID | None = None
) -> list[ApiKey]:
    """Up to ``limit`` unrevoked keys of the caller, newest first, older than ``before`` if given."""
    query = (
        select(api_keys)
        .where(
            api_keys.c.user_id == principal.user_id,
            api_keys.c.tenant_id == principal.tenant_id,
            api_keys.c.revoked_at.is_(None),
        )
        .order_by(api_keys.c.id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(api_keys.c.id < before)
    return [_api_key(r) for r in (await session.execute(query)).all()]


async def revoke(session: AsyncSession, principal: Principal, key_id: uuid.UUID, meta: EventMetadata) -> None:
    """Revoke one of the caller's keys; any other id (someone else's, revoked, missing) is
    ``ApiKeyNotFound``."""
    done = (
        await session.execute(
            update(api_keys)
            .where(
                api_keys.c.id == key_id,
                api_keys.c.user_id == principal.user_id,
                api_keys.c.tenant_id == principal.tenant_id,
                api_keys.c.revoked_at.is_(None),
            )
            .values(revoked_at=func.now())
            .returning(api_keys.c.id)
        )
    ).first()
    if done is None:
        raise ApiKeyNotFound()
    await record(
        PostgresEventStore(session),
        f"user-{principal.user_id}",
        ev.ApiKeyRevoked(api_key_id=key_id, user_id=principal.user_id, reason="revoked_by_owner"),
        meta,
    )


async def verify(session: AsyncSession, token: str, *, now: datetime | None = None) -> KeyUse | None:
    """The use of a presented key, or None when it is malformed, unknown, wrong, revoked,
    expired, or its user is disabled."""
    match = _KEY.match(token)
    if match is None:
        return None
    row = (
        await session.execute(
            select(
                api_keys.c.id,
                api_keys.c.tenant_id,
                api_keys.c.user_id,
                api_keys.c.secret_hash,
                api_keys.c.scopes,
                api_keys.c.expires_at,
                api_keys.c.last_used_at,
                api_keys.c.revoked_at,
                users.c.role,
                users.c.permissions,
                users.c.disabled_at,
                users.c.tenant_id.label("user_tenant_id"),
                tenants.c.slug.label("tenant_slug"),
            )
            .join(users, users.c.id == api_keys.c.user_id)
            .join(tenants, tenants.c.id == users.c.tenant_id)
            .where(api_keys.c.prefix == match.group(1))
        )
    ).first()
    if row is None or not hmac.compare_digest(row.secret_hash, _hash(token)):
        return None
    now = now or utcnow()
    if row.revoked_at is not None or row.disabled_at is not None or row.user_tenant_id != row.tenant_id:
        return None
    if row.expires_at is not None and row.expires_at <= now:
        return None
    principal = Principal(
        user_id=row.user_id,
        tenant_id=row.tenant_id,
        role=row.role,
        session_id=None,
        scopes=effective_scopes(row.scopes),
        permissions=frozenset(row.permissions),
        instance_admin=row.role == "admin" and row.tenant_slug == DEFAULT_TENANT_SLUG,
        api_key_id=row.id,
    )
    touch = row.last_used_at is None or row.last_used_at <= now - TOUCH_INTERVAL
    return KeyUse(principal=principal, key_id=row.id, touch=touch, expires_at=row.expires_at)


async def resolve(session: AsyncSession, token: str) -> Principal | None:
    """The principal behind a presented key (``verify`` without the usage bookkeeping)."""
    use = await verify(session, token)
    return use.principal if use is not None else None


async def touch(session: AsyncSession, key_id: uuid.UUID) -> None:
    """Record a use of the key, unless another request already did within ``TOUCH_INTERVAL``."""
    await session.execute(
        update(api_keys)
        .where(
            api_keys.c.id == key_id,
            or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at <= func.now() - TOUCH_INTERVAL),
        )
        .values(last_used_at=func.now())
    )
