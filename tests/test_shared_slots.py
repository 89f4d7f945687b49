"""Shared slots on a real redis-server: leases, the fair queue, the learned limit, probes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis_helpers import until, workers

from kling_async._shared_link import RedisLink
from kling_async._shared_lua import ACQUIRE
from kling_async._shared_slots import Lease, SharedSlots

Gates = Callable[..., Awaitable[SharedSlots]]


@pytest.fixture
async def gates(redis_server: Any) -> AsyncIterator[Gates]:
    """`await gates(maximum, account=…, **options)`: a started gate on its own connection."""
    opened: list[tuple[RedisLink, SharedSlots]] = []

    async def make(maximum: int = 3, account: str = "acct-a", **options: Any) -> SharedSlots:
        link = await RedisLink.connect(redis_server.url, account)
        options.setdefault("ttl", 1.0)
        options.setdefault("slow_start", False)
        gate = SharedSlots(link, maximum, **options)
        gate.start()
        opened.append((link, gate))
        return gate

    yield make
    for link, gate in opened:
        await gate.aclose()
        await link.aclose()


async def take(gate: SharedSlots, n: int) -> list[Lease]:
    leases = []
    for _ in range(n):
        lease = await asyncio.wait_for(gate.acquire(), 10)
        await gate.accepted(lease)
        leases.append(lease)
    return leases


async def blocked(waiter: asyncio.Future[Any], seconds: float = 0.3) -> bool:
    """Still waiting after `seconds` (a lower bound: a slow machine only waits longer)."""
    await asyncio.sleep(seconds)
    return not waiter.done()


async def test_a_waiter_gets_the_slot_another_gives_back(gates: Gates) -> None:
    a, b = await gates(2), await gates(2)
    held = await take(a, 2)
    waiter = asyncio.ensure_future(b.acquire())
    assert await blocked(waiter)
    a.release(held[0])
    lease = await asyncio.wait_for(waiter, 10)
    assert (a.in_use, b.in_use) == (1, 1)
    assert (await b.snapshot())["in_use"] == 2
    b.release(lease)


async def test_a_cancelled_waiter_leaves_the_queue(gates: Gates) -> None:
    gate = await gates(1)
    held = await take(gate, 1)
    waiter = asyncio.ensure_future(gate.acquire())
    assert await blocked(waiter)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    gate.release(held[0])

    async def empty() -> bool:
        state = await gate.snapshot()
        return state["in_use"] == state["waiting"] == 0

    assert await until(empty)
    assert gate.in_use == 0


async def test_a_lost_answer_grants_the_same_lease_not_a_second(gates: Gates) -> None:
    gate = await gates(3)
    args = [3, 30000, 0, 2, "waiter-1"]
    first = await gate._run(ACQUIRE, *args)
    again = await gate._run(ACQUIRE, *args)  # the first answer "lost": asked again
    assert first[1] == again[1] == [2]  # granted (a probe: nothing confirmed yet), once
    assert (await gate.snapshot())["in_use"] == 1


async def test_two_accounts_on_one_redis_stay_separate(gates: Gates) -> None:
    a, b = await gates(2, account="acct-a"), await gates(2, account="acct-b")
    await take(a, 2)  # account a is full …
    lease = (await take(b, 1))[0]  # … account b is not
    assert await b.rejected(lease) == 0  # and a 1303 on account b …
    assert b.limit == 0
    state_a = await a.snapshot()
    assert "limit" not in state_a  # … leaves account a's knowledge alone
    assert state_a["in_use"] == 2
    prefixes = (f"ka:{{{a.link.account}}}:", f"ka:{{{b.link.account}}}:")
    keys = await a.link.client.keys("*")
    assert keys and all(k.startswith(prefixes) for k in keys)


async def test_slow_start_lets_two_unconfirmed_creates_out(gates: Gates) -> None:
    gate = await gates(5, slow_start=True)
    first, second = await gate.acquire(), await gate.acquire()
    assert first.probe and second.probe
    third = asyncio.ensure_future(gate.acquire())
    assert await blocked(third)
    await gate.accepted(first)  # Kling took one: the proven level rises
    assert (await asyncio.wait_for(third, 10)).probe


@pytest.mark.slow
async def test_a_1303_in_one_process_lowers_the_limit_for_all(
    redis_server: Any, gates: Gates
) -> None:
    async with workers(redis_server.url) as start:
        worker = await start("reject", maximum=5, count=2)
        assert await worker.expect("rejected") == "rejected 2"  # limit := the 2 still held
        gate = await gates(5)
        waiter = asyncio.ensure_future(gate.acquire())
        assert await blocked(waiter, 0.5)  # 2 of 5 held, yet the account is full for us too
        assert gate.limit == 2
        state = await gate.snapshot()
        assert (state["limit"], state["rejections"], state["in_use"]) == (2, 1, 2)
        waiter.cancel()


async def test_probes_go_one_at_a_time_account_wide(gates: Gates) -> None:
    interval = 0.2
    trio = [await gates(3, probe_interval=interval) for _ in range(3)]
    lease = (await take(trio[0], 1))[0]
    assert await trio[0].rejected(lease) == 0  # someone else fills the account: limit 0
    in_flight, peak, grants = 0, 0, 0

    async def refused(gate: SharedSlots) -> None:
        nonlocal in_flight, peak, grants
        while True:
            lease = await gate.acquire()
            in_flight += 1
            grants += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.02)  # the create's round trip
            in_flight -= 1
            await gate.rejected(lease)  # still full

    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = [asyncio.ensure_future(refused(g)) for g in trio for _ in range(3)]
    await asyncio.sleep(1.5)
    elapsed = loop.time() - start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert peak == 1  # nine waiters in three processes, one probe at a time
    assert 1 <= grants <= elapsed / interval + 2


@pytest.mark.slow
async def test_several_processes_never_exceed_the_limit(redis_server: Any) -> None:
    async with workers(redis_server.url) as start:
        started = [await start("churn", maximum=3, tasks=4, rounds=6) for _ in range(4)]
        for worker in started:
            await worker.expect("done", timeout=120)
    link = await RedisLink.connect(redis_server.url, "acct-a")
    try:
        peak = int(await link.client.get("test:peak"))
        assert 1 <= peak <= 3
        assert int(await link.client.get("test:done")) == 4 * 4 * 6
        assert await link.client.zcard(link.key("slots:leases")) == 0
    finally:
        await link.aclose()


@pytest.mark.slow
async def test_a_killed_holders_slots_come_back_within_the_ttl(
    redis_server: Any, gates: Gates
) -> None:
    async with workers(redis_server.url) as start:
        holder = await start("hold", maximum=3, count=3, ttl=1.0)
        await holder.expect("held")
        gate = await gates(3)
        waiter = asyncio.ensure_future(gate.acquire())
        assert await blocked(waiter, 1.5)  # renewed past its TTL while the holder lives
        holder.kill()
        await asyncio.wait_for(waiter, 10)  # the TTL is 1 s


async def test_a_later_process_is_not_starved(gates: Gates) -> None:
    busy, late = await gates(1), await gates(1)
    grants: list[str] = []

    async def hog() -> None:
        while True:
            lease = await busy.acquire()
            grants.append("busy")
            # Held long enough that a loaded machine's Redis round trips (late's own request
            # reaching the queue) do not let several busy grants slip in before it is queued.
            await asyncio.sleep(0.05)
            busy.release(lease)

    hogs = [asyncio.ensure_future(hog()) for _ in range(5)]
    await asyncio.sleep(0.3)
    before = len(grants)
    lease = await asyncio.wait_for(late.acquire(), 10)
    grants.append("late")
    for task in hogs:
        task.cancel()
    await asyncio.gather(*hogs, return_exceptions=True)
    # FIFO: at most the one busy waiter queued ahead of us is served first.
    assert grants.index("late", before) - before <= 2
    late.release(lease)


@pytest.mark.slow
async def test_a_dead_waiter_does_not_block_the_queue(redis_server: Any, gates: Gates) -> None:
    gate = await gates(1)
    held = await take(gate, 1)
    async with workers(redis_server.url) as start:
        dead = await start("wait", maximum=1, ttl=1.0)
        await dead.expect("waiting")
        dead.kill()
        await dead.wait()
    behind = asyncio.ensure_future(gate.acquire())  # queued behind the dead waiter
    gate.release(held[0])
    await asyncio.wait_for(behind, 10)  # its heartbeat lapses within the TTL
    assert (await gate.snapshot())["waiting"] == 0


async def test_slots_held_on_resume_count_at_once_and_are_proven(gates: Gates) -> None:
    gate, other = await gates(3, slow_start=True), await gates(3, slow_start=True)
    found = [gate.hold(), gate.hold()]  # tasks found running after a restart

    async def written() -> bool:
        return (await gate.snapshot())["in_use"] == 2

    assert await until(written)
    state = await gate.snapshot()
    assert (state["in_use"], state["confirmed"], gate.in_use) == (2, 2, 2)
    lease = await asyncio.wait_for(other.acquire(), 10)  # the third and last slot
    assert lease.probe  # above the proven level of two
    waiter = asyncio.ensure_future(other.acquire())
    assert await blocked(waiter)
    gate.release(found[0])  # from a done-callback: synchronous
    await asyncio.wait_for(waiter, 10)


async def test_closing_right_after_a_release_never_hangs(redis_server: Any) -> None:
    link = await RedisLink.connect(redis_server.url, "acct-a")
    try:
        for _ in range(30):
            gate = SharedSlots(link, 2, ttl=1.0, slow_start=False)
            gate.start()
            gate.release(await gate.acquire())  # pokes the keeper as aclose() cancels it
            closing = asyncio.ensure_future(gate.aclose())
            done, _ = await asyncio.wait([closing], timeout=5)  # fails, never hangs, if it does
            assert done, "aclose() hung: a background loop ignored its cancellation"
    finally:
        await link.aclose()
