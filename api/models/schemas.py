"""Request and response bodies of /api/v1/models."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from api.pagination import Page

ModelKind = Literal["chat", "embedding", "rerank"]
Name = Annotated[str, Meta(min_length=1, max_length=200, description="Display name, unique in the tenant.")]
UpstreamId = Annotated[str, Meta(min_length=1, max_length=500, description="The provider's own model id.")]
Tokens = Annotated[int, Meta(ge=1, le=100_000_000)]
Price = Annotated[Decimal, Meta(description="Per million tokens (non-negative decimal).")]


class Pricing(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    currency: Annotated[str, Meta(pattern=r"^[A-Z]{3}$")] = "USD"
    input: Price
    output: Price
    cached_input: Price | None = None


class Capabilities(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    tools: bool = False
    vision: bool = False
    streaming_usage: bool = False


class Model(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    object: Literal["model"] = "model"
    provider_id: uuid.UUID
    name: str
    upstream_id: str
    kind: ModelKind
    context_window: int | None
    max_output_tokens: int | None
    dimensions: int | None
    pricing: Pricing | None
    capabilities: Capabilities
    enabled: bool
    version: int
    created_at: datetime
    updated_at: datetime


class ModelCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    provider_id: uuid.UUID
    name: Name
    upstream_id: UpstreamId
    kind: ModelKind
    context_window: Tokens | None = None
    max_output_tokens: Tokens | None = None
    dimensions: Annotated[int, Meta(ge=1, le=65_536)] | None = None
    pricing: Pricing | None = None
    capabilities: Capabilities = msgspec.field(default_factory=Capabilities)
    enabled: bool = True


class ModelUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name | UnsetType = UNSET
    upstream_id: UpstreamId | UnsetType = UNSET
    context_window: Tokens | UnsetType | None = UNSET
    max_output_tokens: Tokens | UnsetType | None = UNSET
    dimensions: Annotated[int, Meta(ge=1, le=65_536)] | UnsetType | None = UNSET
    pricing: Pricing | UnsetType | None = UNSET
    capabilities: Capabilities | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET


class ModelList(Page[Model], kw_only=True):
    data: list[Model]  # restated: Litestar's schema generation loses a subclassed generic's parameter
