"""Request and response bodies of /api/v1/providers. Secrets are accepted, never returned."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from api.pagination import Page

Kind = Literal["openai", "openai_compatible", "anthropic", "bedrock"]
Name = Annotated[str, Meta(min_length=1, max_length=200, description="Display name, unique in the tenant.")]
BaseUrl = Annotated[str, Meta(min_length=8, max_length=2000, pattern=r"^https?://", description="http(s) URL.")]
Secret = Annotated[str, Meta(min_length=1, max_length=8000)]
HeaderName = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")]
Short = Annotated[str, Meta(min_length=1, max_length=500)]
Headers = Annotated[dict[HeaderName, Secret], Meta(max_length=50, description="Extra headers (write-only).")]


class ProviderConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Non-secret settings, plus the AWS secret key and session token (write-only)."""

    query: Annotated[dict[Short, Short], Meta(max_length=50)] = msgspec.field(default_factory=dict)
    """Query parameters added to every request (e.g. Azure's ``api-version``)."""
    organization: Short | None = None
    region: Short | None = None
    profile: Short | None = None
    aws_access_key_id: Short | None = None
    aws_secret_access_key: Secret | None = None
    aws_session_token: Secret | None = None


class ProviderSettings(msgspec.Struct, kw_only=True, omit_defaults=True):
    query: dict[str, str] = msgspec.field(default_factory=dict)
    organization: str | None = None
    region: str | None = None
    profile: str | None = None
    aws_access_key_id: str | None = None


class Provider(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    object: Literal["provider"] = "provider"
    name: str
    kind: Kind
    base_url: str | None
    config: ProviderSettings
    has_api_key: bool
    api_key_hint: str | None
    """The API key's last four characters (keys shorter than 12 characters get none)."""
    header_names: list[str]
    has_aws_secret_access_key: bool
    credential_host: str | None
    """The host the credentials are sent to, and nowhere else."""
    source: Literal["api", "env"]
    enabled: bool
    version: int
    created_at: datetime
    updated_at: datetime


class ProviderCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    kind: Kind
    base_url: BaseUrl | None = None
    api_key: Secret | None = None
    headers: Headers | None = None
    config: ProviderConfig = msgspec.field(default_factory=ProviderConfig)
    enabled: bool = True


class ProviderUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Fields left out keep their value; ``null`` clears. ``config`` replaces the non-secret
    settings; its secret fields change only when present."""

    name: Name | UnsetType = UNSET
    base_url: BaseUrl | UnsetType | None = UNSET
    api_key: Secret | UnsetType | None = UNSET
    headers: Headers | UnsetType | None = UNSET
    config: ProviderConfig | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET


class ProviderList(Page[Provider], kw_only=True):
    data: list[Provider]  # restated: Litestar's schema generation loses a subclassed generic's parameter


class ProbeError(msgspec.Struct, kw_only=True):
    kind: str
    message: str


class ProviderTestResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    object: Literal["provider_test"] = "provider_test"
    ok: bool
    latency_ms: int
    models: list[str] | None = None
    """Upstream model ids, where the provider can list them."""
    error: ProbeError | None = None
