"""The adaptive rate's arithmetic (`_adaptive`): slow start, cuts, the cubic climb, the cap."""

from __future__ import annotations

import math
import random
import re
from collections import deque

import pytest

from kling_async import ConfigurationError
from kling_async._adaptive import Phase, RateController, RateRules
from kling_async._rate_sample import RateSample

NO_START = RateRules(start_rate=None)
#: Every throttle is ours (no share needed): for the tests of a cut's arithmetic, which predate
#: the share rule and need one throttle to cut, as a large share of them would.
EVERY = RateRules(start_rate=None, ignore_share=0.0)


def sending(controller: RateController, start: float, rate: float, seconds: float) -> float:
    """Record sends at `rate` per second from `start` for `seconds`; returns the last moment."""
    now = start
    for k in range(round(rate * seconds)):
        now = start + k / rate
        controller.sent(now)
    return now


def test_slow_start_doubles_then_ends_with_no_limit() -> None:
    rules = RateRules()
    controller = RateController(rules)
    assert controller.rate(0.0) == 20.0  # before the first request: the start rate
    controller.sent(10.0)  # the slow start counts from the first request
    assert controller.rate(10.0) == 20.0
    assert controller.rate(10.25) == pytest.approx(40.0)
    assert controller.rate(10.5) == pytest.approx(80.0)
    # 20 · 2^(t/0.25) passes 1000 requests/s at t ≈ 1.41 s: then no limit, for good.
    assert math.isfinite(controller.rate(11.4))
    assert controller.rate(11.5) == math.inf
    assert controller.state(11.5).phase is Phase.FREE
    assert controller.rate(11.0) == math.inf  # over is over (a later clock reading too)


def test_without_slow_start_nothing_binds() -> None:
    controller = RateController(NO_START)
    sending(controller, 0.0, 500, 1.0)
    assert controller.rate(1.0) == math.inf
    state = controller.state(1.0)
    assert state.phase is Phase.FREE and not state.limited and state.w_max is None


def test_a_throttle_cuts_to_beta_times_the_measured_send_rate() -> None:
    controller = RateController(EVERY)
    last = sending(controller, 0.0, 30, 2.0)  # 30 requests/s, no limit
    assert controller.throttled(last, sent_at=last) is True
    state = controller.state(last)
    assert state.phase is Phase.CUBIC
    assert state.w_max == pytest.approx(30.0, abs=1.0)  # one send more or less at the edge
    assert state.rate == pytest.approx(0.7 * state.w_max)
    assert (state.throttled, state.cuts) == (1, 1)


def test_a_cut_starts_from_the_allowed_rate_when_we_sent_faster() -> None:
    # During the slow start the allowed rate is the curve's: a burst above it is not the rate.
    # (10 sends in 10 ms are ~900/s, not 10/s: the rate counts the time actually covered.)
    controller = RateController(RateRules(ignore_share=0.0))
    for k in range(10):
        controller.sent(k * 0.001)
    controller.throttled(0.01, sent_at=0.009)
    assert controller.state(0.01).w_max == pytest.approx(RateRules().start_curve(0.01))
    # The allowed rate binds when it is lower than what was measured.
    controller = RateController(EVERY)
    last = sending(controller, 0.0, 40, 1.0)
    controller.throttled(last, sent_at=last)  # cut from ~40: the curve restarts at ~28
    again = sending(controller, last + 0.025, 40, 1.1)  # still sent at 40/s
    allowed = controller.rate(again)
    assert allowed < controller.sent_rate(again) - 1
    controller.throttled(again, sent_at=again)
    assert controller.state(again).w_max == pytest.approx(allowed)


def test_a_cut_starts_from_the_rate_the_server_took_when_lower() -> None:
    # Sending at 20/s into a limit of 15/s: 15 answers a second accepted, the rest throttled.
    # W_max is the 15 the server took, not the 20 sent (held at 20, it would throttle again).
    controller = RateController(EVERY)
    now = 0.0
    for k in range(40):
        now = k / 20
        controller.sent(now)
        if k % 4:  # one in four was throttled: no accepted answer
            controller.answered(now)
    assert controller.throttled(now, sent_at=now) is True
    w_max = controller.state(now).w_max
    assert w_max == pytest.approx(15.0, abs=1.0)
    # Too few answers in the window to tell (none timed): the send rate alone, as before.
    controller = RateController(EVERY)
    last = sending(controller, 0.0, 20, 2.0)
    controller.throttled(last, sent_at=last)
    assert controller.state(last).w_max == pytest.approx(20.0, abs=1.0)


def test_throttles_from_before_the_cut_or_its_settling_window_do_not_cut_again() -> None:
    controller = RateController(EVERY)
    last = sending(controller, 0.0, 50, 1.0)
    assert controller.throttled(last, sent_at=last)
    cut_rate = controller.rate(last)
    # The rest of the same burst, and requests sent while the server still counts it.
    for sent_at in (last - 0.5, last, last + 0.5, last + 0.99):
        assert controller.throttled(last + 1.0, sent_at=sent_at) is False
    assert controller.state(last + 1.0).cuts == 1
    assert controller.rate(last) == cut_rate
    # A request sent a whole window after the cut that is throttled says the new rate is too
    # fast as well: cut again.
    assert controller.throttled(last + 1.2, sent_at=last + 1.05) is True
    assert controller.state(last + 1.2).cuts == 2


def test_the_cubic_curve_climbs_back_to_w_max_flattens_then_passes_it() -> None:
    rules = RateRules(start_rate=None)
    w_max = 15.0
    k = rules.recovery_time(w_max)
    assert k == pytest.approx(2.0)  # 30 requests at 15/s, bounded below by 2 s
    assert rules.curve(w_max, 0.0) == pytest.approx(0.7 * w_max)
    assert rules.curve(w_max, k) == pytest.approx(w_max)
    # Concave before K, convex after: steep, flat near W_max, steep again.
    early = rules.curve(w_max, 0.2 * k) - rules.curve(w_max, 0.0)
    near = rules.curve(w_max, 1.1 * k) - rules.curve(w_max, 0.9 * k)
    late = rules.curve(w_max, 2.2 * k) - rules.curve(w_max, 2.0 * k)
    assert near < early and near < late
    values = [rules.curve(w_max, t / 10) for t in range(0, 60)]
    finite = [v for v in values if math.isfinite(v)]
    assert finite == sorted(finite)  # never falls while nothing throttles
    # Past lift × W_max the episode is over: no limit.
    assert rules.curve(w_max, 10 * k) == math.inf


def test_recovery_time_is_a_number_of_requests_within_bounds() -> None:
    rules = RateRules()
    assert rules.recovery_time(1.0) == 30.0  # 30 requests at 1/s
    assert rules.recovery_time(0.2) == 60.0  # bounded by recovery_max
    assert rules.recovery_time(1000.0) == 2.0  # bounded by recovery


def test_the_episode_ends_and_the_limit_is_lifted() -> None:
    controller = RateController(EVERY)
    last = sending(controller, 0.0, 20, 1.0)
    controller.throttled(last, sent_at=last)
    assert controller.state(last + 2.0).phase is Phase.CUBIC
    assert controller.rate(last + 60.0) == math.inf
    assert controller.state(last + 60.0).phase is Phase.FREE


def test_the_rate_never_falls_below_the_floor() -> None:
    controller = RateController(RateRules(start_rate=None, floor=0.5, ignore_share=0.0))
    now = 0.0
    for _ in range(20):  # throttled again and again, each time a window after the last cut
        controller.sent(now)
        controller.throttled(now, sent_at=now)
        now += 1.5
    assert controller.rate(now) >= 0.5
    assert controller.state(now).w_max == 0.5


def test_the_cap_binds_in_every_phase() -> None:
    rules = RateRules(cap=5.0, ignore_share=0.0)
    controller = RateController(rules)
    assert controller.rate(0.0) == 5.0  # slow start at 20, capped
    controller.sent(0.0)
    assert controller.rate(100.0) == 5.0  # free, capped
    controller.throttled(100.0, sent_at=100.0)  # 1 request in the window: cut from 1/s
    assert controller.rate(100.0) == pytest.approx(0.7)
    assert controller.rate(10_000.0) == 5.0
    assert controller.state(0.0).cap == 5.0


def test_adopt_follows_a_cut_made_elsewhere() -> None:
    controller = RateController(NO_START)
    controller.adopt(now=10.0, w_max=8.0, cut_at=9.0)  # e.g. another process, a second ago
    assert controller.rate(10.0) == pytest.approx(RateRules().curve(8.0, 1.0))
    assert controller.state(10.0).since_cut == pytest.approx(1.0)
    # A cut so long ago that its episode is over changes nothing.
    controller = RateController(NO_START)
    controller.adopt(now=1000.0, w_max=8.0, cut_at=0.0)
    assert controller.rate(1000.0) == math.inf
    assert controller.state(1000.0).phase is Phase.FREE


def test_low_rates_are_measured_over_several_requests() -> None:
    # At 1 request/s a one-second window would count 0, 1 or 2: the window stretches to four
    # requests' worth of the allowed rate.
    controller = RateController(NO_START)
    controller.adopt(now=0.0, w_max=1.0, cut_at=0.0)  # allowed 0.7/s
    for k in range(12):
        controller.sent(k * 1.0)
    assert controller.sent_rate(11.0) == pytest.approx(1.0, rel=0.2)


def test_answers_are_counted_for_the_throttled_share() -> None:
    controller = RateController(NO_START)
    for _ in range(9):
        controller.answered()
    controller.sent(0.0)
    controller.throttled(0.0, sent_at=0.0)
    assert controller.state(0.0).throttled_share == pytest.approx(0.1)
    assert RateController().state(0.0).throttled_share == 0.0


def test_a_limit_hit_twice_is_held_rather_than_lifted() -> None:
    rules = RateRules(start_rate=None, hold=30.0, ignore_share=0.0)
    controller = RateController(rules)
    last = sending(controller, 0.0, 20, 2.0)
    controller.throttled(last, sent_at=last)  # first cut from ~20/s: no steady limit yet
    k = rules.recovery_time(20.0)
    assert controller.rate(last + k + 10.0) > 20.0  # past K the curve grows on
    now = sending(controller, last + 5.0, 20, 2.0)  # ~20/s again, throttled again
    assert controller.throttled(now, sent_at=now) is True
    w_max = controller.state(now).w_max
    assert w_max is not None and w_max == pytest.approx(20.0, abs=1.5)
    for later in (k, k + 5.0, k + 29.0):  # held at W_max for `hold` seconds past K
        assert controller.rate(now + later) == pytest.approx(w_max)
    assert controller.state(now + k + 29.0).phase is Phase.CUBIC
    assert controller.rate(now + k + 31.0) > w_max  # then probing upwards again
    assert controller.rate(now + k + 30.0 + 60.0) == math.inf  # and free once far past it


def test_a_cut_from_a_different_rate_is_no_steady_limit() -> None:
    controller = RateController(EVERY)
    last = sending(controller, 0.0, 40, 2.0)
    controller.throttled(last, sent_at=last)  # from ~40/s
    now = sending(controller, last + 5.0, 10, 2.0)
    controller.throttled(now, sent_at=now)  # from ~10/s (a fall far below: not ignored below)
    k = controller.rules.recovery_time(10.0)
    assert controller.rate(now + k + 5.0) > controller.state(now).w_max + 1  # not held


def accepted(controller: RateController, start: float, rate: float, seconds: float) -> float:
    """Sends at `rate` whose answers are all accepted; returns the last moment."""
    now = start
    for k in range(round(rate * seconds)):
        now = start + k / rate
        controller.sent(now)
        controller.answered(now)
    return now


class Account:
    """A server on virtual time: a random share of 1302s that are not ours, and optionally a
    limit of `limit` requests in any one-second sliding window (as the simulator)."""

    def __init__(self, *, noise: float = 0.0, limit: float | None = None, seed: int = 0) -> None:
        self.noise, self.limit, self.rng = noise, limit, random.Random(seed)
        self.window: deque[float] = deque()
        self.cuts_at: list[float] = []

    def admit(self, now: float) -> bool:
        if self.limit is not None:
            while self.window and self.window[0] <= now - 1.0:
                self.window.popleft()
            if len(self.window) + 1 > self.limit:
                return False
        if self.rng.random() < self.noise:
            return False
        if self.limit is not None:
            self.window.append(now)
        return True

    def drive(self, controller: RateController, demand: float, until: float) -> float:
        """Send as fast as `demand` and the allowed rate let us, answered 50 ms later; returns
        the end. Cuts are recorded in `cuts_at`."""
        now, answers = 0.0, deque[tuple[float, float, bool]]()
        while now < until:
            controller.sent(now)
            answers.append((now + 0.05, now, self.admit(now)))
            step = max(1 / demand, 1 / controller.rate(now))
            now += step
            while answers and answers[0][0] <= now:
                at, sent_at, ok = answers.popleft()
                if ok:
                    controller.answered(at)
                elif controller.throttled(at, sent_at=sent_at):
                    self.cuts_at.append(at)
        return now


@pytest.mark.parametrize("seed", range(5))
def test_sparse_random_throttles_do_not_cut_a_fresh_controller(seed: int) -> None:
    # 5 % of answers a 1302 that is not ours, no limit, ~30 requests/s for 20 s: the first
    # throttle no longer cuts (it did, from a send rate measured over a whole window 0.2 s
    # after the start), nor any later one (each was "near W_max" after that first cut).
    controller = RateController()
    account = Account(noise=0.05, seed=seed)
    end = account.drive(controller, demand=30.0, until=20.0)
    state = controller.state(end)
    assert state.throttled >= 15  # the faults were met
    assert state.cuts <= 1, account.cuts_at
    assert controller.rate(end) >= 0.7 * state.sent_rate >= 0.7 * 25


def test_sparse_random_throttles_do_not_ratchet_a_learnt_limit_down() -> None:
    # At a limit learnt before (20/s), a stray 1302 backs off (ours as far as we can tell) but
    # the limit stays: one throttle each time must not lower W_max by what it cost (ratchet).
    controller = RateController(NO_START)
    controller.adopt(now=0.0, w_max=20.0, cut_at=-10.0)
    end = Account(noise=0.05, seed=3).drive(controller, demand=20.0, until=60.0)
    state = controller.state(end)
    assert state.cuts >= 1 and state.w_max == 20.0


def test_a_limit_overrun_from_the_start_is_cut_within_the_first_second() -> None:
    # 50 slots into a limit of 15/s: the slow start overruns it, a large share is throttled
    # at once, and the cut comes within the first second, from what the server took.
    controller = RateController()
    account = Account(limit=15.0)
    end = account.drive(controller, demand=1000.0, until=2.0)
    assert account.cuts_at and account.cuts_at[0] < 1.0
    state = controller.state(end)
    assert state.w_max is not None and state.w_max <= 15.0 * 1.1
    # Five in a row decide (the old rule: one), the rest were in flight or sent while the
    # server still counted the burst (the old rule: 11 in all).
    assert state.cuts == 1 and state.throttled <= 16


def test_a_limit_that_really_fell_still_cuts_far_below_the_old_one() -> None:
    controller = RateController(NO_START)
    controller.adopt(now=0.0, w_max=30.0, cut_at=-100.0)  # learnt long ago
    now = accepted(controller, 0.0, 12, 2.0)
    cut = False
    for k in range(24):  # 12/s, far below W_max, most of them throttled: the limit fell
        now += 1 / 12
        controller.sent(now)
        if k % 4:
            cut = controller.throttled(now, sent_at=now) or cut
        else:
            controller.answered(now)
    assert cut and controller.state(now).cuts == 1
    w_max = controller.state(now).w_max
    assert w_max is not None and w_max <= 12.0


def test_the_send_rate_counts_the_time_actually_covered() -> None:
    # 0.2 s after the first request, 7 sends are 30 requests/s, not 7 per (one-second) window.
    controller = RateController(NO_START)
    for k in range(7):
        controller.sent(k / 30)
    assert controller.sent_rate(0.2) == pytest.approx(30.0, rel=0.05)
    assert controller.sent_rate(5.0) == 0.0  # and nothing sent lately is nothing


def test_the_share_is_judged_over_the_last_answers_by_count() -> None:
    # At 2 requests/s one throttle is a third of a one-second window, but 1 of 30 answers.
    controller = RateController(NO_START)
    controller.adopt(now=0.0, w_max=10.0, cut_at=-100.0)
    now = accepted(controller, 0.0, 2, 20.0)
    controller.sent(now + 0.5)
    assert controller.throttled(now + 0.5, sent_at=now + 0.5) is False
    # A fresh controller: its first answers, one in three throttled, decide nothing either.
    controller = RateController(NO_START)
    for k in range(6):
        controller.sent(k * 0.01)
        if k % 3:
            controller.answered(k * 0.01)
        else:
            assert controller.throttled(k * 0.01, sent_at=k * 0.01) is False


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("beta", 1.0, "beta must be between 0 and 1"),
        ("beta", 0.0, "beta must be between 0 and 1"),
        ("floor", 0.0, "floor must be > 0"),
        ("window", -1.0, "window must be > 0"),
        ("recovery_max", 1.0, "recovery_max (1.0) must be ≥ recovery (2.0)"),
        ("lift", 1.0, "lift must be > 1"),
        ("same", 1.0, "same must be ≥ 0 and < 1"),
        ("ignore_share", -0.1, "ignore_share must be ≥ 0 and < 1"),
        ("at_limit", 1.0, "at_limit must be ≥ 0 and < 1"),
        ("sample", 0, "sample must be ≥ 1 answer, got 0"),
        ("streak", 0, "streak must be ≥ 1 answer, got 0"),
        ("hold", -1.0, "hold must be ≥ 0"),
        ("cap", 0.0, "cap must be > 0 or None"),
        ("start_rate", -5.0, "start_rate must be > 0 or None"),
    ],
)
def test_rules_are_checked(field: str, value: float, says: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(f"RateRules.{says}")):
        RateRules(**{field: value})


def test_what_is_measured_is_bounded_by_the_span() -> None:
    # A long run without a throttle keeps a window's sends and answers, not all of them.
    sample = RateSample(30)
    for k in range(100_000):
        sample.sent(k / 1000, keep=1.0)
        sample.answer(k / 1000, False, keep=1.0)
    assert len(sample._sends) <= 1001 and len(sample._answers) <= 1001
    assert sample.send_rate(99.999, 1.0) == pytest.approx(1000.0, rel=0.01)
