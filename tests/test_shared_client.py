"""Clients with a coordinator, in one process against the simulator and a real redis-server.

Several `Client`s on one loop stand for several processes: each has its own Redis link, gate,
leadership campaign and tracker, exactly as separate processes would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis_helpers import free_port, until

from kling_async import (
    Client,
    ConfigurationError,
    CoordinatorBack,
    CoordinatorLost,
    CoordinatorLostError,
    CoordinatorUnreachableError,
    Event,
    Limits,
    MultiImageToVideoRequest,
    PollPolicy,
)
from kling_async.simulator import Simulator

FAST = PollPolicy(interval=0.05, min_interval=0.01, interval_max=0.2)


def request(i: int) -> MultiImageToVideoRequest:
    return MultiImageToVideoRequest(images=["https://cdn.example.com/a.png"], prompt=f"job {i}")


@contextlib.asynccontextmanager
async def clients(sim: Simulator, url: str, n: int, cap: int) -> AsyncIterator[list[Client]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                Client(
                    access_key=sim.access_key,
                    secret_key=sim.secret_key,
                    base_url=sim.url,
                    limits=Limits(concurrency=cap),
                    poll=FAST,
                    coordinator=f"{url}{'&' if '?' in url else '?'}ttl=1",
                )
            )
            for _ in range(n)
        ]


async def test_one_sweep_serves_every_process(redis_server: Any) -> None:
    async with Simulator(concurrency=3, gen_seconds=0.3) as sim:
        async with clients(sim, redis_server.url, 3, cap=3) as group:

            async def work(client: Client, k: int) -> None:
                tasks = [await client.submit(request(10 * k + i)) for i in range(3)]
                for task in tasks:
                    assert (await client.wait(task, timeout=30)).task_status.value == "succeed"

            await asyncio.gather(*(work(client, k) for k, client in enumerate(group)))
            readers = [c for c in group if c._tracker.reads]  # type: ignore[attr-defined]
            sweeps = [c.stats.list_calls + c.stats.get_calls for c in group]
        stats = sim.stats.as_dict()
    assert stats["accepted_creates"] == 9 and stats["peak_running"] <= 3
    assert stats["rejected_concurrency"] <= 1
    assert readers, "no process read the states another published"
    # One process sweeps for all: the others sent (almost) no status request of their own.
    assert sorted(sweeps)[:2] <= [2, 2], sweeps


async def test_unreachable_at_start_is_clear_and_leaves_nothing_open() -> None:
    client = Client(
        access_key="ak",
        secret_key="sk",
        base_url="http://127.0.0.1:9",
        coordinator=f"redis://user:s3cret@127.0.0.1:{free_port()}/0",
    )
    with pytest.raises(CoordinatorUnreachableError) as caught:
        async with client:
            pass
    assert "redis://user:***@127.0.0.1" in str(caught.value) and "s3cret" not in str(caught.value)
    assert client.closed


def test_the_coordinator_comes_from_the_environment_and_its_ttl_is_checked() -> None:
    client = Client(
        access_key="ak", secret_key="sk", environ={"KLING_COORDINATOR": "redis://h:1/0?ttl=2"}
    )
    assert "ttl=2" in repr(client._coordinator)  # type: ignore[attr-defined]
    assert Client(access_key="ak", secret_key="sk", environ={})._coordinator is None  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="ttl must be seconds"):
        Client(access_key="ak", secret_key="sk", coordinator="redis://h:1/0?ttl=never")
    limited = Client(access_key="ak", secret_key="sk", coordinator="redis://h:1/0?lost_limit=30")
    assert limited._coordinator.lost_limit == 30  # type: ignore[union-attr]
    assert Client(access_key="ak", secret_key="sk", coordinator="redis://h:1/0")._coordinator
    with pytest.raises(ConfigurationError, match="lost_limit must be seconds above 0"):
        Client(access_key="ak", secret_key="sk", coordinator="redis://h:1/0?lost_limit=0")


async def test_redis_lost_mid_run_pauses_creates_and_following_goes_on(redis_server: Any) -> None:
    async with Simulator(concurrency=2, gen_seconds=0.4) as sim:
        async with clients(sim, redis_server.url, 1, cap=2) as (client,):
            seen: list[Event] = []
            client.event_hook = seen.append
            running = [await client.submit(request(i)) for i in range(2)]
            redis_server.stop()
            late = asyncio.ensure_future(client.submit(request(99)))
            # Following and waiting go on without Redis (the client sweeps on its own) ...
            for task in running:
                assert (await client.wait(task, timeout=30)).task_status.value == "succeed"
            await asyncio.sleep(0.3)
            # ... but nothing is created while the budget cannot be checked.
            assert not late.done() and sim.stats.accepted_creates == 2
            redis_server.start()
            created = await asyncio.wait_for(late, 30)
            assert (await client.wait(created, timeout=30)).task_status.value == "succeed"
        assert sim.stats.accepted_creates == 3
    lost = [e for e in seen if isinstance(e, CoordinatorLost | CoordinatorBack)]
    assert [e.kind for e in lost] == ["coordinator_lost", "coordinator_back"]
    assert lost[0].lost_limit == 600 and "127.0.0.1" in lost[0].url
    assert isinstance(lost[1], CoordinatorBack) and not lost[1].gave_up and lost[1].after > 0


async def test_redis_away_past_the_lost_limit_stops_creating_for_good(redis_server: Any) -> None:
    async with Simulator(concurrency=1, gen_seconds=0.3) as sim:
        url = f"{redis_server.url}?lost_limit=0.5"
        async with clients(sim, url, 1, cap=1) as (client,):
            seen: list[Event] = []
            client.event_hook = seen.append
            first = await client.submit(request(0))
            redis_server.stop()
            waiting = asyncio.ensure_future(client.submit(request(1)))  # waits for the slot
            with pytest.raises(CoordinatorLostError, match=r"more than 0.5 s \(lost_limit\)"):
                await asyncio.wait_for(waiting, 30)
            assert (await client.wait(first, timeout=30)).task_status.value == "succeed"
            redis_server.start()
            assert await until(lambda: any(isinstance(e, CoordinatorBack) for e in seen))
            with pytest.raises(CoordinatorLostError):  # for good, even with Redis back
                await client.submit(request(2))
        assert sim.stats.accepted_creates == 1
    back = next(e for e in seen if isinstance(e, CoordinatorBack))
    assert back.gave_up


async def test_a_slot_held_before_connecting_becomes_a_lease(redis_server: Any) -> None:
    async with Simulator(concurrency=2, gen_seconds=0.3) as sim:
        seed = Client(access_key=sim.access_key, secret_key=sim.secret_key, base_url=sim.url)
        async with seed:
            task = await seed.submit(request(0))  # "an earlier run" created it
        client = Client(
            access_key=sim.access_key,
            secret_key=sim.secret_key,
            base_url=sim.url,
            poll=FAST,
            coordinator=f"{redis_server.url}?ttl=1",
        )
        done = client.follow(task, hold_slot=True)  # the resume path, before any connection
        assert client.stats.slots_in_use == 1
        async with client:
            gate = client._coordinator.gate  # type: ignore[attr-defined, union-attr]
            assert gate._slots is not None and gate._slots.in_use == 1
            await asyncio.wait_for(done, 30)
            assert await until(lambda: client.stats.slots_in_use == 0)
