"""A tenant's LLM settings (``llm_settings``): default chat and embedding models and the admin's
outbound allow-list. Defaults must name a model of the right kind in the tenant."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from domain.llm import provider_events as ev
from domain.shared.errors import Invalid
from domain.shared.events import EventMetadata
from infra.db.tables.llm import llm_settings, models
from infra.eventstore.postgres import PostgresEventStore
from infra.identity.accounts import record
from infra.net.outbound import parse_allow_entry

UNCHANGED: Any = object()


@dataclass(frozen=True, slots=True)
class LlmSettings:
    default_chat_model_id: uuid.UUID | None = None
    default_embedding_model_id: uuid.UUID | None = None
    outbound_allow: tuple[str, ...] = ()


async def get(session: AsyncSession, tenant_id: uuid.UUID) -> LlmSettings:
    row = (await session.execute(select(llm_settings).where(llm_settings.c.tenant_id == tenant_id))).one_or_none()
    if row is None:
        return LlmSettings()
    return LlmSettings(row.default_chat_model_id, row.default_embedding_model_id, tuple(row.outbound_allow or ()))


async def _check_model(session: AsyncSession, tenant_id: uuid.UUID, model_id: uuid.UUID, kind: str, field: str) -> None:
    found = await session.scalar(select(models.c.kind).where(models.c.id == model_id, models.c.tenant_id == tenant_id))
    if found != kind:
        raise Invalid(f"{field} must name a {kind} model of your tenant.", code="invalid_default_model")


def normalise_allow(entries: list[str]) -> list[str]:
    out: list[str] = []
    for entry in entries:
        try:
            _, value = parse_allow_entry(entry)
        except ValueError as exc:
            raise Invalid(str(exc), code="invalid_outbound_allow") from None
        text = str(value)
        if text not in out:
            out.append(text)
    return out


async def update(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    meta: EventMetadata,
    *,
    default_chat_model_id: Any = UNCHANGED,
    default_embedding_model_id: Any = UNCHANGED,
    outbound_allow: Any = UNCHANGED,
) -> LlmSettings:
    current = await get(session, tenant_id)
    values: dict[str, Any] = {}
    if default_chat_model_id is not UNCHANGED and default_chat_model_id != current.default_chat_model_id:
        if default_chat_model_id is not None:
            await _check_model(session, tenant_id, default_chat_model_id, "chat", "default_chat_model_id")
        values["default_chat_model_id"] = default_chat_model_id
    if default_embedding_model_id is not UNCHANGED and default_embedding_model_id != current.default_embedding_model_id:
        if default_embedding_model_id is not None:
            await _check_model(
                session, tenant_id, default_embedding_model_id, "embedding", "default_embedding_model_id"
            )
        values["default_embedding_model_id"] = default_embedding_model_id
    if outbound_allow is not UNCHANGED:
        allow = normalise_allow(list(outbound_allow))
        if tuple(allow) != current.outbound_allow:
            values["outbound_allow"] = allow
    if not values:
        return current
    await session.execute(
        insert(llm_settings)
        .values(tenant_id=tenant_id, **values)
        .on_conflict_do_update(index_elements=[llm_settings.c.tenant_id], set_={**values, "updated_at": func.now()})
    )
    after = await get(session, tenant_id)
    event = ev.LlmSettingsChanged(
        tenant_id=tenant_id,
        changed=sorted(values),
        default_chat_model_id=after.default_chat_model_id,
        default_embedding_model_id=after.default_embedding_model_id,
        outbound_allow=list(after.outbound_allow),
    )
    await record(PostgresEventStore(session), ev.settings_stream(tenant_id), event, meta)
    return after
