"""Typed argparse converters whose errors name the flag: ``--concurrency must be ≥ 1 (got 0)``.

The one copy serves both command lines: the simulator stands alone (it imports nothing else of
the package), so ``kling-async run`` borrows these from here rather than the other way round.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

__all__ = ["number"]

N = TypeVar("N", int, float)


def number(
    flag: str,
    kind: type[N],
    *,
    minimum: N | None = None,
    above: N | None = None,
    maximum: N | None = None,
) -> Callable[[str], N]:
    """An argparse ``type=`` for ``flag``: a finite `kind` with bounds (≥ minimum, > above,
    ≤ maximum). A bad value stops argparse with the flag, the rule and the value as typed."""
    what = "a whole number" if kind is int else "a number"

    def convert(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise _error(f"{flag} must be {what} (got {text!r})") from None
        if not math.isfinite(value):
            raise _error(f"{flag} must be a finite number (got {text!r})")
        if minimum is not None and value < minimum:
            raise _error(f"{flag} must be ≥ {minimum:g} (got {text})")
        if above is not None and value <= above:
            raise _error(f"{flag} must be > {above:g} (got {text})")
        if maximum is not None and value > maximum:
            raise _error(f"{flag} must be ≤ {maximum:g} (got {text})")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in its own messages
    return convert


def _error(message: str) -> argparse.ArgumentError:
    # Raised from a type converter, an ArgumentError without an action passes argparse's own
    # wrapping ("argument --x: invalid int value") and is printed as is, after the usage.
    return argparse.ArgumentError(None, message)
