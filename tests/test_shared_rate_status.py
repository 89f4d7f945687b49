"""The shared request rate and shared status tracking on a real redis-server."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis_helpers import until, workers

from kling_async._shared_link import RedisLink
from kling_async._shared_rate import SharedRate
from kling_async._shared_status import LeaderLease, SharedStatus

Connect = Callable[..., Awaitable[RedisLink]]


@pytest.fixture
async def connect(redis_server: Any) -> AsyncIterator[Connect]:
    """`await connect(account)`: a link of its own (as another process would have)."""
    opened: list[RedisLink] = []

    async def make(account: str = "acct-a") -> RedisLink:
        link = await RedisLink.connect(redis_server.url, account, reconnect_max=0.2)
        opened.append(link)
        return link

    yield make
    for link in opened:
        await link.aclose()


@pytest.mark.slow
async def test_the_rate_holds_across_processes(redis_server: Any, connect: Connect) -> None:
    rate, tokens, procs = 20.0, 8, 3
    link = await connect()
    sec, usec = await link.client.time()
    begun = sec * 1000 + usec // 1000
    async with workers(redis_server.url) as start:
        started = [await start("rate", rate=rate, tokens=tokens) for _ in range(procs)]
        for worker in started:
            await worker.expect("done", timeout=60)
    takes = [int(t) for t in await link.client.lrange("test:takes", 0, -1)]
    assert len(takes) == procs * tokens and min(takes) >= begun
    # By Redis' clock: one token of burst, then 20 per second for all three processes
    # together (each on its own bucket would be done in a third of the time). A loaded
    # machine only makes it slower.
    assert max(takes) - begun >= (procs * tokens - 1) / rate * 1000 - 2


async def test_set_rate_and_cut_are_shared(connect: Connect) -> None:
    one, two = SharedRate(await connect(), 10.0), SharedRate(await connect(), 10.0)
    state = await one.state()
    assert (state.rate, state.since_cut) == (10.0, None)
    cut = await one.cut(0.5, cooldown=60)
    assert (cut.rate, cut.max_rate) == (5.0, 10.0) and cut.since_cut is not None
    again = await two.cut(0.5, cooldown=60)  # the same throttling seen by a second process
    assert again.rate == 5.0 and two.rate == 5.0  # cut once, and the other process knows
    raised = await two.set_rate(8.0, burst=3.0)  # recovery (the cubic curve's next step)
    assert (raised.rate, raised.burst, raised.max_rate) == (8.0, 3.0, 10.0)
    assert (await one.state()).rate == 8.0


async def test_a_rate_cut_from_no_limit_needs_the_measured_rate(connect: Connect) -> None:
    bucket = SharedRate(await connect())
    await bucket.acquire()  # no limit: no wait
    assert (await bucket.cut(0.7)).rate == math.inf  # nothing to cut from
    assert (await bucket.cut(0.5, cooldown=0, measured=6.0)).rate == 3.0
    with pytest.raises(ValueError, match="beta"):
        await bucket.cut(1.5)
    with pytest.raises(ValueError, match="rate must be > 0"):
        await bucket.set_rate(0)


async def test_a_cut_reaches_waiting_callers(connect: Connect) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(seconds)

    bucket = SharedRate(await connect(), 100.0, burst=1.0, max_ahead=0.05, sleep=sleep)
    await asyncio.gather(*(bucket.acquire() for _ in range(5)))
    assert max(waits) <= 0.05 + 0.01  # debt is never booked further ahead than max_ahead
    await bucket.set_rate(5.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await bucket.acquire()
    await bucket.acquire()
    assert loop.time() - start >= 0.2 - 0.005  # the new rate (5/s) applies at once


async def test_one_leader_and_a_clean_hand_over(connect: Connect) -> None:
    changes: list[tuple[str, bool]] = []
    a = LeaderLease(await connect(), ttl=1.0, on_change=lambda on: changes.append(("a", on)))
    b = LeaderLease(await connect(), ttl=1.0, on_change=lambda on: changes.append(("b", on)))
    a.start()
    assert await until(lambda: a.is_leader)
    b.start()
    await asyncio.sleep(0.5)
    assert (a.is_leader, b.is_leader) == (True, False)
    await a.aclose()  # resigns: b takes over at its next attempt, well within the TTL
    assert await until(lambda: b.is_leader)
    assert changes == [("a", True), ("a", False), ("b", True)]
    await b.aclose()


async def test_a_resigning_leader_is_replaced_at_once(connect: Connect) -> None:
    a, b = LeaderLease(await connect(), ttl=60.0), LeaderLease(await connect(), ttl=60.0)
    a.start()
    assert await until(lambda: a.is_leader)
    b.start()  # its next own attempt is 20 s away
    await asyncio.sleep(0.2)
    await a.aclose()  # resigns and says so: b claims now
    assert await until(lambda: b.is_leader, timeout=5.0)
    await b.aclose()


@pytest.mark.slow
async def test_a_killed_leader_is_replaced_within_the_ttl(
    redis_server: Any, connect: Connect
) -> None:
    async with workers(redis_server.url) as start:
        leader = await start("lead", ttl=1.0)
        await leader.expect("leader")
        link = await connect()
        ours = LeaderLease(link, ttl=1.0)
        status = SharedStatus(link)
        ours.start()
        await asyncio.sleep(0.6)
        assert not ours.is_leader
        assert not await status.publish(ours, {"t1": "{}"})  # fenced: not the leader
        leader.kill()
        assert await until(lambda: ours.is_leader)  # its key lapses within the TTL (1 s)
        await ours.aclose()


async def test_the_leader_publishes_and_every_process_reads(connect: Connect) -> None:
    leader_link, reader_link = await connect(), await connect()
    leader = LeaderLease(leader_link, ttl=1.0)
    leader.start()
    assert await until(lambda: leader.is_leader)
    heard: list[list[str]] = []
    updated = asyncio.Event()

    def on_update(ids: list[str]) -> None:
        if ids:
            heard.append(ids)
            updated.set()

    reader = SharedStatus(reader_link, on_update=on_update)
    reader.start()
    await asyncio.sleep(0.2)  # subscribed
    task = json.dumps({"task_id": "t1", "task_status": "succeed"})
    assert await SharedStatus(leader_link).publish(leader, {"t1": task, "t2": "{}"})
    await asyncio.wait_for(updated.wait(), 5)
    assert heard == [["t1", "t2"]]
    assert await reader.read(["t1", "t3"]) == {"t1": task}
    other = SharedStatus(await connect("acct-b"))
    assert await other.read(["t1"]) == {}  # another account sees nothing
    await leader.aclose()
    await reader.aclose()


async def test_watched_tasks_are_known_to_the_leader(connect: Connect) -> None:
    one = SharedStatus(await connect(), watch_ttl=0.6)
    two = SharedStatus(await connect(), watch_ttl=0.6)
    one.start()
    two.start()
    one.watch(["t1", "t2"])
    two.watch(["t3"])
    await asyncio.sleep(0.1)
    assert sorted(await one.watched()) == ["t1", "t2", "t3"]
    one.unwatch(["t2"])
    await asyncio.sleep(0.1)
    assert sorted(await one.watched()) == ["t1", "t3"]
    await two.aclose()  # a process that stops: its watches lapse, nobody waits for them
    await asyncio.sleep(1.0)  # past watch_ttl, while `one` keeps renewing its own
    assert await one.watched() == ["t1"]
    await one.aclose()


async def test_shared_tokens_write_the_wanted_rate_and_share_one_cut(connect: Connect) -> None:
    from kling_async._shared_tokens import SharedTokens

    a, b = SharedTokens(SharedRate(await connect())), SharedTokens(SharedRate(await connect()))
    await a.take(lambda: 50.0)  # the controller's rate reaches the shared bucket
    assert (await b.shared.state()).rate == 50.0
    await a.take(lambda: 50.5)  # within 2 % and just written: no write, one token taken
    assert (await b.shared.state()).rate == 50.0
    w_max, since = await a.cut(0.5, window=5.0)
    again, _ = await b.cut(0.5, window=5.0)  # the same throttling seen by another process
    state = await a.shared.state()
    assert w_max == again == 50.0 and state.rate == 25.0 and 0 <= since < 1
