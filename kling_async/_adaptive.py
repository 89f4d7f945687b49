"""The adaptive request rate's arithmetic: how fast we may send, learnt from 1302 answers.

Modelled on the AWS SDKs' "adaptive" retry mode (a client-side token bucket whose fill rate a
CUBIC curve sets), reworked for Kling; pure — no I/O, no clock of its own, every method is
given `now` — so the same rules drive a local bucket or one shared through Redis.

Phases:

- **start**: the first request opens a short slow start, `start_rate` doubling every
  `start_doubling` seconds, so a batch that opens 50 slots at once does not spend its first
  second on 1302 answers. It passes 1,000 requests/s within about two seconds, then ends.
- **free**: no limit at all (the default state once started: nothing binds in normal use).
- **cubic**: a throttling answer (1302) that is ours (below) to a request sent after the last
  cut takes the rate down to `beta` × the rate we were sending at (the send rate over the last
  `window`, or since the first send when that is later — `_rate_sample`; or if lower the allowed
  rate, or what the server took — answers not throttled in the window: from 16/s into a limit
  of 15, a W_max of 16 is throttled again every K seconds): W_max is that rate, and the allowed
  rate then climbs back along the CUBIC curve

      r(t) = W_max · (1 − (1 − beta) · (1 − t / K)³)

  which rises fast at first, flattens as it approaches W_max at t = K (where it spends a
  while, probing gently), and then grows faster and faster past it. Once it passes
  `lift` × W_max the episode is over: back to **free**.
- **steady**: when a cut comes from about the same rate as the cut before it (within `same`),
  or from the rate the server took while it refused more than `same` of what we sent over the
  window (it told us its limit: from 26 requests a second into a limit of 15 it takes 15),
  that rate is the account's limit rather than a passing burst: the curve then stays at W_max
  for `hold` seconds once it reaches it instead of growing on to free. Going free at a known
  limit only buys a burst of 1302 answers and another cut, and while the rate binds, status
  sweeps make way for queued creates; after `hold` the curve probes upwards again (the limit
  may have grown).

Which throttles are ours. A 1302 cuts only when it is ours: when more than `ignore_share` of
the last `sample` answers (by count, whatever their age; while fewer have come, the missing ones
count as accepted) were throttles, or the last `streak` in a row, or when we send at ≥
`at_limit` × W_max, a rate refused before. A limit overrun throttles a large share at once (once
its window is full, every answer: 5 in a row decide, within the first second), from the first
request on. Sparse throttles that are not ours — another process on the account, a passing
fault: 5 % of answers — stay far below that (about once in 50,000 throttles) and do not cut,
before or after a cut, at any send rate: not the first 1302 of a fresh client (cut, before, from
a send rate counted over a whole window 0.2 s after the start: far too low), nor one among the
two answers a one-second window holds at 2 requests/s. At a rate refused before (a probe past
W_max, or held at it) one throttle cuts, as likely ours as not — but from W_max, never lower: a
stray 1302 there costs one dip, while taking the moment's measure as the new W_max (0.95 × it
with 5 % throttled) would ratchet the rate to the floor one stray throttle at a time. Only a
large share or a streak lowers W_max (the limit fell). The cost: ~5 throttles to find a limit.

Why K is a number of *requests* rather than AWS's fixed scale constant: every probe past the
limit costs one or two 1302 answers, and the climb back takes about K seconds, so K = n / W_max
keeps that cost near one throttled answer per n requests whatever the limit (AWS's constant
gives K ≈ 1 s at 1 request/s: a throttled answer every couple of requests); within
`recovery` … `recovery_max` seconds.

Why a throttled request sent before the last cut, or within `window` seconds after it, never
cuts again: its answer says the *old* rate was too fast, which the cut already answered, and a
server counting requests over a window still counts the old burst for up to that long; without
this one burst of N throttled answers would cut N times (0.7^N) and leave the rate far below
the limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from ._errors import ConfigurationError
from ._rate_sample import RateSample

__all__ = ["MEASURED", "Phase", "RateController", "RateRules", "RateState"]

#: The send rate is measured over at least this many requests' worth of time.
MEASURED = 4


class Phase(Enum):
    """Where the controller is: slow start, no limit, or recovering from a cut."""

    START = "start"
    FREE = "free"
    CUBIC = "cubic"


@dataclass(frozen=True, slots=True)
class RateRules:
    """The adaptive rate's constants (requests per second, seconds)."""

    #: The rate is cut to this share of the rate that was throttled.
    beta: float = 0.7
    #: Never below this many requests per second (each waits at most 1/floor seconds).
    floor: float = 0.5
    #: The climb back to W_max takes K = recovery_requests / W_max seconds, bounded by these.
    recovery_requests: float = 30.0
    recovery: float = 2.0
    recovery_max: float = 60.0
    #: Past lift × W_max the throttling episode is over: no limit again.
    lift: float = 4.0
    #: Two cuts in a row from rates this close (a share of the first) find a steady limit, as
    #: does a cut while the server took less than (1 − same) of what we sent: the curve then
    #: stays at W_max for `hold` seconds before it probes upwards again.
    same: float = 0.25
    hold: float = 30.0
    #: A throttle cuts only when more than ignore_share of the last `sample` answers were
    #: throttles (fewer answers so far: the missing ones count as accepted); else it is not ours.
    ignore_share: float = 0.3
    sample: int = 30
    #: ... or when the last `streak` answers in a row were all throttles.
    streak: int = 5
    #: A throttle while sending at ≥ at_limit × W_max (a rate refused before) cuts on its own,
    #: from W_max: it backs off and probes again; only a share or a streak lowers W_max.
    at_limit: float = 0.95
    #: The send rate is measured over this many seconds, and a throttled request sent less
    #: than this long after a cut does not cut again (the server may still count the burst).
    window: float = 1.0
    #: Slow start: this many requests per second at first, doubling every `start_doubling`
    #: seconds until the curve passes `start_end` (then: no limit). None: no slow start.
    start_rate: float | None = 20.0
    start_doubling: float = 0.25
    start_end: float = 1000.0
    #: The user's ceiling (`Limits(rps=)`); None: none.
    cap: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.beta < 1:
            raise ConfigurationError(f"RateRules.beta must be between 0 and 1, got {self.beta}")
        for name in ("floor", "recovery_requests", "recovery", "window", "start_doubling"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"RateRules.{name} must be > 0, got {getattr(self, name)}")
        if self.recovery_max < self.recovery:
            raise ConfigurationError(
                f"RateRules.recovery_max ({self.recovery_max}) must be ≥ recovery ({self.recovery})"
            )
        for name in ("sample", "streak"):
            if getattr(self, name) < 1:
                raise ConfigurationError(
                    f"RateRules.{name} must be ≥ 1 answer, got {getattr(self, name)}"
                )
        for name in ("same", "ignore_share", "at_limit"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigurationError(
                    f"RateRules.{name} must be ≥ 0 and < 1, got {getattr(self, name)}"
                )
        if self.hold < 0:
            raise ConfigurationError(f"RateRules.hold must be ≥ 0, got {self.hold}")
        if self.lift <= 1:
            raise ConfigurationError(f"RateRules.lift must be > 1, got {self.lift}")
        for name in ("start_rate", "cap"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"RateRules.{name} must be > 0 or None, got {value}")

    def recovery_time(self, w_max: float) -> float:
        """K: seconds the curve takes to climb back to `w_max`."""
        return min(self.recovery_max, max(self.recovery, self.recovery_requests / w_max))

    def curve(self, w_max: float, since_cut: float, hold: float = 0.0) -> float:
        """The allowed rate `since_cut` seconds after a cut from `w_max`; inf once past lift.
        `hold`: seconds it stays at `w_max` once there (a steady limit)."""
        k = self.recovery_time(w_max)
        if since_cut > k:
            since_cut = max(k, since_cut - hold)
        rate = w_max * (1 - (1 - self.beta) * (1 - max(0.0, since_cut) / k) ** 3)
        return math.inf if rate >= self.lift * w_max else max(self.floor, rate)

    def start_curve(self, since_start: float) -> float:
        """The slow start's rate `since_start` seconds after the first request; inf once over."""
        if self.start_rate is None:
            return math.inf
        exponent = max(0.0, since_start) / self.start_doubling
        if exponent > 64:
            return math.inf
        rate = self.start_rate * 2**exponent
        return math.inf if rate >= self.start_end else rate


@dataclass(frozen=True, slots=True)
class RateState:
    """A snapshot: the allowed rate (inf: none), the phase, and what the last cut was."""

    rate: float
    phase: Phase
    w_max: float | None  # the rate the last cut came from (None: never cut)
    since_cut: float | None  # seconds since then
    sent_rate: float  # requests per second sent over the last window
    answered: int  # answers that were not throttles
    throttled: int  # throttling answers seen
    cuts: int  # of which cut the rate
    cap: float | None

    @property
    def throttled_share(self) -> float:
        """Throttling answers as a share of all answers (0 before any)."""
        total = self.answered + self.throttled
        return self.throttled / total if total else 0.0

    @property
    def limited(self) -> bool:
        """True while some rate (ours or the user's cap) binds."""
        return math.isfinite(self.rate)


class RateController:
    """Learns the allowed request rate from the requests sent and the answers throttled."""

    def __init__(self, rules: RateRules | None = None) -> None:
        self.rules = rules or RateRules()
        self._phase = Phase.START if self.rules.start_rate is not None else Phase.FREE
        self._started: float | None = None  # the first request
        self._w_max: float | None = None
        self._cut_at: float | None = None
        self._sample = RateSample(self.rules.sample)
        self._steady = False  # the last two cuts came from about the same rate
        self._settle: float | None = None  # the last cut: throttles sent before it settled
        self.answered_count = 0
        self.throttled_count = 0
        self.cuts = 0

    def _uncapped(self, now: float) -> float:
        rules = self.rules
        rate = math.inf
        if self._phase is Phase.START:
            rate = rules.start_curve(0.0 if self._started is None else now - self._started)
        elif self._phase is Phase.CUBIC:
            assert self._w_max is not None and self._cut_at is not None
            hold = rules.hold if self._steady else 0.0
            rate = rules.curve(self._w_max, now - self._cut_at, hold)
        if math.isinf(rate) and self._phase is not Phase.FREE:
            self._phase = Phase.FREE  # the slow start or the episode is over
        return rate

    def rate(self, now: float) -> float:
        """Requests per second allowed now (inf: no limit)."""
        rate = self._uncapped(now)
        cap = self.rules.cap
        return rate if cap is None else min(rate, cap)

    def sent(self, now: float) -> None:
        """One request leaves now (its token was granted)."""
        if self._started is None:
            self._started = now
        self._sample.sent(now, self._span(now))

    def _span(self, now: float) -> float:
        """The measuring window now: `window`, or long enough for `MEASURED` requests at the
        allowed rate (at 1 request/s a one-second count is 0, 1 or 2: too noisy to cut from)."""
        return max(self.rules.window, MEASURED / self._uncapped(now))

    def sent_rate(self, now: float) -> float:
        """Requests per second sent over the measuring window (or since sending began)."""
        return self._sample.send_rate(now, self._span(now))

    def answered(self, now: float | None = None) -> None:
        """An answer that was not a throttle came back (counted for the throttled share)."""
        self.answered_count += 1
        if now is not None:
            self._sample.answer(now, False, self._span(now))

    def throttled(self, now: float, sent_at: float) -> bool:
        """A request sent at `sent_at` was answered 1302: cut the rate if the throttle is ours
        (a large share of the last answers throttled) and it left neither before the last cut
        nor within one window after it (that cut answered this overload already).
        True if the rate was cut."""
        self.throttled_count += 1
        span = self._span(now)
        self._sample.answer(now, True, span)
        if self._settle is not None and sent_at < self._settle + self.rules.window:
            return False
        # At least the throttled request itself was sent: never measure a rate of zero.
        sending = min(self._uncapped(now), max(self._sample.send_rate(now, span), 1 / span))
        taken = self._sample.taken(now, span)
        base = min(sending, taken)
        last = self._w_max
        rules, sample = self.rules, self._sample
        if sample.throttled_share() <= rules.ignore_share and sample.streak < rules.streak:
            if last is None or sending < rules.at_limit * last:
                return False  # sparse: not ours (see the module's doc)
            base = max(base, last)  # at a rate refused before: back off, keep the limit
        # The server took far less than we sent over a whole window: that is its limit, read
        # off its answers rather than guessed from ours; as good as a limit hit twice.
        # Nor does its rate need a dip below that: the curve starts at its top (K seconds in).
        measured = taken <= (1 - rules.same) * sending
        self._steady = measured or (last is not None and abs(base - last) <= rules.same * last)
        top = rules.recovery_time(base) if measured else 0.0
        self.adopt(now, base, now - top, settle=now)
        self.cuts += 1
        return True

    def adopt(
        self, now: float, w_max: float, cut_at: float, *, settle: float | None = None
    ) -> None:
        """Follow a cut made elsewhere (e.g. by another process through a shared bucket):
        from `w_max`, its curve starting at `cut_at` on this controller's clock; throttles
        sent before `settle` (default: `cut_at`) plus one window do not cut again."""
        self._w_max = max(w_max, self.rules.floor)
        self._cut_at = cut_at
        self._settle = cut_at if settle is None else settle
        self._phase = Phase.CUBIC
        self._uncapped(now)  # an episode that is already over ends now

    def state(self, now: float) -> RateState:
        """A snapshot for progress lines and events."""
        return RateState(
            rate=self.rate(now),
            phase=self._phase,
            w_max=self._w_max,
            since_cut=None if self._settle is None else now - self._settle,
            sent_rate=self.sent_rate(now),
            answered=self.answered_count,
            throttled=self.throttled_count,
            cuts=self.cuts,
            cap=self.rules.cap,
        )
