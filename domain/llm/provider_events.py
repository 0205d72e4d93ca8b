"""Audit events of provider connections (``provider-<id>``), models (``model-<id>``) and a tenant's LLM
settings (``llm_settings-<tenant id>``). They name changed fields and never carry a secret value."""

from __future__ import annotations

import uuid

from domain.shared.events import Event, event_type


def provider_stream(provider_id: uuid.UUID) -> str:
    return f"provider-{provider_id}"


def model_stream(model_id: uuid.UUID) -> str:
    return f"model-{model_id}"


def settings_stream(tenant_id: uuid.UUID) -> str:
    return f"llm_settings-{tenant_id}"


@event_type("llm.provider_created.v1")
class ProviderCreated(Event, frozen=True, kw_only=True):
    """``secrets`` names the write-only fields that were set (never their values)."""

    provider_id: uuid.UUID
    name: str
    kind: str
    base_url: str | None
    source: str
    secrets: list[str]


@event_type("llm.provider_updated.v1")
class ProviderUpdated(Event, frozen=True, kw_only=True):
    provider_id: uuid.UUID
    changed: list[str]
    version: int


@event_type("llm.provider_deleted.v1")
class ProviderDeleted(Event, frozen=True, kw_only=True):
    provider_id: uuid.UUID
    version: int


@event_type("llm.model_created.v1")
class ModelCreated(Event, frozen=True, kw_only=True):
    model_id: uuid.UUID
    provider_id: uuid.UUID
    name: str
    upstream_id: str
    kind: str


@event_type("llm.model_updated.v1")
class ModelUpdated(Event, frozen=True, kw_only=True):
    model_id: uuid.UUID
    changed: list[str]
    version: int


@event_type("llm.model_deleted.v1")
class ModelDeleted(Event, frozen=True, kw_only=True):
    """``version`` 0: deleted with its provider."""

    model_id: uuid.UUID
    version: int


@event_type("llm.settings_changed.v1")
class LlmSettingsChanged(Event, frozen=True, kw_only=True):
    tenant_id: uuid.UUID
    changed: list[str]
    default_chat_model_id: uuid.UUID | None
    default_embedding_model_id: uuid.UUID | None
    outbound_allow: list[str]
