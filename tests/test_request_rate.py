"""RequestRate (`_request_rate`): tokens, lanes, cancellation, and 1302 limits on virtual time.

Every test runs on `virtual_time`'s loop: `asyncio.sleep` and `loop.time()` are the injected
sleep and clock, so minutes of pacing take milliseconds and nothing depends on machine load.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import random
from collections import deque
from collections.abc import Callable

import pytest
from virtual_time import clock, run

from kling_async._adaptive import RateRules
from kling_async._request_rate import CATCH_UP, LocalTokens, RequestRate, TokenBucket

NO_START = RateRules(start_rate=None)
#: A bucket fills CATCH_UP (seconds per second) slower than its rate: what waking late may use.
SLOWER = 1 / (1 - CATCH_UP)
#: Every 1302 cuts (no share of throttles needed): for tests of what a cut does to the tokens.
EVERY = RateRules(start_rate=None, ignore_share=0.0)


def capped(rps: float) -> RateRules:
    return RateRules(start_rate=None, cap=rps)


class WindowServer:
    """Answers 1302 above `limit` requests in any one-second sliding window (as the simulator)."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._window: deque[float] = deque()
        self.accepted = 0
        self.throttled = 0

    def admit(self, now: float) -> bool:
        while self._window and self._window[0] <= now - 1.0:
            self._window.popleft()
        if len(self._window) + 1 > self.limit:
            self.throttled += 1
            return False
        self._window.append(now)
        self.accepted += 1
        return True


async def clients(
    rate: RequestRate, server: WindowServer, *, workers: int, until: float, latency: float = 0.05
) -> None:
    """`workers` coroutines sending back to back (one in lane "status", the rest "create")."""

    async def worker(index: int) -> None:
        while clock() < until:
            ticket = await rate.acquire("status" if index == 0 else "create")
            await asyncio.sleep(latency / 2)
            admitted = server.admit(clock())
            await asyncio.sleep(latency / 2)
            if admitted:
                rate.on_success()
            else:
                rate.on_throttled(ticket)

    await asyncio.gather(*(worker(i) for i in range(workers)))


# -- the bucket -------------------------------------------------------------------------------


def test_bucket_holds_one_token_and_fills_at_its_rate() -> None:
    bucket = TokenBucket(2.0, now=0.0)
    assert bucket.wait(0.0) == 0.0
    bucket.take(0.0)
    assert bucket.wait(0.0) == pytest.approx(0.5 * SLOWER)
    assert bucket.wait(0.25) == pytest.approx(0.5 * SLOWER - 0.25)
    bucket.take(10.0)  # a long idle leaves one token and a sliver (CATCH_UP s), not twenty
    assert bucket.wait(10.0) == pytest.approx((0.5 - CATCH_UP) * SLOWER)


def test_bucket_rate_changes_apply_from_then_on() -> None:
    bucket = TokenBucket(1.0, now=0.0)
    bucket.take(0.0)
    half = 0.5 * SLOWER  # half a token accrued at 1/s; the other half at 10/s
    bucket.set_rate(10.0, half)
    assert bucket.wait(half) == pytest.approx(0.05 * SLOWER)
    bucket.set_rate(math.inf, half)
    assert bucket.wait(half) == 0.0


@pytest.mark.parametrize("rate", [1.0, 15.0, 200.0])
def test_waking_late_costs_no_throughput_and_no_second_holds_more_than_its_rate(
    rate: float,
) -> None:
    """A taker that wakes up to CATCH_UP late (the event loop's timers) still gets the rate less
    CATCH_UP; without the carry it lost each lateness (15/s granted 14.75/s here). And however
    the lateness falls, no window of one second holds more than 1 + rate grants."""
    rng = random.Random(7)
    for late in (lambda: CATCH_UP, lambda: rng.uniform(0, CATCH_UP), lambda: 0.0):
        bucket = TokenBucket(rate, now=0.0)
        grants: list[float] = []
        now = 0.0
        while len(grants) < 20 * rate + 1:
            now += bucket.wait(now)
            if grants:
                now += late()
            bucket.take(now)
            grants.append(now)
        granted = (len(grants) - 1) / (grants[-1] - grants[0])
        assert granted >= rate * (1 - CATCH_UP) * 0.999
        assert granted <= rate
        per_second = max(bisect.bisect_right(grants, t + 1.0) - k for k, t in enumerate(grants))
        assert per_second <= 1 + rate


# -- acquire ----------------------------------------------------------------------------------


def test_no_limit_means_no_waiting_and_no_background_task() -> None:
    async def main() -> None:
        rate = RequestRate(NO_START, monotonic=clock)
        tickets = [await rate.acquire("create") for _ in range(1000)]
        assert tickets == [0.0] * 1000 and clock() == 0.0
        assert rate._pump is None
        state = rate.state()
        assert state.rate.rate == math.inf and not state.throttled
        assert state.rate.sent_rate == 1000.0

    run(main())


def test_a_cap_paces_requests_evenly() -> None:
    async def main() -> None:
        rate = RequestRate(capped(10.0), monotonic=clock)
        tickets = await asyncio.gather(*(rate.acquire() for _ in range(21)))
        assert sorted(tickets) == pytest.approx([k / 10 * SLOWER for k in range(21)])
        assert clock() == pytest.approx(2.0 * SLOWER)

    run(main())


def test_lanes_take_turns_and_each_is_first_in_first_out() -> None:
    async def main() -> None:
        rate = RequestRate(capped(1.0), monotonic=clock)
        order: list[str] = []

        async def one(lane: str, name: str) -> None:
            await rate.acquire(lane)
            order.append(name)

        creates = [asyncio.ensure_future(one("create", f"c{k}")) for k in range(6)]
        await asyncio.sleep(0)
        sweeps = [asyncio.ensure_future(one("status", f"s{k}")) for k in range(2)]
        await asyncio.gather(*creates, *sweeps)
        # The lanes alternate while both wait: a sweep waits behind at most one create, not
        # behind the five queued before it; each lane keeps its own order.
        assert order == ["c0", "s0", "c1", "s1", "c2", "c3", "c4", "c5"]
        assert clock() == pytest.approx(7.0 * SLOWER)

    run(main())


def test_waiting_counts_per_lane_and_throttled_view() -> None:
    async def main() -> None:
        rate = RequestRate(EVERY, monotonic=clock)
        for _ in range(30):
            await rate.acquire()
        ticket = await rate.acquire()
        assert rate.on_throttled(ticket) is True
        waiters = [asyncio.ensure_future(rate.acquire("create")) for _ in range(3)]
        waiters.append(asyncio.ensure_future(rate.acquire("status")))
        await asyncio.sleep(0.001)  # the first token is there at once, the next in 1/21.7 s
        state = rate.state()
        assert state.throttled and state.rate.cuts == 1
        assert sum(state.waiting.values()) == 3  # one of the four already has its token
        await asyncio.gather(*waiters)
        assert not rate.state().throttled  # nobody waits any more
        assert "RequestRate(rate=" in repr(rate)

    run(main())


def test_a_cut_slows_requests_already_waiting() -> None:
    async def main() -> None:
        rate = RequestRate(RateRules(start_rate=None, cap=10.0, ignore_share=0.0), monotonic=clock)
        first = await rate.acquire()
        waiters = [asyncio.ensure_future(rate.acquire()) for _ in range(5)]
        await asyncio.sleep(0)
        rate.on_throttled(first)  # 1 request in the window: down to 0.7/s at once
        tickets = await asyncio.gather(*waiters)
        # Only the token already accruing at 10/s comes early; the rest follow the new rate.
        gaps = [b - a for a, b in itertools.pairwise(tickets)]
        assert all(gap > 1.0 for gap in gaps)

    run(main())


def test_a_cancelled_waiter_leaves_the_queue_and_loses_no_token() -> None:
    async def main() -> None:
        rate = RequestRate(capped(1.0), monotonic=clock)
        await rate.acquire()
        doomed = asyncio.ensure_future(rate.acquire())
        kept = asyncio.ensure_future(rate.acquire())
        await asyncio.sleep(0.5)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert await kept == pytest.approx(SLOWER)  # the next token went to the next waiter
        assert rate.state().waiting == {"default": 0}

    run(main())


def test_aclose_cancels_waiters() -> None:
    async def main() -> None:
        rate = RequestRate(capped(0.5), monotonic=clock)
        await rate.acquire()
        waiters = [asyncio.ensure_future(rate.acquire()) for _ in range(3)]
        await asyncio.sleep(0.1)
        await rate.aclose()
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)

    run(main())


class BrokenStore:
    """A shared store whose backend went away for good."""

    async def take(self, rate: Callable[[], float]) -> None:
        raise ConnectionError("coordinator gone")


def test_a_failing_store_fails_the_waiters_with_its_error() -> None:
    async def main() -> None:
        rate = RequestRate(capped(1.0), store=BrokenStore(), monotonic=clock)
        results = await asyncio.gather(rate.acquire(), rate.acquire(), return_exceptions=True)
        assert [type(r) for r in results] == [ConnectionError, ConnectionError]

    run(main())


def test_local_tokens_follow_the_rate_function_while_waiting() -> None:
    async def main() -> None:
        current = [0.1]
        tokens = LocalTokens(monotonic=clock, sleep=asyncio.sleep)
        await tokens.take(lambda: current[0])  # the first token is there
        waiting = asyncio.ensure_future(tokens.take(lambda: current[0]))
        await asyncio.sleep(1.0)
        assert not waiting.done()  # 10 s per token at 0.1/s
        current[0] = math.inf  # the limit is lifted: seen at the next recheck
        await waiting
        assert clock() <= 1.0 + 0.25 + 1e-9

    run(main())


# -- against a server that throttles at a fixed rate ------------------------------------------


@pytest.mark.parametrize(
    ("limit", "workers", "max_share", "min_rate"),
    [
        (1.0, 5, 0.09, 0.85),
        (15.0, 50, 0.04, 0.9),
        (100.0, 50, 0.01, 0.9),
    ],
)
def test_a_fixed_limit_is_found_and_followed(
    limit: float, workers: int, max_share: float, min_rate: float
) -> None:
    """Few 1302s, most of the limit used, for limits from 1 to 100 requests/s."""
    seconds = 240.0
    server = WindowServer(limit)

    async def main() -> None:
        rate = RequestRate(monotonic=clock)  # the defaults: slow start, no ceiling
        await clients(rate, server, workers=workers, until=seconds)
        state = rate.state().rate
        assert state.throttled == server.throttled and state.answered == server.accepted
        await rate.aclose()

    run(main())
    share = server.throttled / (server.throttled + server.accepted)
    assert share <= max_share
    assert server.accepted / seconds >= min_rate * limit


def test_a_burst_at_the_start_costs_few_throttles() -> None:
    """50 slots opening at once against 15 requests/s: the slow start keeps the burst small,
    one cut answers each overload (not one per throttled answer), and the rate settles at the
    limit within a few seconds."""
    server = WindowServer(15.0)

    async def main() -> None:
        rate = RequestRate(monotonic=clock)
        await clients(rate, server, workers=50, until=1.0)  # ~60 requests, the last ones at ~4 s
        state = rate.state().rate
        assert state.cuts <= 3
        assert state.w_max == pytest.approx(15.0, abs=1.0)

    run(main())
    assert server.throttled <= 20


def test_a_limit_the_server_measured_is_followed_at_once_and_held() -> None:
    """The slow start overruns 15/s and the server takes 15 in that second of far more sent: 15
    is its limit, read off its answers. The rate goes to it at once (no dip to 0.7 × 15 and
    climb back: ~1 request lost) and stays there (no probe past it once the climb would be
    over: a second cut, ~4 requests lost) for `hold` seconds; then it probes upwards again."""
    server = WindowServer(15.0)
    rules = RateRules()

    async def main() -> None:
        rate = RequestRate(rules, monotonic=clock)
        await clients(rate, server, workers=50, until=20.0)
        state = rate.state().rate
        assert state.cuts == 1 and state.w_max == pytest.approx(15.0)
        assert state.since_cut is not None
        cut = clock() - state.since_cut
        for later in (0.0, 1.0, rules.recovery_time(15.0), 10.0, rules.hold - 0.1):
            assert rate.controller.rate(cut + later) == pytest.approx(15.0)
        assert rate.controller.rate(cut + rules.hold + 2.0) > 15.0
        await rate.aclose()

    run(main())
    # The limit used from the first second on, less the bucket's CATCH_UP; few 1302s.
    assert server.accepted >= 15.0 * 19 * (1 - CATCH_UP)
    assert server.throttled <= 20
