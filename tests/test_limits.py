"""SlotGate: the adaptive concurrency gate (kling_async._limits)."""

from __future__ import annotations

import asyncio

import pytest

from kling_async._limits import SlotGate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_acquire_release_and_peak() -> None:
    gate = SlotGate(3)
    for _ in range(3):
        await gate.acquire()
    assert (gate.in_use, gate.limit, gate.peak) == (3, 3, 3)
    gate.release()
    assert gate.in_use == 2
    await gate.acquire()
    assert gate.peak == 3
    for _ in range(3):
        gate.release()
    gate.release()  # extra releases never go negative
    assert gate.in_use == 0
    assert "in_use=0" in repr(gate)


def test_maximum_validated() -> None:
    with pytest.raises(ValueError, match="maximum"):
        SlotGate(0)


async def test_waiters_wake_in_order() -> None:
    gate = SlotGate(1)
    await gate.acquire()
    order: list[int] = []

    async def worker(n: int) -> None:
        await gate.acquire()
        order.append(n)

    tasks = []
    for n in range(4):
        tasks.append(asyncio.create_task(worker(n)))
        await settle()
    assert order == []
    for expected in range(4):
        gate.release()
        await settle()
        assert order == list(range(expected + 1))
    await asyncio.gather(*tasks)
    assert gate.peak == 1
    assert gate.in_use == 1


async def test_cancelled_waiter_does_not_block_others() -> None:
    gate = SlotGate(1)
    await gate.acquire()
    first = asyncio.create_task(gate.acquire())
    second = asyncio.create_task(gate.acquire())
    await settle()
    first.cancel()
    await settle()
    gate.release()
    await asyncio.wait_for(second, 1)
    assert gate.in_use == 1
    assert first.cancelled()


async def test_woken_then_cancelled_passes_the_slot_on() -> None:
    gate = SlotGate(1)
    await gate.acquire()
    first = asyncio.create_task(gate.acquire())
    second = asyncio.create_task(gate.acquire())
    await settle()
    gate.release()  # wakes `first`…
    first.cancel()  # …which is cancelled before it runs: the wake must go to `second`
    await asyncio.wait_for(second, 1)
    assert first.cancelled()
    assert gate.in_use == 1


async def test_rejected_sets_limit_to_held() -> None:
    clock = Clock()
    gate = SlotGate(5, monotonic=clock)
    for _ in range(4):
        await gate.acquire()
    assert gate.rejected() == 3  # the refused create's slot is returned
    assert (gate.in_use, gate.limit, gate.rejections) == (3, 3, 1)
    blocked = asyncio.create_task(gate.acquire())
    await settle()
    assert not blocked.done()  # limit 3, we hold 3
    gate.release()
    await asyncio.wait_for(blocked, 1)
    assert gate.in_use == 3


async def test_rejected_with_nothing_held_waits_for_the_next_probe() -> None:
    # Someone else fills the account: nothing is sent until a timed probe, one at a time.
    clock = Clock()
    gate = SlotGate(4, probe_interval=0.5, monotonic=clock)
    await gate.acquire()
    assert gate.rejected() == 0
    assert (gate.in_use, gate.limit) == (0, 0)
    first = asyncio.create_task(gate.acquire())
    second = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0.05)
    assert not first.done() and not second.done()  # the fake clock has not moved
    clock.now += 0.5
    await asyncio.wait_for(asyncio.wait({first, second}, return_when="FIRST_COMPLETED"), 5)
    await settle()
    assert (gate.limit, gate.in_use) == (1, 1)  # one probe goes out, the other still waits
    assert first.done() != second.done()
    waiting = second if first.done() else first
    gate.rejected(True)  # refused again: back to 0, the next probe twice as far
    again = asyncio.create_task(gate.acquire())  # the refused create comes back to the gate
    clock.now += 0.5
    await asyncio.sleep(0.05)
    assert gate.in_use == 0 and not waiting.done() and not again.done()
    clock.now += 0.5
    await asyncio.wait_for(asyncio.wait({waiting, again}, return_when="FIRST_COMPLETED"), 5)
    await settle()
    assert (gate.limit, gate.in_use) == (1, 1)
    gate.accepted(True)  # the account has room again: the next slot is tried at once
    await asyncio.wait_for(asyncio.gather(waiting, again), 5)
    assert gate.in_use == 2


async def test_probe_after_interval() -> None:
    clock = Clock()
    gate = SlotGate(3, probe_interval=0.02, monotonic=clock)
    for _ in range(3):
        await gate.acquire()
    gate.rejected()  # limit 2, hold 2
    gate.rejected()  # limit 1, hold 1
    assert gate.limit == 1
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0.05)
    assert not waiter.done()  # the fake clock has not moved: no probe yet
    clock.now += 0.02
    await asyncio.wait_for(waiter, 1)  # the waiter's timeout fires, the probe raises the limit
    assert (gate.limit, gate.in_use) == (2, 2)
    clock.now += 0.02
    await asyncio.wait_for(gate.acquire(), 1)
    assert (gate.limit, gate.in_use) == (3, 3)
    # never above the maximum, however long we wait
    clock.now += 100
    late = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0.05)
    assert not late.done()
    assert gate.limit == 3
    gate.release()
    await asyncio.wait_for(late, 1)


async def test_probe_counts_from_the_rejection() -> None:
    clock = Clock()
    gate = SlotGate(3, probe_interval=10, monotonic=clock)
    for _ in range(3):
        await gate.acquire()
    gate.rejected()
    gate.release()
    gate.release()  # hold 0, limit 2
    clock.now += 10
    for _ in range(3):
        await gate.acquire()  # the probe fires on the third acquire
    assert gate.limit == 3


async def test_set_maximum() -> None:
    gate = SlotGate(4, monotonic=Clock())
    for _ in range(2):
        await gate.acquire()
    gate.set_maximum(1)
    assert (gate.maximum, gate.limit) == (1, 1)
    blocked = asyncio.create_task(gate.acquire())
    await settle()
    assert not blocked.done()
    gate.set_maximum(0)
    assert gate.maximum == 1
    gate.release()
    gate.release()
    await asyncio.wait_for(blocked, 1)
    gate.set_maximum(3)
    assert gate.maximum == 3
    assert gate.limit <= gate.maximum


async def test_raising_maximum_wakes_waiters() -> None:
    clock = Clock()
    gate = SlotGate(1, probe_interval=0.01, monotonic=clock)
    await gate.acquire()
    waiter = asyncio.create_task(gate.acquire())
    await settle()
    gate.set_maximum(2)
    clock.now += 1
    await asyncio.wait_for(waiter, 1)
    assert gate.in_use == 2
    assert gate.limit == 2


async def test_hold_counts_a_slot_without_waiting() -> None:
    gate = SlotGate(1)
    gate.hold()  # a running task found on resume
    gate.hold()  # even beyond the limit: it exists whether we like it or not
    assert (gate.in_use, gate.peak) == (2, 2)
    blocked = asyncio.create_task(gate.acquire())
    await settle()
    assert not blocked.done()
    gate.release()
    await settle()
    assert not blocked.done()
    gate.release()
    await asyncio.wait_for(blocked, 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"concurrency": 0},
        {"download_concurrency": 0},
        {"rps": 0},
        {"page_size": 0},
        {"page_size": 501},
    ],
)
def test_limits_validated(kwargs: dict[str, float]) -> None:
    from kling_async import ConfigurationError, Limits

    with pytest.raises(ConfigurationError):
        Limits(**kwargs)  # type: ignore[arg-type]
