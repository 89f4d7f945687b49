"""While creates wait for the request rate, sweeps are sized by slots, not by time.

Injected clock throughout: `TaskTracker._next_delay` with a fake `creates_runway`, and
`RequestRate.runway` on a virtual clock.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from virtual_time import clock, run

from kling_async import PollPolicy
from kling_async._adaptive import RateRules
from kling_async._followed import Followed
from kling_async._poll import TaskTracker
from kling_async._request_rate import RequestRate
from kling_async.models import Task

POLICY = PollPolicy(interval=1.0, interval_max=0.5, min_interval=0.05, due_fraction=0.0065)


async def _never(*_: Any) -> Any:
    raise AssertionError("no request expected")


class Runway:
    """A fake `creates_runway`: records how many followed tasks it was told about."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.told: list[int] = []

    def __call__(self, followed: int) -> float:
        self.told.append(followed)
        return self.seconds


def tracker(now: list[float], runway: Runway, starts: list[float]) -> TaskTracker:
    tr = TaskTracker(list_page=_never, get_one=_never, policy=POLICY, monotonic=lambda: now[0])
    tr.creates_runway = runway
    for k, since in enumerate(starts):
        task = Task.model_validate({"task_id": f"t{k}", "task_status": "processing"})
        tr._tracked[task.task_id] = Followed(task, since)
    return tr


def learnt(tr: TaskTracker, last_sweep: float, answer_time: float = 0.1) -> None:
    """Tasks take 1.8–2.2 s (median 2 s); the last sweep was sent at `last_sweep`."""
    tr.pacer.durations.extend([1.8, 1.9, 2.0, 2.1, 2.2])
    tr.pacer.swept(last_sweep, changed=1)
    tr._answer_time = answer_time


async def test_the_sweep_waits_until_the_unheld_slots_are_about_used_up() -> None:
    now = [1000.0]
    runway = Runway(1.4)  # the creates still to come take 1.4 s at the rate
    tr = tracker(now, runway, starts=[998.2] * 20)  # due to end within ~0.4 s
    learnt(tr, last_sweep=1000.0)
    assert tr._next_delay() == pytest.approx(1.3)  # the runway less the sweep's answer time
    assert runway.told == [20]  # told how many followed tasks hold slots
    runway.seconds = 0.0  # the rate does not bind: the lost-time rule alone
    assert tr._next_delay() < 0.2


async def test_nothing_due_to_end_waits_longer_than_the_runway() -> None:
    now = [1000.0]
    tr = tracker(now, Runway(0.3), starts=[1000.0] * 20)  # just started: none ends for 1.8 s
    learnt(tr, last_sweep=1000.0)
    # a sweep now would find nothing: the lost-time rule's pause (here its cap) wins
    assert tr._next_delay() == POLICY.interval_max


async def test_a_long_runway_is_capped_at_one_generation_time() -> None:
    now = [1000.0]
    tr = tracker(now, Runway(60.0), starts=[998.2] * 20)  # many slots, a slow rate
    learnt(tr, last_sweep=1000.0)
    assert tr._next_delay() == pytest.approx(2.0)  # results are not held back for longer


async def test_before_any_generation_time_the_cap_is_the_oldest_age() -> None:
    now = [1000.0]
    tr = tracker(now, Runway(60.0), starts=[999.9, 999.95])
    tr.pacer.begin(999.9)
    tr.pacer.interval = 0.05  # the back-off alone would sweep at once
    assert tr._next_delay() == pytest.approx(POLICY.interval_max)  # young: interval_max
    now[0] = 1003.0  # the oldest is 3.1 s old: a first completion is seen within ~2× its age
    assert tr._next_delay() == pytest.approx(3.1)


async def test_claimed_tasks_are_confirmed_whatever_the_runway() -> None:
    now = [1000.0]
    runway = Runway(5.0)
    tr = tracker(now, runway, starts=[998.2])
    learnt(tr, last_sweep=1000.0)
    tr._tracked["t0"].claimed = True
    assert tr._next_delay() == POLICY.min_interval
    assert runway.told == []


def test_request_rate_runway_counts_unheld_slots_while_creates_queue() -> None:
    async def main() -> None:
        rate = RequestRate(RateRules(start_rate=None, cap=10.0), monotonic=clock)
        assert rate.runway("create", unheld=20, free=0) == 0.0  # nothing ever queued
        waiters = [asyncio.ensure_future(rate.acquire("create")) for _ in range(4)]
        await asyncio.sleep(0)
        # 4 queued, 20 slots unheld (16 more creates to come); one token is the sweep's
        assert rate.runway("create", unheld=20, free=0) == pytest.approx(1.9)
        assert rate.runway("create", unheld=2, free=0) == pytest.approx(0.4)  # at least the queue
        await asyncio.gather(*waiters)
        # just served, none queued: slots stand free, so nobody waits for them
        assert rate.runway("create", unheld=20, free=5) == 0.0
        # just served, none queued, no slot free: the creates being prepared still count
        assert rate.runway("create", unheld=3, free=0) == pytest.approx(0.2)
        await asyncio.sleep(1.0)
        assert rate.runway("create", unheld=3, free=0) == 0.0  # idle a while: nothing binds

    run(main())


async def test_the_client_gives_the_tracker_its_creates_runway() -> None:
    from kling_async import Client, Limits

    client = Client(
        access_key="ak-test",
        secret_key="s" * 32,
        base_url="http://127.0.0.1:9",
        limits=Limits(concurrency=10),
    )
    runway = client._tracker.creates_runway
    assert runway is not None and runway(0) == 0.0  # no rate binds
    rate = client._http.rate
    rate.controller.adopt(time.monotonic(), 10.0, time.monotonic())  # a cut: ~7 requests/s
    waiters = [asyncio.ensure_future(rate.acquire("create")) for _ in range(3)]
    await asyncio.sleep(0)
    # 10 slots, none held: 3 creates queued and 7 to follow; one token is the sweep's
    assert runway(0) == pytest.approx(9 / 7, rel=0.05)
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    await rate.aclose()
