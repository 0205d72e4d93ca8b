"""The usage ledger's vocabulary: why a model was called, how the call ended, and the one entry
every provider call leaves behind (tokens, cost at call time, timings)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Literal, get_args

import msgspec

from domain.llm.pricing import Pricing, cost
from domain.llm.stream import ErrorKind, Usage

Purpose = Literal["chat", "agent", "embedding", "rerank", "title"]
PURPOSES: tuple[Purpose, ...] = get_args(Purpose)
CallStatus = Literal["completed", "failed", "cancelled"]


class UsageContext(msgspec.Struct, frozen=True, kw_only=True):
    """Who made a model call, on which model, and why: fixed before the call starts."""

    tenant_id: uuid.UUID
    model_name: str
    purpose: Purpose
    user_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None
    provider_id: uuid.UUID | None = None
    model_id: uuid.UUID | None = None
    conversation_id: uuid.UUID | None = None
    run_id: uuid.UUID | None = None
    pricing: Pricing | None = None
    """The model's pricing when the call started: the entry's cost is computed with it."""


class UsageEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One model call, as the ledger stores it."""

    context: UsageContext
    usage: Usage
    status: CallStatus
    error_kind: ErrorKind | None = None
    latency_ms: int | None = None
    ttft_ms: int | None = None
    """Time to the first content event (streams only)."""

    @property
    def cost(self) -> Decimal | None:
        return cost(self.usage, self.context.pricing)

    @property
    def currency(self) -> str | None:
        pricing = self.context.pricing
        return pricing.currency if pricing is not None else None
