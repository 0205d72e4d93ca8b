"""Provider connections of a tenant: rows, their write-only credentials and the host those are bound to.

Credentials (API key, secret headers, AWS secret key and session token) are one JSON object
encrypted by the secrets service (record ``provider:<id>``, field ``credentials``); the row keeps
only non-secret facts about them (which fields are set, the key's last four characters, header
names) in ``config.secret_info``. ``credential_host`` is the host they were saved for: a change of
base URL to another host must bring new credentials for every stored one (422
``credentials_host_mismatch`` otherwise), and the HTTP clients built from a provider refuse to
send a request anywhere else.

Providers declared from the environment (``source='env'``) live in the default tenant, are
re-declared at each start, and every user of that tenant may use them (a viewer role without a
grant); only the environment changes them.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.shared import authz
from domain.shared.authz import Action, Role
from domain.shared.errors import Forbidden, Invalid, NotFound
from domain.shared.principal import Principal
from infra.access import acl
from infra.db.tables.llm import llm_settings, providers
from infra.net.outbound import CredentialsHostMismatch, OutboundGuard, url_host
from infra.secrets.envelope import Kek
from infra.secrets.service import SecretsService

ProviderKind = Literal["openai", "openai_compatible", "anthropic", "bedrock"]
KINDS: tuple[str, ...] = ("openai", "openai_compatible", "anthropic", "bedrock")
SECRET_FIELDS = ("api_key", "headers", "aws_secret_access_key", "aws_session_token")
DEFAULT_URLS: dict[str, str] = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}
CREDENTIALS_FIELD = "credentials"


class ProviderNotFound(NotFound):
    """No provider with this id visible to you."""

    code = "provider_not_found"


@dataclass(frozen=True, slots=True)
class Provider:
    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    kind: str
    base_url: str | None
    config: dict[str, Any]
    """Non-secret settings; ``secret_info`` describes the stored credentials."""
    has_credentials: bool
    credentials_token: str | None
    credential_host: str | None
    source: str
    enabled: bool
    version: int
    created_at: datetime
    updated_at: datetime

    @property
    def secret_info(self) -> dict[str, Any]:
        info = self.config.get("secret_info")
        return info if isinstance(info, dict) else {}

    @property
    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.config.items() if k != "secret_info"}


def provider_of(row: Any) -> Provider:
    return Provider(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        kind=row.kind,
        base_url=row.base_url,
        config=dict(row.config or {}),
        has_credentials=row.credentials is not None,
        credentials_token=row.credentials,
        credential_host=row.credential_host,
        source=row.source,
        enabled=row.enabled,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def effective_url(kind: str, base_url: str | None, config: dict[str, Any]) -> str | None:
    """Where requests go: the base URL, else the kind's public API (Bedrock: its regional endpoint)."""
    if base_url:
        return base_url
    if kind == "bedrock":
        region = config.get("region") or "us-east-1"
        return f"https://bedrock-runtime.{region}.amazonaws.com"
    return DEFAULT_URLS.get(kind)


def credential_host_for(kind: str, base_url: str | None, config: dict[str, Any]) -> str | None:
    url = effective_url(kind, base_url, config)
    return url_host(url) if url else None


def secret_info(credentials: dict[str, Any]) -> dict[str, Any]:
    """What a response may say about credentials: which are set, the key's hint, header names."""
    info: dict[str, Any] = {"fields": sorted(k for k, v in credentials.items() if v)}
    key = credentials.get("api_key")
    if isinstance(key, str) and key:
        info["api_key_hint"] = key[-4:] if len(key) >= 12 else None
    headers = credentials.get("headers")
    if isinstance(headers, dict) and headers:
        info["header_names"] = sorted(headers)
    return info


def visible_clause(principal: Principal) -> ColumnElement[bool]:
    """Providers the caller may see: granted ones, and the environment's of their tenant."""
    return (providers.c.tenant_id == principal.tenant_id) & or_(
        acl.visible_ids_clause(principal, "provider", providers.c.id), providers.c.source == "env"
    )


async def role_on(session: AsyncSession, principal: Principal, row: Any) -> Role | None:
    role = await acl.effective_role(session, principal, "provider", row.id)
    if role is None and row.source == "env":
        return "viewer"
    return role


async def load(
    session: AsyncSession, principal: Principal, provider_id: uuid.UUID, action: Action, *, lock: bool = False
) -> Provider:
    """The provider if the caller's role allows ``action``: 404 if it is invisible, 403 otherwise."""
    query = select(providers).where(providers.c.id == provider_id, providers.c.tenant_id == principal.tenant_id)
    row = (await session.execute(query.with_for_update() if lock else query)).one_or_none()
    if row is None:
        raise ProviderNotFound()
    role = await role_on(session, principal, row)
    if role is None:
        raise ProviderNotFound()
    if not authz.can(role, action):
        detail = "Providers declared from the environment change only there." if row.source == "env" else None
        raise Forbidden(detail or f"Your role ({role}) does not allow this action ({action}).")
    return provider_of(row)


async def decrypt(session: AsyncSession, kek: Kek, provider: Provider) -> dict[str, Any]:
    if provider.credentials_token is None:
        return {}
    plain = await SecretsService(session, kek).decrypt(
        str(provider.tenant_id), f"provider:{provider.id}", CREDENTIALS_FIELD, provider.credentials_token
    )
    value = json.loads(plain)
    return value if isinstance(value, dict) else {}


async def encrypt(
    session: AsyncSession, kek: Kek, tenant_id: uuid.UUID, provider_id: uuid.UUID, credentials: dict[str, Any]
) -> str | None:
    clean = {k: v for k, v in credentials.items() if v}
    if not clean:
        return None
    return await SecretsService(session, kek).encrypt(
        str(tenant_id), f"provider:{provider_id}", CREDENTIALS_FIELD, json.dumps(clean, sort_keys=True)
    )


def check_host_binding(
    stored_host: str | None, new_host: str | None, stored_fields: list[str], sent_fields: set[str]
) -> None:
    """A new host gets no stored credential: every one must be sent again (or cleared with null)."""
    if stored_host is None or new_host == stored_host:
        return
    missing = sorted(set(stored_fields) - sent_fields)
    if missing:
        raise CredentialsHostMismatch(
            f"The stored credentials belong to {stored_host}. Send {', '.join(missing)} again (or null to"
            f" clear) when moving the provider to {new_host}."
        )


def validate_shape(kind: str, base_url: str | None, config: dict[str, Any]) -> None:
    if kind == "openai_compatible" and not base_url:
        raise Invalid("An openai_compatible provider needs a base_url.", code="base_url_required")
    if kind == "bedrock" and not config.get("region"):
        raise Invalid("A bedrock provider needs config.region.", code="region_required")


async def tenant_allow(session: AsyncSession, tenant_id: uuid.UUID) -> list[str]:
    value = await session.scalar(select(llm_settings.c.outbound_allow).where(llm_settings.c.tenant_id == tenant_id))
    return [str(v) for v in value] if isinstance(value, list) else []


async def guard_for(session: AsyncSession, base: OutboundGuard, tenant_id: uuid.UUID) -> OutboundGuard:
    return base.with_allow(await tenant_allow(session, tenant_id))
