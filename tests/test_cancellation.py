"""Cancelling `wait()` / `submit()` (or the whole program) is clean: no leaked tasks or sessions."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import kling_async as kling
from kling_async.simulator import Simulator

FAST_POLL = kling.PollPolicy(interval=0.05, min_interval=0.02)


def make_client(sim: Simulator, **kw: Any) -> kling.Client:
    return kling.Client(
        access_key=sim.access_key,
        secret_key=sim.secret_key,
        base_url=sim.url,
        poll=FAST_POLL,
        **kw,
    )


def others() -> set[asyncio.Task[Any]]:
    """Tasks still alive besides the test itself."""
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}


async def cancel(task: asyncio.Future[Any]) -> None:
    """Cancel and check it ends as cancelled (not with some other error)."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.fixture
def request_(png_path: Path) -> kling.MultiImageToVideoRequest:
    return kling.MultiImageToVideoRequest(images=[png_path], prompt="cancel me")


async def test_cancelling_wait_keeps_the_task_followed(
    request_: kling.MultiImageToVideoRequest,
) -> None:
    async with Simulator(gen_seconds=0.4, gen_spread=0.0) as sim, make_client(sim) as client:
        task = await client.submit(request_)
        waiter = asyncio.ensure_future(client.wait(task))
        await asyncio.sleep(0.05)
        await cancel(waiter)
        assert client.stats.slots_in_use == 1  # the task still runs on Kling: its slot stays held
        final = await client.wait(task, timeout=10)  # a new wait picks it up again
        assert final.task_status == "succeed"
        assert client.stats.slots_in_use == 0
    assert not others()


async def test_a_timeout_around_wait_is_a_plain_cancellation(
    request_: kling.MultiImageToVideoRequest,
) -> None:
    async with Simulator(gen_seconds=5.0) as sim, make_client(sim) as client:
        task = await client.submit(request_)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await client.wait(task)
        assert client.stats.following == 1
    assert not others()


async def test_cancelling_submit_queued_for_a_slot(
    request_: kling.MultiImageToVideoRequest,
) -> None:
    async with (
        Simulator(gen_seconds=5.0) as sim,
        make_client(sim, limits=kling.Limits(concurrency=1)) as client,
    ):
        await client.submit(request_)
        second = asyncio.ensure_future(client.submit(request_.with_external_id("second")))
        await asyncio.sleep(0.1)
        assert not second.done()  # queued behind the one slot
        await cancel(second)
        assert client.stats.slots_in_use == 1
        assert sim.stats.accepted_creates == 1  # the queued one never reached Kling
    assert not others()


async def test_cancelling_submit_mid_request_gives_the_slot_back(
    request_: kling.MultiImageToVideoRequest,
) -> None:
    async with (
        Simulator(gen_seconds=0.1) as sim,
        make_client(sim, limits=kling.Limits(concurrency=1)) as client,
    ):
        sim.faults.script("create", "stall")
        pending = asyncio.ensure_future(client.submit(request_))
        for _ in range(100):
            if sim.stats.requests["create"]:
                break
            await asyncio.sleep(0.01)
        await cancel(pending)
        assert client.stats.slots_in_use == 0
        task = await client.submit(request_.with_external_id("after"))  # the slot is usable
        assert (await client.wait(task, timeout=10)).task_status == "succeed"
    assert not others()


async def test_closing_the_client_under_a_waiter_ends_it(
    request_: kling.MultiImageToVideoRequest,
) -> None:
    async with Simulator(gen_seconds=5.0) as sim:
        client = make_client(sim)
        waiter = asyncio.ensure_future(client.wait(await client.submit(request_)))
        await asyncio.sleep(0.05)
        await client.aclose()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert not others()


def run_clean(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run in a fresh loop; fail on any loop error report or ResourceWarning, even at GC."""
    reports: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: reports.append(str(ctx.get("message"))))
        await scenario()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main())
        gc.collect()
    assert reports == []  # e.g. "Task was destroyed but it is pending!", "Unclosed client session"
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


@pytest.mark.parametrize("stage", ["waiting", "queued"])
def test_cancelling_the_whole_program_leaves_nothing_behind(
    request_: kling.MultiImageToVideoRequest, stage: str
) -> None:
    async def scenario() -> None:
        async with Simulator(gen_seconds=5.0) as sim:

            async def program() -> None:
                async with make_client(sim, limits=kling.Limits(concurrency=1)) as client:
                    first = await client.submit(request_)
                    if stage == "queued":
                        await client.submit(request_.with_external_id("queued"))
                    await client.wait(first)

            main = asyncio.ensure_future(program())
            await asyncio.sleep(0.3)
            await cancel(main)
        assert not others()

    run_clean(scenario)
