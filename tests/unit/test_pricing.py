"""Cost of a call from a model's pricing: exact decimals, cached input at its own rate."""

from __future__ import annotations

from decimal import Decimal

import pytest

from domain.llm.pricing import Pricing, cost, pricing_from
from domain.llm.stream import Usage

SONNET = Pricing(currency="USD", input=Decimal("3"), output=Decimal("15"), cached_input=Decimal("0.3"))


def test_no_pricing_means_no_cost() -> None:
    assert cost(Usage(1000, 1000), None) is None


def test_input_and_output_per_million() -> None:
    assert cost(Usage(input_tokens=1_000_000, output_tokens=2_000_000), SONNET) == Decimal("33")
    assert cost(Usage(12, 4), SONNET) == Decimal("0.000096")


def test_cached_input_is_billed_at_its_own_rate() -> None:
    # 20 fresh x 3 + 80 cached x 0.3 + 1 x 15, per million
    assert cost(Usage(input_tokens=100, output_tokens=1, cached_input_tokens=80), SONNET) == Decimal("0.000099")


def test_cached_input_without_its_own_rate_is_billed_as_input() -> None:
    plain = Pricing(input=Decimal("2"), output=Decimal("8"))
    assert cost(Usage(input_tokens=100, output_tokens=0, cached_input_tokens=80), plain) == Decimal("0.0002")


def test_cached_tokens_never_exceed_the_input() -> None:
    assert cost(Usage(input_tokens=10, output_tokens=0, cached_input_tokens=50), SONNET) == Decimal("0.000003")


def test_decimal_not_float() -> None:
    tenth = pricing_from({"currency": "USD", "input": 0.1, "output": 0.2, "cached_input": None})
    assert tenth is not None
    assert (tenth.input, tenth.output, tenth.cached_input) == (Decimal("0.1"), Decimal("0.2"), None)
    total = cost(Usage(input_tokens=1_000_000, output_tokens=1_000_000), tenth)
    assert total == Decimal("0.3")  # 0.1 + 0.2 in floats is 0.30000000000000004
    assert isinstance(total, Decimal)


@pytest.mark.parametrize(
    "raw", [None, {}, {"input": -1}, {"input": "nan"}, {"input": "abc"}, {"currency": "", "input": 1}, [1, 2]]
)
def test_unusable_pricing_is_none(raw: object) -> None:
    assert pricing_from(raw) is None


def test_stored_pricing_reads_strings_and_numbers() -> None:
    assert pricing_from({"currency": "EUR", "input": "3", "output": 15, "cached_input": "0.3"}) == Pricing(
        currency="EUR", input=Decimal(3), output=Decimal(15), cached_input=Decimal("0.3")
    )
