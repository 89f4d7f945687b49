"""Units: what Kling charges per task, by (model, mode, duration); parsing of unit amounts.

Kling bills every task in resource-pack *units* (`final_unit_deduction`). The built-in table
below is Kling's published price list for `kling-v1-6` video generation, as we could establish
it on 2026-11-30: the developer pricing page (klingai.com/global/dev/pricing) itself could not be
read from here, so the figures come from public write-ups of it and of the consumer app, which
agree on 1 unit for std 5 s, 2 for std 10 s, 3.5 for pro 5 s and 7 for pro 10 s (the app charges
ten times these in credits). One source lists pro 5 s at 2.5 units (for newer models); where
sources disagree the higher figure is kept, so an estimate errs toward reserving too much. Any
price can be overridden (`--price pro-5=2.5`, `prices={"pro-5": 2.5}`), and a budget raises a
kind's estimate to the highest deduction it observes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import NamedTuple, Protocol, TypeAlias

from ._errors import ConfigurationError

__all__ = [
    "DEFAULT_PRICES",
    "DURATIONS",
    "MODES",
    "PRICES_SOURCE",
    "Kind",
    "PriceTable",
    "Priced",
    "Units",
    "deduction",
    "describe",
    "format_units",
    "kind_of",
    "kind_order",
    "parse_price",
    "parse_units",
]

#: A unit amount given by a user: 1, 3.5, "3.5", Decimal("7").
Units: TypeAlias = int | float | str | Decimal
PRICES_SOURCE = (
    "Kling's published kling-v1-6 prices (klingai.com/global/dev/pricing, via public write-ups, "
    "2026-11-30)"
)
MODES = ("std", "pro")
DURATIONS = ("5", "10")
_KEY = re.compile(r"(?:(?P<model>[\w.-]+):)?(?P<mode>[a-z]+)-(?P<duration>\d+)")


class Kind(NamedTuple):
    """What decides a task's price: its model, mode and duration."""

    model: str
    mode: str
    duration: str

    def __str__(self) -> str:
        return f"{self.model} {self.mode} {self.duration} s"

    @property
    def key(self) -> str:
        """The `--price` spelling without the model: "pro-10"."""
        return f"{self.mode}-{self.duration}"


class Priced(Protocol):
    """Anything with the three fields that decide a price (a request, a job row)."""

    @property
    def model_name(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def duration(self) -> str: ...


def kind_of(request: Priced | Kind) -> Kind:
    """The price kind of a request (or a Kind, returned as is)."""
    if isinstance(request, Kind):
        return request
    return Kind(request.model_name, request.mode, request.duration)


DEFAULT_PRICES: Mapping[Kind, Decimal] = MappingProxyType(
    {
        Kind("kling-v1-6", "std", "5"): Decimal("1"),
        Kind("kling-v1-6", "std", "10"): Decimal("2"),
        Kind("kling-v1-6", "pro", "5"): Decimal("3.5"),
        Kind("kling-v1-6", "pro", "10"): Decimal("7"),
    }
)
_MODELS = frozenset(k.model for k in DEFAULT_PRICES)


def parse_units(value: object) -> Decimal:
    """A unit amount as a finite Decimal >= 0; ValueError saying what is wrong with it."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"units must be a number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"units must be a finite number, got {value!r}")
    try:  # str() first: Decimal(0.1) would carry the float's binary expansion
        units = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"units must be a number, got {value!r}") from None
    if not units.is_finite() or units < 0:
        raise ValueError(f"units must be a finite number >= 0, got {value!r}")
    return _plain(units)


def _plain(units: Decimal) -> Decimal:
    """Without trailing zeros or exponent: 7.00 → 7, 1E+1 → 10 (for display and JSON)."""
    if not units:
        return Decimal(0)  # also turns -0 into 0
    units = units.normalize()
    exponent = units.as_tuple().exponent
    return units.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else units


def deduction(value: object) -> Decimal | None:
    """A task's `final_unit_deduction` as units; None when absent or unreadable."""
    if value is None or value == "":
        return None
    try:
        return parse_units(value)
    except ValueError:  # tolerant: a garbled field must not stop a batch; callers estimate
        return None


def _parse_key(text: str) -> tuple[str | None, str, str]:
    """ "pro-10" or "kling-v1-6:pro-10" → (model or None, mode, duration); ValueError if not."""
    m = _KEY.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"expected MODE-DURATION such as std-5 or pro-10, got {text!r}")
    model, mode, duration = m["model"], m["mode"], m["duration"]
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if duration not in DURATIONS:
        raise ValueError(f"duration must be one of {', '.join(DURATIONS)} (s), got {duration!r}")
    if model is not None and model not in _MODELS:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(sorted(_MODELS))}")
    return model, mode, duration


def parse_price(text: str) -> tuple[str, Decimal]:
    """`MODE-DURATION=UNITS` (e.g. "pro-10=7") → ("pro-10", 7); ValueError saying what is wrong."""
    key, sep, amount = text.partition("=")
    if not sep:
        raise ValueError(f"expected MODE-DURATION=UNITS such as pro-10=7, got {text!r}")
    _parse_key(key)
    return key.strip(), parse_units(amount)


class PriceTable:
    """Units per task kind: the built-in defaults with any overrides applied; immutable."""

    __slots__ = ("_any", "_prices")

    def __init__(self, prices: Mapping[str | Kind, Units] | None = None) -> None:
        """`prices` maps "pro-10" (every model) or "kling-v1-6:pro-10" or a Kind to units."""
        table = dict(DEFAULT_PRICES)
        wildcard: dict[tuple[str, str], Decimal] = {}
        for key, value in (prices or {}).items():
            model: str | None
            try:
                if isinstance(key, Kind):
                    model, mode, duration = key
                elif isinstance(key, str):
                    model, mode, duration = _parse_key(key)
                else:
                    raise ValueError(f"a price key is a string like 'pro-10', got {key!r}")
                units = parse_units(value)
            except ValueError as exc:
                raise ConfigurationError(f"prices[{key!r}]: {exc}") from None
            if model is None:  # applies to every model, including ones the defaults lack
                wildcard[mode, duration] = units
                table.update({k: units for k in table if (k.mode, k.duration) == (mode, duration)})
            else:
                table[Kind(model, mode, duration)] = units
        self._prices = table
        self._any = wildcard

    @classmethod
    def of(cls, prices: PriceTable | Mapping[str | Kind, Units] | None) -> PriceTable:
        """A table from a table, a mapping of overrides, or None (the defaults)."""
        return prices if isinstance(prices, PriceTable) else cls(prices)

    def price(self, kind: Priced | Kind) -> Decimal:
        """Units for one task of this kind (an unknown model costs the dearest known price)."""
        k = kind_of(kind)
        found = self._prices.get(k)
        if found is None:
            found = self._any.get((k.mode, k.duration), max(self._prices.values()))
        return found

    def __iter__(self) -> Iterator[tuple[Kind, Decimal]]:
        return iter(sorted(self._prices.items(), key=lambda item: kind_order(item[0])))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PriceTable):
            return NotImplemented
        return (self._prices, self._any) == (other._prices, other._any)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PriceTable({describe(self)})"


def kind_order(kind: Kind) -> tuple[str, int, int]:
    """Sort key: by model, std before pro, shorter first."""
    mode = MODES.index(kind.mode) if kind.mode in MODES else len(MODES)
    return kind.model, mode, int(kind.duration) if kind.duration.isdigit() else 0


def describe(prices: Iterable[tuple[Kind, Decimal]]) -> str:
    """ "std-5=1 std-10=2 pro-5=3.5 pro-10=7" (the model is named when there are several)."""
    items = list(prices)
    several = len({k.model for k, _ in items}) > 1
    return " ".join(
        f"{k.model + ':' if several else ''}{k.key}={format_units(u)}" for k, u in items
    )


def format_units(units: Decimal) -> str:
    """Units for people: "3.5", "1,250", "0"."""
    if units == units.to_integral_value():
        return f"{int(units):,}"
    return f"{units.normalize():,f}"
