"""The simulator clock: real wall time plus an offset that tests can advance."""

from __future__ import annotations

import time

__all__ = ["SimClock"]


class SimClock:
    """Wall-clock time shifted by an adjustable offset (seconds)."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def now(self) -> float:
        """Current simulated Unix time in seconds."""
        return time.time() + self.offset

    def now_ms(self) -> int:
        """Current simulated Unix time in integer milliseconds."""
        return int(self.now() * 1000)

    def advance(self, seconds: float) -> None:
        """Move the clock forward (never backward)."""
        if seconds < 0:
            raise ValueError(f"cannot move the clock backward ({seconds} s)")
        self.offset += seconds
