"""SlotGate: our view of the account's concurrency (a slot is held from create to terminal state).

On 1303 the limit drops to what we hold (the refused create aside): the notes' simulations show
that beats multiplicative decrease on a hard cap. It then probes +1 every `probe_interval`
seconds so a raised cap, or slots that someone else freed, get used again; a refused probe
doubles the wait before the next (up to 2×); an accepted one makes the next probe due at once,
so a cap raised by several slots is climbed in a few round trips, not one interval per slot.
It never exceeds `maximum`, the user's configured concurrency.

Slow start (opt-in; the Client turns it on): creates above the highest level Kling has accepted
so far go out at most `RAMP` at a time, so an over-stated `maximum` costs a couple of 1303s
instead of a burst of them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from ._types import Clock

__all__ = ["SlotGate"]

#: Unconfirmed creates allowed in flight above the proven level.
RAMP = 2
_MAX_BACKOFF = 2


class SlotGate:
    """An adaptive counting gate: `acquire` waits for a slot, `release` frees one."""

    def __init__(
        self,
        maximum: int,
        *,
        probe_interval: float = 30.0,
        slow_start: bool = False,
        monotonic: Clock = time.monotonic,
    ) -> None:
        if maximum < 1:
            raise ValueError(f"maximum must be ≥ 1, got {maximum}")
        self.maximum = maximum
        self.limit = maximum
        self.in_use = 0
        self.peak = 0
        self.rejections = 0
        self.probe_interval = probe_interval
        self.confirmed = 0  # the most slots Kling has let us hold at once
        self._probing = 0  # creates in flight above `confirmed`
        self.slow_start = slow_start
        self._backoff = 1
        self._probe_open = False  # the limit was raised by a timed probe not yet answered
        self._monotonic = monotonic
        self._last_change = monotonic()
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __repr__(self) -> str:
        return f"SlotGate(in_use={self.in_use}, limit={self.limit}, maximum={self.maximum})"

    def _maybe_probe(self) -> float | None:
        """Raise the limit by one if a probe is due; return seconds until the next one."""
        if self.limit >= self.maximum:
            return None
        interval = self.probe_interval * self._backoff
        due = self._last_change + interval - self._monotonic()
        if due > 0:
            return due
        self.limit += 1
        self._probe_open = True
        self._last_change = self._monotonic()
        return interval if self.limit < self.maximum else None

    def _may_take(self) -> bool:
        if self.in_use >= self.limit:
            return False
        return not self.slow_start or self.in_use < self.confirmed or self._probing < RAMP

    async def acquire(self) -> bool:
        """Wait for a slot and take it; True if it is above the proven level (a probe)."""
        loop = asyncio.get_running_loop()
        while True:
            next_probe = self._maybe_probe()
            if self._may_take():
                self.in_use += 1
                self.peak = max(self.peak, self.in_use)
                probe = self.in_use > self.confirmed
                self._probing += probe
                return probe
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, timeout=next_probe)
            except TimeoutError:
                pass  # a probe is due: loop and re-check
            except BaseException:
                # Woken by release() but cancelled before taking the slot: pass the wake-up on,
                # or the next waiter sleeps while a slot stands free.
                if waiter.done() and not waiter.cancelled():
                    self._wake()
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def hold(self) -> None:
        """Count a slot we already hold without waiting (a running task found on resume)."""
        self.in_use += 1
        self.peak = max(self.peak, self.in_use)
        self.confirmed = max(self.confirmed, self.in_use)

    def _wake(self, count: int = 1) -> None:
        while count > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                count -= 1

    def _settle_probe(self, probe: bool) -> None:
        if probe:
            self._probing = max(0, self._probing - 1)

    def accepted(self, probe: bool = False) -> None:
        """The create on this slot was accepted: the level we hold is proven."""
        self._settle_probe(probe)
        self.confirmed = max(self.confirmed, self.in_use)
        if self._probe_open and self.in_use >= self.limit:
            self._probe_open = False
            self._backoff = 1
            # The cap has room: try the next slot now rather than one interval per slot.
            self._last_change = self._monotonic() - self.probe_interval
        self._wake(len(self._waiters))  # a finished probe may let several creates go

    def release(self, probe: bool = False) -> None:
        """Give a slot back (its task ended, or its create failed before Kling took it)."""
        self._settle_probe(probe)
        self.in_use = max(0, self.in_use - 1)
        self._wake()

    def rejected(self, probe: bool = False) -> int:
        """A create holding a slot got 1303: return that slot, set limit = what we still hold.

        Returns how many slots we still hold. At 0 someone else fills the account: the limit
        drops to 0 too, so nothing is sent until the next timed probe (one create at a time,
        every `probe_interval`, doubled once while refused) instead of a retry loop.
        """
        self._settle_probe(probe)
        self.rejections += 1
        self.in_use = max(0, self.in_use - 1)
        self.limit = min(self.limit, self.in_use)
        self.confirmed = min(self.confirmed, self.in_use)
        if self._probe_open:  # the cap has not risen: wait longer before the next probe
            self._probe_open = False
            self._backoff = min(_MAX_BACKOFF, self._backoff * 2)
        self._last_change = self._monotonic()
        return self.in_use

    def set_maximum(self, maximum: int) -> None:
        """Change the configured ceiling at run time (e.g. the user raised --concurrency)."""
        self.maximum = max(1, maximum)
        self.limit = min(self.limit, self.maximum)
        self._wake(len(self._waiters))
