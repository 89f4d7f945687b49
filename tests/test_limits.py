"""SlotGate: the adaptive concurrency gate (kling_async._limits)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kling_async import _limits
from kling_async._gate import Gate, Slot
from kling_async._limits import SlotGate


@pytest.fixture
def every_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """Probes need no count of ended tasks (tests of the timing alone)."""
    monkeypatch.setattr(_limits, "PROBE_EVERY", 1)


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
    slots = [await gate.acquire() for _ in range(3)]
    assert (gate.in_use, gate.limit, gate.peak) == (3, 3, 3)
    assert len({slot.id for slot in slots}) == 3  # each a handle of its own
    gate.release(slots.pop())
    assert gate.in_use == 2
    slots.append(await gate.acquire())
    assert gate.peak == 3
    for slot in slots:
        gate.release(slot)
    gate.release(slots[0])  # extra releases never go negative
    assert gate.in_use == 0
    assert "in_use=0" in repr(gate)


def test_the_gate_implements_the_interface() -> None:
    gate: Gate = SlotGate(2)  # mypy checks the shape; this, that the module says so
    assert isinstance(gate.hold(), Slot)


def test_maximum_validated() -> None:
    with pytest.raises(ValueError, match="maximum"):
        SlotGate(0)


async def test_waiters_wake_in_order() -> None:
    gate = SlotGate(1)
    held = [await gate.acquire()]
    order: list[int] = []

    async def worker(n: int) -> None:
        held.append(await gate.acquire())
        order.append(n)

    tasks = []
    for n in range(4):
        tasks.append(asyncio.create_task(worker(n)))
        await settle()
    assert order == []
    for expected in range(4):
        gate.release(held[expected])
        await settle()
        assert order == list(range(expected + 1))
    await asyncio.gather(*tasks)
    assert gate.peak == 1
    assert gate.in_use == 1


async def test_cancelled_waiter_does_not_block_others() -> None:
    gate = SlotGate(1)
    slot = await gate.acquire()
    first = asyncio.create_task(gate.acquire())
    second = asyncio.create_task(gate.acquire())
    await settle()
    first.cancel()
    await settle()
    gate.release(slot)
    await asyncio.wait_for(second, 1)
    assert gate.in_use == 1
    assert first.cancelled()


async def test_woken_then_cancelled_passes_the_slot_on() -> None:
    gate = SlotGate(1)
    slot = await gate.acquire()
    first = asyncio.create_task(gate.acquire())
    second = asyncio.create_task(gate.acquire())
    await settle()
    gate.release(slot)  # wakes `first`…
    first.cancel()  # …which is cancelled before it runs: the wake must go to `second`
    await asyncio.wait_for(second, 1)
    assert first.cancelled()
    assert gate.in_use == 1


async def test_rejected_sets_limit_to_held() -> None:
    clock = Clock()
    gate = SlotGate(5, monotonic=clock)
    slots = [await gate.acquire() for _ in range(4)]
    assert await gate.rejected(slots.pop()) == 3  # the refused create's slot is returned
    assert (gate.in_use, gate.limit, gate.rejections) == (3, 3, 1)
    blocked = asyncio.create_task(gate.acquire())
    await settle()
    assert not blocked.done()  # limit 3, we hold 3
    gate.release(slots[0])
    await asyncio.wait_for(blocked, 1)
    assert gate.in_use == 3


class Rng:
    """random.Random's uniform, pinned to the top of its range (no jitter)."""

    def uniform(self, a: float, b: float) -> float:
        return b


def empty_gate(clock: Clock, **kw: Any) -> SlotGate:
    kw.setdefault("probe_interval", 8.0)
    kw.setdefault("first_wait", 0.2)
    return SlotGate(4, monotonic=clock, rng=Rng(), **kw)  # type: ignore[arg-type]


async def test_rejected_with_nothing_held_waits_for_the_next_probe() -> None:
    # Someone else fills the account: nothing is sent until a timed probe, one at a time.
    clock = Clock()
    gate = empty_gate(clock, first_wait=0.2)
    assert await gate.rejected(await gate.acquire()) == 0
    assert (gate.in_use, gate.limit) == (0, 0)
    first = asyncio.create_task(gate.acquire())
    second = asyncio.create_task(gate.acquire())
    await settle()
    assert not first.done() and not second.done()  # the fake clock has not moved
    clock.now += 0.2  # the documented first back-off, not a whole probe interval
    await asyncio.wait_for(asyncio.wait({first, second}, return_when="FIRST_COMPLETED"), 5)
    await settle()
    assert (gate.limit, gate.in_use) == (1, 1)  # one probe goes out, the other still waits
    assert first.done() != second.done()
    waiting, probe = (second, first) if first.done() else (first, second)
    assert probe.result().probe
    await gate.rejected(probe.result())  # refused again: back to 0, the next probe twice as far
    again = asyncio.create_task(gate.acquire())  # the refused create comes back to the gate
    clock.now += 0.2
    await asyncio.sleep(0.3)
    assert gate.in_use == 0 and not waiting.done() and not again.done()
    clock.now += 0.2
    await asyncio.wait_for(asyncio.wait({waiting, again}, return_when="FIRST_COMPLETED"), 5)
    await settle()
    assert (gate.limit, gate.in_use) == (1, 1)
    probe = again if again.done() else waiting
    await gate.accepted(probe.result())  # the account has room again: the next slot at once
    await asyncio.wait_for(asyncio.gather(waiting, again), 5)
    assert gate.in_use == 2


async def test_empty_gate_backoff_doubles_up_to_the_probe_interval() -> None:
    clock = Clock()
    gate = empty_gate(clock, first_wait=1.0, probe_interval=6.0)
    waits = []
    for _ in range(6):
        gate.limit = 1  # the probe that is due goes out, and is refused
        await gate.rejected(await gate.acquire())
        waits.append(gate._due() - clock.now)
    assert waits == [1.0, 2.0, 4.0, 6.0, 6.0, 6.0]
    jittered = SlotGate(4, probe_interval=6.0, first_wait=1.0, monotonic=clock)
    for _ in range(20):
        jittered.limit = 1
        await jittered.rejected(await jittered.acquire())
        assert 1.0 <= jittered._due() - clock.now <= 6.0  # never under the documented 1 s


async def refused_at(gate: SlotGate, held: int) -> list[Slot]:
    """`held` creates accepted (their slots held), then one more refused: limit = held."""
    slots = []
    for _ in range(held):
        slots.append(await gate.acquire())
        await gate.accepted(slots[-1])
    await gate.rejected(await gate.acquire())
    assert gate.limit == held
    return slots


@pytest.mark.usefixtures("every_end")
async def test_a_probe_goes_out_when_one_of_our_tasks_ends() -> None:
    clock = Clock()
    gate = SlotGate(3, probe_interval=10, monotonic=clock)
    held = await refused_at(gate, 2)
    waiters = [asyncio.create_task(gate.acquire()) for _ in range(2)]
    await settle()
    clock.now += 10  # due, but no timer: while we hold slots our view is only fresh at a release
    await asyncio.sleep(0.05)
    assert not any(w.done() for w in waiters) and gate.limit == 2
    gate.release(held[0])  # one of ours ended: its slot and a probe go out together
    await settle()
    assert all(w.done() for w in waiters)
    assert (gate.limit, gate.in_use) == (3, 3)
    # the second is above the proven 2
    assert [w.result().probe for w in waiters] == [False, True]


@pytest.mark.usefixtures("every_end")
async def test_a_release_before_the_probe_is_due_only_refills() -> None:
    clock = Clock()
    gate = SlotGate(3, probe_interval=10, monotonic=clock)
    held = await refused_at(gate, 2)  # the third is refused: limit 2
    waiters = [asyncio.create_task(gate.acquire()) for _ in range(2)]
    await settle()
    clock.now += 5
    gate.release(held[0])
    await settle()
    assert [w.done() for w in waiters] == [True, False]
    assert gate.limit == 2
    clock.now += 5  # now due (10 s after the refusal): the next release probes
    gate.release(held[1])
    await settle()
    assert waiters[1].done() and gate.limit == 3
    waiters[0].result()


@pytest.mark.usefixtures("every_end")
async def test_a_refused_probe_doubles_the_wait_once() -> None:
    clock = Clock()
    gate = SlotGate(4, probe_interval=10, monotonic=clock)
    held = await refused_at(gate, 3)
    gate._ended = 10**6  # enough of our tasks ended: only the time counts here
    assert gate._due() == clock.now + 10
    clock.now += 10
    extra = asyncio.create_task(gate.acquire())
    other = asyncio.create_task(gate.acquire())
    await settle()
    gate.release(held[0])
    await settle()
    [refill, probe] = sorted((extra.result(), other.result()), key=lambda slot: slot.probe)
    assert probe.probe and not refill.probe
    await gate.rejected(probe)  # refused: twice the interval before the next
    gate._ended = 10**6
    assert gate._due() == clock.now + 20
    await gate.rejected(refill)  # the cap fell: a plain create refused keeps the wait
    gate._ended = 10**6
    assert gate._due() == clock.now + 20


@pytest.mark.usefixtures("every_end")
async def test_an_accepted_probe_climbs_at_once() -> None:
    clock = Clock()
    gate = SlotGate(5, probe_interval=10, monotonic=clock)
    held = await refused_at(gate, 3)
    clock.now += 10
    waiters = [asyncio.create_task(gate.acquire()) for _ in range(3)]
    await settle()
    gate.release(held[0])  # probe: limit 4, two go (a refill and the probe)
    await settle()
    assert gate.limit == 4 and sum(w.done() for w in waiters) == 2
    for slot in sorted((w.result() for w in waiters if w.done()), key=lambda slot: slot.probe):
        # the refill, then the probe: the cap rose, the next slot is tried without a release
        await gate.accepted(slot)
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert (gate.limit, gate.in_use) == (5, 5)


async def test_a_probe_also_waits_for_enough_of_our_tasks_to_end() -> None:
    # With a small cap, probing every interval would cost more refusals per job than jobs run:
    # a probe waits for PROBE_EVERY of our tasks to end too (× the back-off).
    clock = Clock()
    gate = SlotGate(4, probe_interval=1, monotonic=clock)
    held = await refused_at(gate, 2)
    clock.now += 100
    for _ in range(_limits.PROBE_EVERY - 1):
        gate.release(held.pop(0))
        held.append(await gate.acquire())  # the refill, no probe
        await gate.accepted(held[-1])
        assert gate.limit == 2
    waiters = [asyncio.create_task(gate.acquire()) for _ in range(2)]
    await settle()
    gate.release(held.pop(0))  # the PROBE_EVERY-th end: a probe goes out with the refill
    await settle()
    assert gate.limit == 3 and all(w.done() for w in waiters)


async def test_only_answered_creates_prove_a_level() -> None:
    # Slow start: creates above the proven level go RAMP at a time; an accepted create proves
    # the level only of creates already answered, not of those still in flight.
    gate = SlotGate(8, slow_start=True)
    first = await gate.acquire()
    second = await gate.acquire()
    assert first.probe and second.probe
    third = asyncio.create_task(gate.acquire())
    await settle()
    assert not third.done()  # two unconfirmed creates are out
    await gate.accepted(first)
    assert gate.confirmed == 1  # the second is still unanswered
    await settle()
    assert third.done() and third.result().probe  # above the proven 1: a probe
    await gate.accepted(second)
    await gate.accepted(third.result())
    assert gate.confirmed == 3


async def test_a_task_ending_is_no_answer_to_a_create_in_flight() -> None:
    # Releasing the slot of a task seen ending (its create answered long ago) must not count
    # as an answer to a create still in flight: that create proves nothing until answered.
    gate = SlotGate(8, slow_start=True)
    old = await gate.acquire()
    await gate.accepted(old)
    flying = await gate.acquire()
    gate.release(old)  # the old task ended
    other = await gate.acquire()
    await gate.accepted(other)
    assert gate.confirmed == 1  # `flying` is still unanswered: only 1 of the 2 held is proven
    await gate.accepted(flying)
    assert gate.confirmed == 2


async def test_set_maximum() -> None:
    gate = SlotGate(4, monotonic=Clock())
    held = [await gate.acquire() for _ in range(2)]
    gate.set_maximum(1)
    assert (gate.maximum, gate.limit) == (1, 1)
    blocked = asyncio.create_task(gate.acquire())
    await settle()
    assert not blocked.done()
    gate.set_maximum(0)
    assert gate.maximum == 1
    gate.release(held[0])
    gate.release(held[1])
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
    gate.set_maximum(2)  # never refused: the limit follows the new ceiling
    await asyncio.wait_for(waiter, 1)
    assert gate.in_use == 2
    assert gate.limit == 2


async def test_hold_counts_a_slot_without_waiting() -> None:
    gate = SlotGate(1)
    first = gate.hold()  # a running task found on resume
    second = gate.hold()  # even beyond the limit: it exists whether we like it or not
    assert (gate.in_use, gate.peak) == (2, 2)
    blocked = asyncio.create_task(gate.acquire())
    await settle()
    assert not blocked.done()
    gate.release(first)
    await settle()
    assert not blocked.done()
    gate.release(second)
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
