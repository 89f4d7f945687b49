"""When to sweep next (the Pacer, by the lost-time rule of `_lost_time.py`), and the Alarm.

The Pacer turns what the tracker has learnt (generation times, sweeps that changed nothing,
callbacks that announced completions) into the pause before the next sweep; the Alarm is that
pause, which a callback can cut short (wake) or have computed again (replan).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from ._config import PollPolicy
from ._lost_time import Durations, lost_time_due
from ._types import Sleep

__all__ = ["RELIABLE", "Alarm", "Pacer"]

#: Completions in a row that callbacks announced before callbacks are trusted to announce the
#: next ones (and polling becomes a safety net).
RELIABLE = 8


class Pacer:
    """How long the sweeper sleeps, from what the tracker has learnt.

    Until three generation times are known: `policy.interval`, growing by `policy.backoff` per
    sweep that changed nothing (up to `policy.interval_max`). Then the lost-time rule with a
    budget of `policy.due_fraction` × the median generation time. While callbacks announce
    every completion (the last `RELIABLE` ones were announced before a sweep saw them), polling
    is the safety net only: one sweep per median generation time, and at once when every task
    followed is announced finished (to confirm them).
    """

    def __init__(self, policy: PollPolicy) -> None:
        self.policy = policy
        self.durations = Durations()
        self.interval = policy.interval
        self.last_sweep: float | None = None  # when the last successful sweep was sent
        self._last_try = 0.0  # when the last sweep (or the sweeper) started
        self._announced: deque[bool] = deque(maxlen=RELIABLE)

    def begin(self, now: float) -> None:
        """The sweeper starts: the first back-off interval counts from `now`."""
        if self.last_sweep is None:
            self._last_try = now

    def swept(self, started: float, changed: int) -> None:
        """A sweep sent at `started` succeeded and saw `changed` tasks change status."""
        self.last_sweep = self._last_try = started
        if changed:
            self.interval = self.policy.interval
        else:
            self._back_off()

    def failed(self, started: float) -> None:
        """A sweep sent at `started` failed (already retried): wait longer before the next."""
        self._last_try = started
        self._back_off()

    def _back_off(self) -> None:
        self.interval = min(self.policy.interval_max, self.interval * self.policy.backoff)

    def finished(self, duration: float | None, announced: bool) -> None:
        """A task was seen finished; `announced`: a callback said so before we saw it."""
        if duration is not None:
            self.durations.add(duration)
        self._announced.append(announced)

    @property
    def callbacks_reliable(self) -> bool:
        """True while callbacks announced each of the last `RELIABLE` completions."""
        return len(self._announced) == RELIABLE and all(self._announced)

    def typical(self) -> float | None:
        """Median generation time seen so far, once three tasks have ended."""
        return self.durations.median() if len(self.durations) >= 3 else None

    def delay(self, now: float, running: Sequence[float], claimed: int) -> float:
        """Seconds to sleep before the next sweep.

        `running`: when each followed task not announced finished began (our clock);
        `claimed`: how many followed tasks callbacks announced finished, still to confirm.
        """
        policy = self.policy
        if claimed and not running:
            return policy.min_interval  # nothing else to wait for: confirm them now
        typical = self.typical()
        if typical is None or self.last_sweep is None:
            return max(policy.min_interval, self._last_try + self.interval - now)
        if self.callbacks_reliable:
            return max(policy.min_interval, self.last_sweep + typical - now)
        due = lost_time_due(
            self.last_sweep, running, self.durations.edges(), policy.due_fraction * typical
        )
        wait = policy.interval_max if due is None else due - now
        return min(policy.interval_max, max(policy.min_interval, wait))


class Alarm:
    """The sweeper's pause: it ends when due, when told to sweep now, or to re-plan."""

    def __init__(self, sleep: Sleep) -> None:
        self._sleep = sleep
        self._wake = False  # sweep now
        self._replan = False  # what to wait for changed: compute the pause again
        self._waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        """End the pause: sweep now."""
        self._wake = True
        self._ring()

    def replan(self) -> None:
        """End the pause without a sweep: the sweeper computes its pause again."""
        self._replan = True
        self._ring()

    def _ring(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def pause(self, seconds: float) -> bool:
        """Sleep `seconds`; True when it is time to sweep, False when woken to re-plan."""
        if not (self._wake or self._replan):
            # One future that the sleep or a ring ends: a pause per sweep stays cheap.
            self._waiter = waiter = asyncio.get_running_loop().create_future()
            sleeper = asyncio.ensure_future(self._sleep(seconds))
            sleeper.add_done_callback(lambda _: self._ring())
            try:
                await waiter
            finally:
                self._waiter = None
                if not sleeper.done():
                    sleeper.cancel()
                    await asyncio.gather(sleeper, return_exceptions=True)
        sweep = self._wake or not self._replan
        self._wake = self._replan = False
        return sweep
