"""SharedRate: one request-rate token bucket for every process of an account, in Redis.

The bucket (a hash: rate, burst, tokens, ts) refills by Redis time. `acquire()` reserves a token
in one script call and sleeps until it is due; it never reserves more than `max_ahead` seconds
of debt, so a rate cut reaches waiting callers within that time instead of after a backlog
scheduled at the old rate. Waiting for a token is never a failure.

The adaptive rate (throttling issue) drives it: `cut(beta)` on 1302 lowers the shared rate
once per cooldown however many processes saw the throttling, and remembers the rate before the
cut and when it happened (`RateState.max_rate`, `.since_cut`, measured by Redis), which is what
a cubic recovery curve needs; `set_rate()` then raises it along that curve. Rate `math.inf`
means no limit.

Redis lost mid-run: `acquire()` does not block following and downloads — each process paces
itself locally at the last shared rate it saw until Redis is back.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

from ._errors import CoordinatorUnavailableError
from ._shared_link import RedisLink
from ._shared_lua import RATE_CUT, RATE_SET, RATE_TAKE
from ._types import Clock, Sleep

__all__ = ["RateState", "SharedRate"]


def _wire(rate: float) -> str:
    return "0" if math.isinf(rate) else repr(float(rate))


@dataclass(frozen=True, slots=True)
class RateState:
    """The shared bucket: its rate, burst, the rate before the last cut and how long ago."""

    rate: float  # requests per second; math.inf: no limit
    burst: float
    max_rate: float  # the rate when throttling last cut it (the cubic curve's W_max)
    since_cut: float | None  # seconds since that cut, by Redis' clock; None: never cut

    @classmethod
    def parse(cls, reply: list[Any]) -> RateState:
        """Read a RATE_SET / RATE_CUT reply."""
        rate, burst, max_rate, since = (float(x) for x in reply)
        return cls(
            rate=rate if rate > 0 else math.inf,
            burst=burst,
            max_rate=max_rate if max_rate > 0 else math.inf,
            since_cut=None if since < 0 else since / 1000,
        )


class SharedRate:
    """A token bucket shared through Redis, with a settable rate."""

    def __init__(
        self,
        link: RedisLink,
        rate: float = math.inf,
        *,
        burst: float | None = None,
        max_ahead: float = 1.0,
        name: str = "rate",
        sleep: Sleep = asyncio.sleep,
        monotonic: Clock = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 requests/s (math.inf: no limit), got {rate}")
        self.link = link
        self.rate = rate  # as last seen in Redis
        self.burst = burst if burst is not None else max(1.0, rate if math.isfinite(rate) else 1)
        self.max_ahead = max_ahead
        self._key = [link.key(name)]
        self._take, self._set, self._cut = (link.script(s) for s in (RATE_TAKE, RATE_SET, RATE_CUT))
        self._sleep, self._monotonic = sleep, monotonic
        self._local_next = 0.0  # local pacing while Redis is unavailable

    def __repr__(self) -> str:
        return f"SharedRate(rate={self.rate}, burst={self.burst})"

    def _defaults(self) -> list[str]:
        # The bucket's starting values, used only by the first caller (or after a restart).
        return [_wire(self.rate), repr(float(self.burst))]

    async def acquire(self, cost: float = 1.0) -> None:
        """Wait until `cost` tokens are ours (account-wide); never fails."""
        while True:
            try:
                ok, wait_ms = await self.link.run(
                    self._take, self._key, [*self._defaults(), cost, round(self.max_ahead * 1000)]
                )
            except CoordinatorUnavailableError:
                await self._local(cost)
                return
            if wait_ms > 0:
                await self._sleep(wait_ms / 1000)
            if ok:
                return

    async def _local(self, cost: float) -> None:
        if math.isinf(self.rate):
            return
        now = self._monotonic()
        start = max(now, self._local_next)
        self._local_next = start + cost / self.rate
        if start > now:
            await self._sleep(start - now)

    async def set_rate(self, rate: float, *, burst: float | None = None) -> RateState:
        """Set the shared rate (and burst) from now on; returns the new state."""
        if rate <= 0:
            raise ValueError(f"rate must be > 0 requests/s (math.inf: no limit), got {rate}")
        new_burst = "" if burst is None else repr(float(burst))
        return self._seen(
            await self.link.run(self._set, self._key, [*self._defaults(), _wire(rate), new_burst])
        )

    async def state(self) -> RateState:
        """The shared state as Redis has it now."""
        return self._seen(await self.link.run(self._set, self._key, [*self._defaults(), "", ""]))

    async def cut(
        self, beta: float = 0.7, *, cooldown: float = 1.0, measured: float | None = None
    ) -> RateState:
        """Throttled: rate := min(rate, measured) × beta, at most once per `cooldown` seconds."""
        if not 0 < beta < 1:
            raise ValueError(f"beta must be between 0 and 1, got {beta}")
        args = [*self._defaults(), repr(beta), round(cooldown * 1000)]
        args.append("" if measured is None else repr(float(measured)))
        return self._seen(await self.link.run(self._cut, self._key, args))

    def _seen(self, reply: list[Any]) -> RateState:
        state = RateState.parse(reply)
        self.rate, self.burst = state.rate, state.burst
        return state
