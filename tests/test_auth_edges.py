"""Authentication edge cases against the simulator: token expiry over a long run, skewed clocks,
wrong keys (one clear error, no retry storm, a batch that stops)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import make_png
from fakes import token_trace

import kling_async
from kling_async import (
    AuthenticationError,
    Client,
    Limits,
    MultiImageToVideoRequest,
    PollPolicy,
    RetryPolicy,
)
from kling_async.simulator import Simulator

RETRY = RetryPolicy(attempts=4, wait_initial=0.01, wait_max=0.05)
POLL = PollPolicy(interval=0.05, interval_max=0.1, min_interval=0.02)


class SkewedClock:
    """Wall time plus an offset the test moves (the client's idea of "now")."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A simulator with quick tasks and a cap of 5."""
    async with Simulator(concurrency=5, gen_seconds=0.05, gen_spread=0.0) as s:
        yield s


def client_for(
    sim: Simulator,
    clock: SkewedClock | None = None,
    session: aiohttp.ClientSession | None = None,
    **keys: Any,
) -> Client:
    keys = keys or {"access_key": sim.access_key, "secret_key": sim.secret_key}
    return Client(
        **keys,
        base_url=sim.url,
        session=session,
        clock=clock or SkewedClock(),
        retry=RETRY,
        poll=POLL,
        limits=Limits(concurrency=5, rps=1000),
    )


@contextlib.asynccontextmanager
async def recorded(sim: Simulator, clock: SkewedClock) -> AsyncIterator[tuple[Client, list[str]]]:
    """A client, and every Authorization value it sends (through a borrowed session)."""
    sent: list[str] = []
    async with (
        aiohttp.ClientSession(trace_configs=[token_trace(sent)]) as session,
        client_for(sim, clock, session=session) as client,
    ):
        yield client, sent


def request(n: int = 0) -> MultiImageToVideoRequest:
    return MultiImageToVideoRequest(images=[make_png()], prompt=f"a dog {n}")


async def test_tokens_are_renewed_across_many_lifetimes(sim: Simulator) -> None:
    clock = SkewedClock()
    async with recorded(sim, clock) as (client, sent):
        task = await client.submit(request())
        for _ in range(4):  # two hours in four steps, each past a token's 1800 s
            sim.advance(1900)
            clock.offset += 1900
            assert (await client.get_task(task.task_id)).task_id == task.task_id
        assert len(set(sent)) == 5  # a fresh token each time, made before it was refused
        assert sim.stats.errors_by_code[1004] == 0
        assert (await client.wait(task, timeout=5)).is_terminal


async def test_a_token_the_server_calls_expired_is_resigned_once(sim: Simulator) -> None:
    clock = SkewedClock()
    async with recorded(sim, clock) as (client, sent):
        task = await client.wait(await client.submit(request()), timeout=5)  # none followed
        # The server's clock runs ahead of ours: our token still looks fresh to us.
        sim.advance(1900)
        clock.offset += 1400
        sim.reset_stats()
        assert (await client.get_task(task.task_id)).task_id == task.task_id
        assert sim.stats.errors_by_code[1004] == 1
        assert sim.stats.requests["query"] == 2  # refused once, re-signed, accepted
        assert len(set(sent)) == 2
        sim.reset_stats()
        await client.get_task(task.task_id)  # and it goes on with the new token
        assert dict(sim.stats.errors_by_code) == {}
        assert sim.stats.requests["query"] == 1


@pytest.mark.parametrize(
    ("skew", "code"),
    [(+600, 1003), (-2400, 1004)],
    ids=["ahead 10 min: not yet valid", "behind 40 min: already expired"],
)
async def test_a_skewed_clock_is_corrected_by_the_servers_date(
    sim: Simulator, skew: float, code: int
) -> None:
    # The refusal's Date header teaches the server's time: the re-signed token is signed by
    # it, so the call succeeds after exactly one refusal, and later calls see none.
    async with recorded(sim, SkewedClock(skew)) as (client, sent):
        task = await asyncio.wait_for(client.submit(request()), 5)
        assert sim.stats.errors_by_code[code] == 1
        assert sim.stats.requests["create"] == 2  # refused once, re-signed by server time
        assert sim.stats.accepted_creates == 1
        offset = client.server_clock.offset
        assert offset is not None and abs(offset + skew) < 2
        sim.reset_stats()
        assert (await client.get_task(task.task_id)).task_id == task.task_id
        assert dict(sim.stats.errors_by_code) == {}
        assert len(set(sent)) == 2


async def test_ten_minutes_behind_still_works(sim: Simulator) -> None:
    # A token lives 1800 s: a clock 10 min slow leaves 20 min of validity; the answers' Date
    # headers teach the offset, so the token is renewed before the server would refuse it.
    clock = SkewedClock(-600)
    async with client_for(sim, clock) as client:
        task = await client.submit(request())
        sim.advance(1250)
        clock.offset += 1250
        sim.reset_stats()
        await client.get_task(task.task_id)
        assert sim.stats.errors_by_code[1004] == 0
        assert sim.stats.requests["query"] == 1


@pytest.mark.parametrize(
    "wrong",
    [
        {"secret": "SK-wrong-0123456789abcdef0123456789abcdef"},
        {"access": "AK-unknown"},
        {"api_key": "not-the-api-key-0123456789"},
    ],
    ids=["wrong secret", "unknown access key", "wrong api key"],
)
async def test_wrong_keys_give_one_clear_error(sim: Simulator, wrong: dict[str, str]) -> None:
    keys: dict[str, Any] = (
        {"api_key": wrong["api_key"]}
        if "api_key" in wrong
        else {
            "access_key": wrong.get("access", sim.access_key),
            "secret_key": wrong.get("secret", sim.secret_key),
        }
    )
    async with client_for(sim, **keys) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.get_task("1")
        assert info.value.code == 1002
        assert "invalid" in str(info.value).lower()
        assert sum(sim.stats.requests.values()) == 1  # not retried, not re-signed
        sim.reset_stats()
        with pytest.raises(AuthenticationError):
            await client.submit(request())
        assert sim.stats.requests["create"] == 1
        assert client.stats.slots_in_use == 0


async def test_a_batch_with_wrong_keys_stops_early(sim: Simulator, tmp_path: Path) -> None:
    image = tmp_path / "ref.png"
    image.write_bytes(make_png())
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        "".join(
            json.dumps({"images": [image.name], "prompt": f"dog {n}"}) + "\n" for n in range(40)
        )
    )
    async with client_for(
        sim, access_key=sim.access_key, secret_key="SK-wrong-0123456789abcdef0123456789abcdef"
    ) as client:
        batch = kling_async.run_batch(client, jobs, tmp_path / "out")

        async def drain() -> list[Any]:
            return [r async for r in batch]

        results = await asyncio.wait_for(drain(), 20)
    creates = sim.stats.requests["create"]
    assert 1 <= creates <= client.limits.concurrency  # the submitters in flight, no more
    assert sim.stats.accepted_creates == 0
    assert batch.stop_reason is not None and "AuthenticationError" in batch.stop_reason
    assert not any(r.ok for r in results)
