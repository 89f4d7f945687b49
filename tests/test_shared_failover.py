"""The coordinator when Redis is not there: at start (a clear error), and lost mid-run."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from redis_helpers import free_port, until, workers

from kling_async import ConfigurationError, Credentials
from kling_async._shared_link import (
    CoordinatorUnavailableError,
    CoordinatorUnreachableError,
    RedisLink,
    account_id,
    shown_url,
)
from kling_async._shared_rate import SharedRate
from kling_async._shared_slots import SharedSlots


async def test_unreachable_redis_at_start_is_a_configuration_error() -> None:
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    with pytest.raises(CoordinatorUnreachableError) as caught:
        await RedisLink.connect(url, "acct", connect_timeout=2)
    assert isinstance(caught.value, ConfigurationError)  # rc 2 in the CLI
    message = str(caught.value)
    assert "is unreachable" in message and "127.0.0.1" in message
    assert "hunter2" not in message and ":***@" in message


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "127.0.0.1:6379", ""])
async def test_a_coordinator_url_that_is_not_redis_is_refused(url: str) -> None:
    with pytest.raises(CoordinatorUnreachableError, match="expected redis://host:port/db"):
        await RedisLink.connect(url, "acct")


def test_the_account_is_named_by_a_hash_never_the_key(access_key: str, secret_key: str) -> None:
    by_ak = account_id(Credentials(access_key=access_key, secret_key=secret_key))
    assert by_ak == account_id(Credentials(access_key=access_key, secret_key="other" * 8))
    by_api = account_id(Credentials(api_key=access_key))
    assert by_ak != by_api and len(by_ak) == 16
    assert access_key not in by_ak and int(by_ak, 16) >= 0
    assert shown_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert shown_url("redis://user:pw@h:1/2") == "redis://user:***@h:1/2"


@pytest.mark.slow
async def test_redis_restarted_mid_run(redis_server: Any) -> None:
    link = await RedisLink.connect(redis_server.url, "acct-a", reconnect_max=0.2)
    gate = SharedSlots(link, 4, ttl=1.0, slow_start=False)
    strict = SharedSlots(link, 4, ttl=1.0, slow_start=False, fail_fast=True)
    changes: list[bool] = []
    link.on_change(changes.append)
    gate.start()
    strict.start()
    try:
        async with workers(redis_server.url) as start:
            for _ in range(2):
                worker = await start("hold", maximum=4, ttl=1.0, reconnect_max=0.2)
                await worker.expect("held")
            ours = await gate.acquire()
            await gate.accepted(ours)
            assert (await gate.snapshot())["in_use"] == 3

            redis_server.stop()  # every lease, the epoch and the queue are gone with it
            with pytest.raises(CoordinatorUnavailableError, match="unavailable"):
                await gate.snapshot()
            assert changes == [False] and not link.available
            with pytest.raises(CoordinatorUnavailableError):
                await strict.acquire()  # fail-fast: a web request answers 503 at once
            waiting = asyncio.ensure_future(gate.acquire())  # a batch: waits, creates nothing
            gate.release(ours)  # a task ended meanwhile: queued for when Redis is back
            await asyncio.sleep(0.3)
            assert not waiting.done()

            redis_server.start()  # same port, empty
            assert await until(lambda: link.available, timeout=15)
            assert changes == [False, True]
            # Each live holder re-adds its own lease: 2, never 4 (counted twice) nor 0.
            lease = await asyncio.wait_for(waiting, 15)
            assert gate.shared_in_use == 3  # granted only once both holders were back
            state = await gate.snapshot()
            assert state["in_use"] == 3  # the two workers' and the new one
            assert "settle" in state  # nothing was granted before the holders were back
            await gate.accepted(lease)
            more = [asyncio.ensure_future(gate.acquire()) for _ in range(2)]
            done, _ = await asyncio.wait(more, timeout=1.0)
            assert len(done) == 1  # 4 slots: the limit still holds after the restart
            assert (await gate.snapshot())["in_use"] == 4
            for task in more:
                task.cancel()
    finally:
        await gate.aclose()
        await strict.aclose()
        await link.aclose()


async def test_the_rate_paces_locally_while_redis_is_away(redis_server: Any) -> None:
    link = await RedisLink.connect(redis_server.url, "acct-a", reconnect_max=0.2)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    now = [100.0]
    bucket = SharedRate(link, 4.0, burst=1.0, sleep=sleep, monotonic=lambda: now[0])
    try:
        await bucket.set_rate(2.0)
        redis_server.stop()
        for _ in range(3):
            await bucket.acquire()  # never raises: following and downloads go on
        assert waits == [0.5, 1.0]  # paced at the last shared rate (2/s), by our own clock
        assert not link.available
        unlimited = SharedRate(link, math.inf)
        await unlimited.acquire()
    finally:
        redis_server.start()
        await link.aclose()
