"""What a model call costs: a model's price list (currency per million tokens) applied to a call's
``Usage``, in exact decimal arithmetic (money never goes through a float)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import msgspec

from domain.llm.stream import Usage

MILLION = Decimal(1_000_000)


class Pricing(msgspec.Struct, frozen=True, kw_only=True):
    """A model's prices per million tokens (``models.pricing``). Cached input tokens are billed
    at ``cached_input`` when the provider prices them apart, else at ``input``."""

    currency: Annotated[str, msgspec.Meta(min_length=1, max_length=16)] = "USD"
    input: Decimal = Decimal(0)
    output: Decimal = Decimal(0)
    cached_input: Decimal | None = None

    def __post_init__(self) -> None:
        rates = (self.input, self.output, self.cached_input)
        if any(rate is not None and (not rate.is_finite() or rate < 0) for rate in rates):
            raise ValueError("prices are finite and not negative")


def pricing_from(raw: Any) -> Pricing | None:
    """The ``Pricing`` stored in a ``models.pricing`` JSON value (None, or not a price list: None).
    Numbers are read through their text, so ``0.1`` is exactly one tenth."""
    if not raw:
        return None
    try:
        return msgspec.convert(raw, Pricing, strict=False)
    except msgspec.ValidationError:
        return None


def cost(usage: Usage, pricing: Pricing | None) -> Decimal | None:
    """The price of ``usage`` in ``pricing.currency``; None when the model has no pricing."""
    if pricing is None:
        return None
    cached = min(max(usage.cached_input_tokens, 0), max(usage.input_tokens, 0))
    fresh = max(usage.input_tokens, 0) - cached
    cached_rate = pricing.input if pricing.cached_input is None else pricing.cached_input
    total = fresh * pricing.input + cached * cached_rate + max(usage.output_tokens, 0) * pricing.output
    return total / MILLION
