"""The units price table: defaults, overrides, parsing, and agreement with the simulator's copy."""

from __future__ import annotations

import typing
from decimal import Decimal

import pytest

from kling_async import ConfigurationError, MultiImageToVideoRequest, PriceTable
from kling_async._prices import (
    DEFAULT_PRICES,
    DURATIONS,
    MODES,
    Kind,
    deduction,
    describe,
    format_units,
    kind_of,
    parse_price,
    parse_units,
)
from kling_async.models import Duration, Mode, ModelName
from kling_async.simulator._prices import DEFAULT_PRICES as SIM_PRICES

URL = "https://example.com/a.png"


def test_defaults_are_klings_published_v1_6_prices() -> None:
    assert describe(PriceTable()) == "std-5=1 std-10=2 pro-5=3.5 pro-10=7"
    table = PriceTable()
    assert table.price(Kind("kling-v1-6", "pro", "10")) == Decimal(7)


def test_simulator_copy_agrees_with_the_client_table() -> None:
    # The simulator shares no code with the client: its copy must say the same thing.
    assert {k.key: v for k, v in DEFAULT_PRICES.items()} == {
        k: Decimal(v) for k, v in SIM_PRICES.items()
    }
    assert {k.model for k in DEFAULT_PRICES} == set(typing.get_args(ModelName))


def test_table_covers_every_mode_and_duration_the_request_allows() -> None:
    assert set(MODES) == set(typing.get_args(Mode))
    assert set(DURATIONS) == set(typing.get_args(Duration))
    kinds = {(k.mode, k.duration) for k in DEFAULT_PRICES}
    assert kinds == {(m, d) for m in MODES for d in DURATIONS}


def test_overrides_by_kind_model_and_object() -> None:
    table = PriceTable({"std-5": 0.5, "kling-v1-6:pro-10": "6", Kind("kling-v1-6", "pro", "5"): 3})
    assert describe(table) == "std-5=0.5 std-10=2 pro-5=3 pro-10=6"
    assert PriceTable.of(table) is table
    assert PriceTable.of(None) == PriceTable() != table
    assert PriceTable.of({"kling-v1-6:std-5": 1}) == PriceTable()  # the default, restated


def test_estimate_of_a_request() -> None:
    request = MultiImageToVideoRequest(images=[URL], prompt="p", mode="pro", duration="10")
    assert kind_of(request) == Kind("kling-v1-6", "pro", "10")
    assert PriceTable({"pro-10": 9}).price(request) == Decimal(9)


def test_an_unknown_model_costs_the_dearest_price_unless_overridden() -> None:
    future = Kind("kling-v9", "std", "5")
    assert PriceTable().price(future) == Decimal(7)
    assert PriceTable({"std-5": 2}).price(future) == Decimal(2)  # MODE-DURATION: every model


@pytest.mark.parametrize(
    ("prices", "words"),
    [
        ({"ultra-5": 1}, "mode must be one of std, pro"),
        ({"std-7": 1}, "duration must be one of 5, 10"),
        ({"std5": 1}, "expected MODE-DURATION"),
        ({"kling-v0:std-5": 1}, "unknown model 'kling-v0'"),
        ({"std-5": -1}, ">= 0"),
        ({"std-5": "lots"}, "must be a number"),
        ({"std-5": float("nan")}, "finite"),
        ({"std-5": True}, "must be a number"),
        ({5: 1}, "a price key is a string"),
    ],
)
def test_bad_overrides_name_the_key(prices: dict[object, object], words: str) -> None:
    with pytest.raises(ConfigurationError, match="prices\\[") as exc:
        PriceTable(prices)  # type: ignore[arg-type]
    assert words in str(exc.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("std-5=1", ("std-5", Decimal(1))), (" pro-10 = 7.50", ("pro-10", Decimal("7.5")))],
)
def test_parse_price(text: str, expected: tuple[str, Decimal]) -> None:
    assert parse_price(text) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("std-5", "MODE-DURATION=UNITS"),
        ("std-5=", "must be a number"),
        ("pro-15=3", "duration must be one of"),
        ("max-5=3", "mode must be one of"),
        ("pro-5=-2", ">= 0"),
        ("=3", "expected MODE-DURATION"),
    ],
)
def test_parse_price_errors(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_price(text)


def test_units_are_exact_decimals() -> None:
    assert parse_units(0.1) + parse_units(0.2) == parse_units("0.3")  # no binary drift
    assert str(parse_units("7.00")) == "7" and str(parse_units(10)) == "10"
    assert str(parse_units("1e1")) == "10" and str(parse_units("-0")) == "0"
    assert format_units(Decimal("12500")) == "12,500" and format_units(Decimal("3.5")) == "3.5"
    with pytest.raises(ValueError):
        parse_units(float("inf"))
    with pytest.raises(ValueError):
        parse_units(None)


@pytest.mark.parametrize(
    ("raw", "units"),
    [
        *[("3.5", Decimal("3.5")), ("0", Decimal(0)), (2, Decimal(2))],
        *[(None, None), ("", None), ("n/a", None), ("-1", None), ([], None)],
    ],
)
def test_deduction_is_tolerant(raw: object, units: Decimal | None) -> None:
    assert deduction(raw) == units
