"""SharedTokens: the adaptive request rate's tokens in Redis, one bucket for every process.

The throttling work (issue 15) computes *how fast* requests may go (`RateController`, a CUBIC
curve learnt from 1302) apart from *where the tokens live* (a `TokenStore`: `await
take(rate)`). This is the store for several processes: it wraps `SharedRate`.
- `take(rate)` writes the rate this process's controller wants into the shared bucket when it
  changed by more than 2 % or RECHECK seconds have passed, then takes a token account-wide.
  Every process computes the same curve from the same (W_max, cut time), so their writes agree.
- `cut(beta, window, measured)` is what a 1302 calls: one cut per window account-wide, however
  many processes saw the throttling; it returns (W_max, seconds since the cut, by Redis' clock)
  for `RateController.adopt(now, w_max, now - since_cut)`, so every process follows that cut.

- `follow()` (a periodic check by the coordinator, and after every write) hands a cut made by
  another process to `adopt(W_max, seconds since)`, so a process whose requests are not
  throttled — or not even paced — slows down with the others.

The coordinator plugs it into the client's `RequestRate` (`RequestRate.share`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from ._errors import CoordinatorUnavailableError
from ._shared_rate import RateState, SharedRate
from ._types import Clock

__all__ = ["SharedTokens"]

#: Write the wanted rate at least this often while it drifts by less than `DRIFT`.
RECHECK = 0.25
DRIFT = 0.02
#: Two cut times this close (seconds, after clock conversion) are the same cut.
_SAME_CUT = 0.05


class SharedTokens:
    """A TokenStore whose bucket is shared by every process of the account (Redis)."""

    def __init__(
        self,
        shared: SharedRate,
        *,
        adopt: Callable[[float, float], None] | None = None,
        monotonic: Clock = time.monotonic,
    ) -> None:
        self.shared = shared
        #: Called with (W_max, seconds since the cut) for a cut made by another process.
        self.adopt = adopt
        self._monotonic = monotonic
        self._cut_seen: float | None = None  # when the last cut we follow was made (our clock)
        self._written: float | None = None  # the rate we last wrote
        self._written_at = -math.inf

    def __repr__(self) -> str:
        return f"SharedTokens({self.shared!r})"

    def _stale(self, wanted: float, now: float) -> bool:
        last = self._written
        if last is None or now - self._written_at >= RECHECK:
            return True
        if math.isinf(wanted) or math.isinf(last):
            return wanted != last
        return abs(wanted - last) > DRIFT * last

    async def take(self, rate: Callable[[], float]) -> None:
        """Wait for one token account-wide, at the rate `rate()` wants now."""
        wanted, now = rate(), self._monotonic()
        if self._stale(wanted, now):
            try:
                self._follow(await self.shared.set_rate(wanted), now)
            except CoordinatorUnavailableError:
                self.shared.rate = wanted  # paced locally at it until Redis is back
            self._written, self._written_at = wanted, now
        await self.shared.acquire()

    async def cut(
        self, beta: float, window: float, measured: float | None = None
    ) -> tuple[float, float]:
        """Throttled (1302): cut the shared rate once per `window`; (W_max, seconds since)."""
        state = await self.shared.cut(beta, cooldown=window, measured=measured)
        now = self._monotonic()
        self._written, self._written_at = state.rate, now
        if state.since_cut is not None:
            self._cut_seen = now - state.since_cut  # ours (or one we now follow): not again
        return state.max_rate, state.since_cut or 0.0

    async def follow(self) -> None:
        """Look at the shared bucket: a cut made elsewhere since the last one is adopted."""
        self._follow(await self.shared.state(), self._monotonic())

    def _follow(self, state: RateState, now: float) -> None:
        if state.since_cut is None or self.adopt is None or math.isinf(state.max_rate):
            return
        at = now - state.since_cut
        if self._cut_seen is not None and at <= self._cut_seen + _SAME_CUT:
            return
        self._cut_seen = at
        self.adopt(state.max_rate, state.since_cut)
