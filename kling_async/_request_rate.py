"""RequestRate: one adaptive request rate for every API request of a client.

`await rate.acquire(lane)` returns when the request may leave, with a ticket (the moment it
left); the answer is reported with `on_success()` (any answer that was not a throttle) or
`on_throttled(ticket)` (1302). Waiting for a token is never a failure: `acquire` has no
timeout and raises nothing but cancellation.

How fast tokens come is `RateController`'s business (`_adaptive`); where they live is a
`TokenStore`'s: `LocalTokens` here, or a bucket shared by several processes (Redis). While no
rate binds and nobody waits, `acquire` returns at once without touching the store.

Fairness. Waiters queue in *lanes* (e.g. "create" and "status"), each first-in first-out, and
the lanes take turns: when both are waiting, tokens alternate. So a status sweep waits behind at
most one create however many creates queue (a sweep is one request that reports hundreds of
tasks: delaying it behind N creates would leave finished tasks' slots idle for N/rate seconds),
and creates keep at least half the rate while sweeps are backlogged (the tracker sends one
sweep at a time, so in practice they keep far more). A fixed reservation for status reads was
the alternative; it wastes its share when nothing is read and needs a size to tune.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ._adaptive import RateController, RateRules, RateState
from ._types import Clock, Sleep

__all__ = ["LocalTokens", "RateView", "RequestRate", "TokenBucket", "TokenStore"]

#: A waiting token store looks at the rate again at least this often (it may have been cut or
#: have grown since).
RECHECK = 0.25
#: A lane served this recently still counts as queueing (see `RequestRate.runway`).
RECENT = 1.0
#: Seconds of tokens a bucket keeps beyond its one whole token, so that waking late (the event
#: loop's timers, a busy loop: ~1 ms a token) costs no throughput; it fills that share slower.
#: Without it a rate of 15/s granted 14.75 a second here: a 1302 limit's last 1.7 % unused.
CATCH_UP = 0.005
#: A bucket this close to a whole token has one: float rounding must not leave a waiter sleeping
#: for 1e-18 s forever.
_EPSILON = 1e-9


class TokenBucket:
    """Tokens filling at about `rate` per second: one whole token, plus `CATCH_UP` seconds' worth
    that a late wake-up may use (in any window of a second or more, at most 1 + rate·w requests
    leave, whatever window the server counts in)."""

    def __init__(self, rate: float = math.inf, *, now: float = 0.0) -> None:
        self.rate = rate
        self._tokens = 1.0
        self._at = now

    def _fill(self, now: float) -> None:
        if now > self._at:
            if math.isinf(self.rate):
                self._tokens = 1.0
            else:
                # Kept: CATCH_UP seconds of tokens beyond the whole one; paid for by filling
                # that much slower (1 + CATCH_UP·r + r·(1 − CATCH_UP)·1 s = 1 + r a second).
                gained = (now - self._at) * self.rate * (1.0 - CATCH_UP)
                self._tokens = min(1.0 + CATCH_UP * self.rate, self._tokens + gained)
            self._at = now

    def set_rate(self, rate: float, now: float) -> None:
        """Fill at `rate` from `now` on (what accrued so far accrued at the old rate)."""
        self._fill(now)
        self.rate = rate

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0: now)."""
        self._fill(now)
        if self._tokens >= 1.0 - _EPSILON or math.isinf(self.rate):
            return 0.0
        return (1.0 - self._tokens) / (self.rate * (1.0 - CATCH_UP))

    def take(self, now: float) -> None:
        """Use one token (the caller waited for it)."""
        self._fill(now)
        self._tokens = 0.0 if math.isinf(self.rate) else max(0.0, self._tokens - 1.0)


class TokenStore(Protocol):
    """Where tokens live: `take` returns once one is ours at the rate `rate()` says now."""

    async def take(self, rate: Callable[[], float]) -> None:
        """Wait for one token (never fails for lack of one); `rate()` may change meanwhile."""


class LocalTokens:
    """Tokens of this process alone: a `TokenBucket` on the injected clock."""

    def __init__(self, *, monotonic: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self._monotonic = monotonic
        self._sleep = sleep
        self.bucket = TokenBucket(now=monotonic())

    async def take(self, rate: Callable[[], float]) -> None:
        """Wait for one token, re-reading the rate at least every RECHECK seconds."""
        while True:
            now = self._monotonic()
            self.bucket.set_rate(rate(), now)
            wait = self.bucket.wait(now)
            if wait <= 0:
                self.bucket.take(now)
                return
            await self._sleep(min(wait, RECHECK))


@dataclass(frozen=True, slots=True)
class RateView:
    """What `RequestRate.state()` shows: the controller's state and who is waiting."""

    rate: RateState
    waiting: dict[str, int]

    @property
    def throttled(self) -> bool:
        """True while requests wait for tokens because of a throttling episode."""
        return self.rate.cuts > 0 and self.rate.limited and any(self.waiting.values())


class RequestRate:
    """The client's request rate: adaptive, shared by all its requests, fair between lanes."""

    def __init__(
        self,
        rules: RateRules | None = None,
        *,
        store: TokenStore | None = None,
        monotonic: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.controller = RateController(rules)
        self._monotonic = monotonic
        self._store = store or LocalTokens(monotonic=monotonic, sleep=sleep)
        self._lanes: dict[str, deque[asyncio.Future[float]]] = {}
        self._turn = 0  # index of the lane whose turn it is
        self._pump: asyncio.Task[None] | None = None
        self._served: dict[str, float] = {}  # when each lane's last waiter got its token
        #: Called with a lane's name when its last waiter got its token.
        self.on_drained: Callable[[str], None] | None = None
        #: Called with the rate measured (W_max) when a 1302 cut the rate: to share the cut.
        self.on_cut: Callable[[float], None] | None = None

    def __repr__(self) -> str:
        state = self.controller.state(self._monotonic())
        return f"RequestRate(rate={state.rate:g}, phase={state.phase.value}, cuts={state.cuts})"

    def _rate(self) -> float:
        return self.controller.rate(self._monotonic())

    def _waiting(self) -> bool:
        return any(self._lanes.values())

    async def acquire(self, lane: str = "default") -> float:
        """Wait for this request's turn and token; returns its ticket (when it left)."""
        now = self._monotonic()
        if not self._waiting() and math.isinf(self.controller.rate(now)):
            self.controller.sent(now)
            return now
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._lanes.setdefault(lane, deque()).append(waiter)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.ensure_future(self._run())
        try:
            return await waiter
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):
                self._lanes[lane].remove(waiter)
            raise

    def _next(self) -> asyncio.Future[float] | None:
        """The waiter whose turn it is: lanes in turn, each first in first out."""
        lanes = list(self._lanes.items())
        for step in range(len(lanes)):
            index = (self._turn + step) % len(lanes)
            name, queue = lanes[index]
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    self._turn = index + 1
                    self._served[name] = self._monotonic()
                    if not queue and self.on_drained is not None:
                        self.on_drained(name)
                    return waiter
        return None

    async def _run(self) -> None:
        """Hand out tokens while anyone waits."""
        try:
            while self._waiting():
                await self._store.take(self._rate)
                waiter = self._next()
                if waiter is None:
                    return  # every waiter was cancelled meanwhile: this token is lost
                now = self._monotonic()
                self.controller.sent(now)
                waiter.set_result(now)
        except asyncio.CancelledError:
            self._fail(asyncio.CancelledError())
            raise
        except Exception as exc:  # a shared store that failed: every waiter learns why
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        for queue in self._lanes.values():
            while queue:
                waiter = queue.popleft()
                if waiter.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    waiter.cancel()
                else:
                    waiter.set_exception(exc)

    def on_success(self) -> None:
        """An answer that was not a throttle (success or any other error) came back."""
        self.controller.answered(self._monotonic())

    def on_throttled(self, ticket: float) -> bool:
        """The request that left at `ticket` was answered 1302; True if that cut the rate."""
        now = self._monotonic()
        cut = self.controller.throttled(now, ticket)
        w_max = self.controller.state(now).w_max
        if cut and self.on_cut is not None and w_max is not None:
            self.on_cut(w_max)
        return cut

    def share(self, store: TokenStore) -> None:
        """Take tokens from `store` from now on (a bucket shared by several processes)."""
        self._store = store

    def adopt(self, w_max: float, since_cut: float) -> None:
        """Follow a cut made elsewhere `since_cut` seconds ago, from `w_max`."""
        now = self._monotonic()
        self.controller.adopt(now, w_max, now - since_cut)

    def runway(self, lane: str, unheld: int, free: int) -> float:
        """Seconds until `lane` runs dry for lack of slots while the rate binds (0: it does not).

        A lane whose last waiter got its token less than `RECENT` seconds ago still counts as
        waiting: at a binding rate it empties and fills again with every token. `unheld`: slots
        not held by running tasks — each is a request of `lane` still to come (queued, being
        prepared, or a free slot's next one); `free`: slots nobody has taken. One token goes to
        whoever asks for the slots back (a status sweep), so one is not counted. A lane that is
        empty while slots stand free does not wait for slots: 0."""
        rate = self._rate()
        waiting = sum(not w.done() for w in self._lanes.get(lane, ()))
        recent = self._monotonic() - self._served.get(lane, -math.inf) < RECENT
        if math.isinf(rate) or not (waiting or recent) or (free and not waiting):
            return 0.0
        return max(waiting, unheld - 1, 0) / rate

    def state(self) -> RateView:
        """The rate now, and how many requests wait in each lane."""
        waiting = {lane: sum(not w.done() for w in queue) for lane, queue in self._lanes.items()}
        return RateView(self.controller.state(self._monotonic()), waiting)

    async def aclose(self) -> None:
        """Stop handing out tokens; waiters are cancelled."""
        pump, self._pump = self._pump, None
        if pump is not None and not pump.done():
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        self._fail(asyncio.CancelledError())
