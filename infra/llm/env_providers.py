"""Providers declared from the environment (LITESKILL_OPENAI_API_KEY, ...), upserted into the default
tenant at start (``source='env'``) so a new install works in one step. Idempotent: an unchanged
declaration changes nothing; a changed key or URL updates the row (new version, audit event)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.llm import provider_events as ev
from domain.shared.events import EventMetadata
from domain.shared.ids import new_id
from infra.db.engine import Database
from infra.db.tables.identity import tenants
from infra.db.tables.llm import providers
from infra.eventstore.postgres import PostgresEventStore
from infra.identity.accounts import DEFAULT_TENANT_SLUG, record
from infra.llm import providers as prov
from infra.secrets.service import load_kek
from infra.settings import Settings


@dataclass(frozen=True, slots=True)
class Declared:
    name: str
    kind: str
    base_url: str | None
    credentials: dict[str, Any]
    config: dict[str, Any]


def declared(settings: Settings) -> list[Declared]:
    s = settings.llm
    out: list[Declared] = []
    if s.openai_api_key:
        out.append(Declared("OpenAI (env)", "openai", s.openai_base_url, {"api_key": str(s.openai_api_key)}, {}))
    if s.anthropic_api_key:
        out.append(Declared("Anthropic (env)", "anthropic", None, {"api_key": str(s.anthropic_api_key)}, {}))
    if s.openai_compatible_base_url:
        key = {"api_key": str(s.openai_compatible_api_key)} if s.openai_compatible_api_key else {}
        out.append(Declared("OpenAI-compatible (env)", "openai_compatible", s.openai_compatible_base_url, key, {}))
    if s.bedrock_region:
        out.append(Declared("Bedrock (env)", "bedrock", None, {}, {"region": s.bedrock_region}))
    return out


async def upsert(session: AsyncSession, settings: Settings, tenant_id: uuid.UUID, item: Declared) -> str:
    """Declare one provider; returns ``created``, ``updated`` or ``unchanged``."""
    kek = load_kek(settings)
    meta = EventMetadata(actor="system:env", tenant_id=str(tenant_id))
    row = (
        await session.execute(
            select(providers).where(providers.c.tenant_id == tenant_id, providers.c.name == item.name).with_for_update()
        )
    ).one_or_none()
    host = prov.credential_host_for(item.kind, item.base_url, item.config)
    config = {**item.config, "secret_info": prov.secret_info(item.credentials)}
    if row is None:
        provider_id = new_id()
        token = await prov.encrypt(session, kek, tenant_id, provider_id, item.credentials)
        await session.execute(
            insert(providers).values(
                id=provider_id,
                tenant_id=tenant_id,
                name=item.name,
                kind=item.kind,
                base_url=item.base_url,
                config=config,
                credentials=token,
                credential_host=host,
                source="env",
                version=1,
            )
        )
        created = ev.ProviderCreated(
            provider_id=provider_id,
            name=item.name,
            kind=item.kind,
            base_url=item.base_url,
            source="env",
            secrets=sorted(item.credentials),
        )
        await record(PostgresEventStore(session), ev.provider_stream(provider_id), created, meta)
        return "created"
    current = prov.provider_of(row)
    stored = await prov.decrypt(session, kek, current)
    changed = [
        name
        for name, same in (
            ("kind", current.kind == item.kind),
            ("base_url", current.base_url == item.base_url),
            ("config", current.settings == item.config),
            ("credentials", stored == item.credentials),
            ("source", current.source == "env"),
        )
        if not same
    ]
    if not changed:
        return "unchanged"
    token = await prov.encrypt(session, kek, tenant_id, current.id, item.credentials)
    await session.execute(
        update(providers)
        .where(providers.c.id == current.id)
        .values(
            kind=item.kind,
            base_url=item.base_url,
            config=config,
            credentials=token,
            credential_host=host,
            source="env",
            version=current.version + 1,
        )
    )
    updated = ev.ProviderUpdated(provider_id=current.id, changed=changed, version=current.version + 1)
    await record(PostgresEventStore(session), ev.provider_stream(current.id), updated, meta)
    return "updated"


async def declare_env_providers(db: Database, settings: Settings) -> dict[str, str]:
    """Upsert every provider the environment declares into the default tenant (one transaction)."""
    items = declared(settings)
    if not items:
        return {}
    async with db.write() as session:
        tenant_id = await session.scalar(select(tenants.c.id).where(tenants.c.slug == DEFAULT_TENANT_SLUG))
        if tenant_id is None:  # a fresh instance: the default tenant registration would create
            tenant_id = new_id()
            await session.execute(insert(tenants).values(id=tenant_id, slug=DEFAULT_TENANT_SLUG, name="Default"))
        return {item.name: await upsert(session, settings, tenant_id, item) for item in items}
