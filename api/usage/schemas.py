"""Response bodies of /api/v1/usage: token and cost totals of model calls, grouped by the asked
dimensions. Costs are decimal strings (exact; never rounded through a float)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

Dimension = Literal["day", "user", "model", "purpose"]
DIMENSIONS: tuple[Dimension, ...] = ("day", "user", "model", "purpose")


class UsageTotals(msgspec.Struct, kw_only=True):
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    """Input tokens served from the provider's prompt cache (included in ``input_tokens``)."""
    cost: str | None
    """Decimal string in ``currency``; null when no call in the group had pricing."""
    calls: int
    failed: int
    """Calls that ended in a provider failure (cancelled calls are not failures)."""


class UsageGroup(UsageTotals, kw_only=True):
    """One group. Only the fields of the asked dimensions are present (``model``: ``model_id``
    and ``model_name``; ``user``: ``user_id``, null for calls made without a user)."""

    day: date | UnsetType = UNSET
    """UTC calendar day."""
    user_id: uuid.UUID | UnsetType | None = UNSET
    model_id: uuid.UUID | UnsetType | None = UNSET
    model_name: str | UnsetType = UNSET
    purpose: str | UnsetType = UNSET
    currency: str | UnsetType | None = UNSET
    """Only when the range holds costs in more than one currency (each group is one currency)."""


class UsageSummary(msgspec.Struct, kw_only=True):
    object: Literal["usage_summary"] = "usage_summary"
    currency: str | None
    """The currency of every cost here; null when there are none or more than one (then each
    group names its own and ``totals.cost`` is null)."""
    since: datetime
    until: datetime
    group_by: list[Dimension]
    data: list[UsageGroup]
    totals: UsageTotals
