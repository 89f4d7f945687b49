"""SlotGate: our view of the account's concurrency (a slot is held from create to terminal state).

On 1303 the limit drops to what we hold (the refused create aside): the notes' simulations show
that beats multiplicative decrease on a hard cap. It then probes +1 from time to time so a raised
cap, or slots that someone else freed, get used again. A probe goes out only when our view of
the account is fresh, so that its answer means what it seems to:

- when one of our tasks has just been seen ending (`release`) while creates wait: the sweep that
  saw it also saw every other task of ours still running, so an accepted probe proves the cap
  has room. A probe sent at any other moment may be accepted only because one of our tasks ended
  unseen, and the creates that follow such a false "yes" are refused;
- when we hold nothing (nothing of ours will end to tell us anything): on a timer;
- right after an accepted probe: the next slot is tried at once, so a cap raised by several slots
  is climbed in a few round trips.

Probes are due `probe_interval` after a refusal while we hold slots, and once `PROBE_EVERY` of
our tasks have ended since (a refused probe doubles both, up to `MAX_BACKOFF` times). While we
hold nothing, the account is full of someone else's tasks and a caller may be waiting on one
create: the first probe is due after `first_wait` (Kling's documented ≥ 1 s) and the wait
doubles, jittered, up to `probe_interval`. Either way one probe at a time: never a loop of
creates.

Slow start (opt-in; the Client turns it on): creates above the highest level Kling has accepted
so far (`confirmed`, counting only creates already answered) go out at most `RAMP` at a time, so
an over-stated `maximum` costs a couple of 1303s instead of a burst of them.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import deque

from ._gate import Slot
from ._types import Clock

__all__ = ["SlotGate"]

#: Unconfirmed creates allowed in flight above the proven level.
RAMP = 2
#: A refused probe (while we hold slots) doubles the wait before the next, up to this factor.
MAX_BACKOFF = 2
#: The empty gate's back-off waits between (1 − JITTER) and 1 times its step.
JITTER = 0.25
#: While we hold slots, a probe also waits for this many of our tasks to end since the last
#: refusal (× the back-off): with a small cap, probes every interval would be refused more often
#: per job than the few slots can run jobs, so this bounds the refused creates per job.
PROBE_EVERY = 10


class SlotGate:
    """An adaptive counting gate: `acquire` waits for a slot, `release` frees one.

    It implements `_gate.Gate` for one process (its `Slot`s carry no lease id).
    """

    def __init__(
        self,
        maximum: int,
        *,
        probe_interval: float = 30.0,
        first_wait: float = 1.0,
        slow_start: bool = False,
        monotonic: Clock = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if maximum < 1:
            raise ValueError(f"maximum must be ≥ 1, got {maximum}")
        self.maximum = maximum
        self.limit = maximum
        self.in_use = 0
        self.peak = 0
        self.rejections = 0
        self.probes = 0  # probes sent (slow start's included)
        self.probe_interval = probe_interval
        self.first_wait = first_wait
        self.confirmed = 0  # the most slots Kling has let us hold at once, answered creates only
        self.slow_start = slow_start
        self._probing = 0  # creates in flight above `confirmed`
        self._backoff = 1  # while we hold slots: × probe_interval
        self._empty_step = 0.0  # while we hold nothing: the current back-off step
        self._empty_wait = 0.0  # … and the wait drawn for it (jitter applied)
        self._refused_at: float | None = None  # our clock, at the last 1303
        self._ended = 0  # our tasks seen ending since the last 1303
        self._climb = False  # a probe was just accepted: the next may go at once
        self._raised = False  # the limit was raised by a probe not yet answered
        self._monotonic = monotonic
        self._rng = rng or random.Random()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._ids = itertools.count(1)
        self._unanswered: set[str] = set()  # creates in flight (slot taken, no answer yet)

    def __repr__(self) -> str:
        return f"SlotGate(in_use={self.in_use}, limit={self.limit}, maximum={self.maximum})"

    # -- probing ------------------------------------------------------------------------------

    def _due(self) -> float:
        """When (our clock) the next probe may go out."""
        if self._climb or self._refused_at is None:
            return float("-inf")
        if self._empty_wait:
            return self._refused_at + self._empty_wait
        if self._ended < PROBE_EVERY * self._backoff and self.in_use:
            return float("inf")  # a later release decides
        # Read now, not at the refusal: the client updates probe_interval as it learns.
        return self._refused_at + self.probe_interval * self._backoff

    def _probe(self, fresh: bool) -> float | None:
        """Raise the limit by one if a probe is due and our view is `fresh`; return seconds
        until a timed probe is due (None: no timer needed, a release or an answer wakes us)."""
        if not fresh or self.limit >= self.maximum or self._probing or self._raised:
            return None  # stale view, at the ceiling, or a probe still out: one at a time
        wait = self._due() - self._monotonic()
        if wait > 0:
            return None if wait == float("inf") else wait
        self.limit += 1
        self._climb, self._raised = False, True
        return None

    def _may_take(self) -> bool:
        if self.in_use >= self.limit:
            return False
        return not self.slow_start or self.in_use < self.confirmed or self._probing < RAMP

    async def acquire(self) -> Slot:
        """Wait for a slot and take it; `slot.probe` if it is above the proven level."""
        loop = asyncio.get_running_loop()
        while True:
            timer = self._probe(fresh=self.in_use == 0 or self._climb)
            if self._may_take():
                self.in_use += 1
                self.peak = max(self.peak, self.in_use)
                probe = self.in_use > self.confirmed
                self._probing += probe
                self.probes += probe
                slot = Slot(str(next(self._ids)), probe)
                self._unanswered.add(slot.id)
                return slot
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, timeout=timer)
            except TimeoutError:
                pass  # a timed probe is due: loop and re-check
            except BaseException:
                # Woken by release() but cancelled before taking the slot: pass the wake-up on,
                # or the next waiter sleeps while a slot stands free.
                if waiter.done() and not waiter.cancelled():
                    self._wake()
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def hold(self) -> Slot:
        """Count a slot we already hold without waiting (a running task found on resume)."""
        self.in_use += 1
        self.peak = max(self.peak, self.in_use)
        self.confirmed = max(self.confirmed, self.in_use - len(self._unanswered))
        return Slot(str(next(self._ids)))

    def _wake(self, count: int = 1) -> None:
        while count > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                count -= 1

    def _answered(self, slot: Slot) -> None:
        """The create on `slot` was answered (or will never be): it is in flight no more."""
        if slot.id in self._unanswered:
            self._unanswered.discard(slot.id)
            self._probing -= slot.probe

    # -- answers ------------------------------------------------------------------------------

    async def accepted(self, slot: Slot) -> None:
        """The create on this slot was accepted: the level we hold is proven."""
        probe = slot.probe
        self._answered(slot)
        # Creates still unanswered prove nothing yet.
        self.confirmed = max(self.confirmed, self.in_use - len(self._unanswered))
        if probe and self._raised and self.in_use >= self.limit:
            self._raised = False
            # The account had room above our limit: try the next slot now, not one interval
            # per slot, while our view is still the fresh one the probe was sent with.
            self._backoff, self._empty_step, self._empty_wait = 1, 0.0, 0.0
            self._climb = self.limit < self.maximum
        self._wake(len(self._waiters))  # a finished probe may let several creates go

    def release(self, slot: Slot) -> None:
        """Give a slot back: its task was seen ending (or its create failed before Kling took
        it). With creates waiting below the ceiling, this is when a due probe goes out."""
        self._answered(slot)  # if its create was never answered
        self.in_use = max(0, self.in_use - 1)
        self._ended += 1
        wake = 1
        if self._waiters and self.limit < self.maximum:
            before = self.limit
            self._probe(fresh=True)
            wake += self.limit - before
        self._wake(wake)

    async def rejected(self, slot: Slot) -> int:
        """A create holding a slot got 1303: return that slot, set limit = what we still hold.

        Returns how many slots we still hold. At 0 someone else fills the account: the limit
        drops to 0 too, so nothing is sent until the next timed probe (one create at a time)
        instead of a retry loop.
        """
        probe = slot.probe
        self._answered(slot)
        self.rejections += 1
        self.in_use = max(0, self.in_use - 1)
        self.limit = min(self.limit, self.in_use)
        self.confirmed = min(self.confirmed, self.in_use)
        raised, self._raised, self._climb = self._raised and probe, False, False
        self._refused_at, self._ended = self._monotonic(), 0
        self._wake(len(self._waiters))  # to wait for the new due time
        if self.in_use == 0:
            # Nothing of ours runs: a caller may be waiting on this very create. Start short
            # (Kling's documented ≥ 1 s) and double, jittered, up to the probe interval.
            floor = min(self.first_wait, self.probe_interval)
            step = floor if not self._empty_step else 2 * self._empty_step
            self._empty_step = min(self.probe_interval, step)
            jitter = 1.0 if step == floor else self._rng.uniform(1 - JITTER, 1.0)
            self._empty_wait = max(floor, self._empty_step * jitter)
            return 0
        self._empty_step = 0.0
        self._empty_wait = 0.0
        if raised:  # the cap has not risen: wait longer before the next probe
            self._backoff = min(MAX_BACKOFF, self._backoff * 2)
        return self.in_use

    def set_maximum(self, maximum: int) -> None:
        """Change the configured ceiling at run time (e.g. the user raised --concurrency)."""
        self.maximum = max(1, maximum)
        # Never refused: nothing says the account allows less than the user says.
        self.limit = self.maximum if self._refused_at is None else min(self.limit, self.maximum)
        self._wake(len(self._waiters))
