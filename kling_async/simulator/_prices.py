"""Units per task (`final_unit_deduction`): the simulator's copy of Kling's price table.

The simulator shares no code with the client, so this is a copy of `kling_async._prices`'
defaults; tests/test_prices.py asserts the two agree. A config field, the `prices` control key
and `--price MODE-DURATION=UNITS` change it (e.g. to make real deductions exceed a client's
estimates).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

__all__ = ["DEFAULT_PRICES", "check_prices"]

#: Kling's kling-v1-6 prices in units per task, by "mode-duration" (see kling_async._prices).
DEFAULT_PRICES: Mapping[str, str] = MappingProxyType(
    {"std-5": "1", "std-10": "2", "pro-5": "3.5", "pro-10": "7"}
)


def _units(value: Any, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"prices.{key} must be a number (got {value!r})")
    try:
        units = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"prices.{key} must be a number (got {value!r})") from None
    if not units.is_finite() or units < 0:
        raise ValueError(f"prices.{key} must be a finite number >= 0 (got {value!r})")
    return format(units.normalize(), "f") if units else "0"  # "3.50" → "3.5", "1E+1" → "10"


def check_prices(prices: Any) -> dict[str, str]:
    """Validate {"pro-10": 7, …} (known kinds, numbers >= 0); the values as the API's strings."""
    if not isinstance(prices, Mapping):
        raise ValueError(f"prices must be an object of mode-duration -> units (got {prices!r})")
    unknown = sorted(set(prices) - set(DEFAULT_PRICES))
    if unknown:
        known = ", ".join(DEFAULT_PRICES)
        raise ValueError(f"prices: unknown kind(s) {', '.join(map(str, unknown))}; known: {known}")
    return {key: _units(value, key) for key, value in prices.items()}
