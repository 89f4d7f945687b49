"""The tolerant reader end to end: the simulator's answer-shape switches against the client,
the batch and the command line (`kling_async/simulator/_shapes.py` lists the switches)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import (
    FAST_RETRY,
    SimProcess,
    by_line,
    collect,
    job_line,
    make_client,
    make_requests,
    run_cli,
    simulators,
    sql,
    write_jobs,
)
from redis_helpers import until

from kling_async import (
    BatchResult,
    CallbackReceiver,
    Client,
    Event,
    Limits,
    PollPolicy,
    ResponseValidationError,
    TaskFailedError,
    TaskUnreadable,
    VideoSkipped,
    batch_status,
    run_batch,
)
from kling_async._limits import JITTER
from kling_async.simulator import Simulator

StartSim = Callable[..., Awaitable[Simulator]]
#: Quick polls and a limit of 3 unreadable answers in a row (the default).
POLL = PollPolicy(interval=0.05, min_interval=0.01, interval_max=0.1)


@pytest.fixture
async def start_sim() -> AsyncIterator[StartSim]:
    async with simulators() as start:
        yield start


async def test_wait_reads_numbers_for_strings(start_sim: StartSim) -> None:
    sim = await start_sim(shapes={"numbers_for_strings": True})
    async with make_client(sim) as client:
        task = await client.submit(make_requests(1)[0])
        raw = sim.task(task.task_id)
        assert raw is not None and isinstance(raw["task_id"], int)
        done = await asyncio.wait_for(client.wait(task), 5)
    raw = sim.task(task.task_id)
    assert raw is not None
    assert raw["task_result"]["videos"][0]["duration"] == 5  # "duration": 5 on the wire
    assert raw["final_unit_deduction"] == 1
    assert done.status == "succeed"
    assert done.task_id == task.task_id
    assert done.videos[0].duration == "5"
    assert done.final_unit_deduction == "1"


async def test_an_unreadable_task_ends_its_wait_within_a_few_polls(start_sim: StartSim) -> None:
    sim = await start_sim(gen_seconds=0.05, shapes={"unreadable": {"odd-1": "task_status"}})
    async with make_client(sim, poll=POLL) as client:
        task = await client.submit(make_requests(1)[0], external_task_id="odd-1")
        with pytest.raises(ResponseValidationError) as info:
            await asyncio.wait_for(client.wait(task), 5)  # not the hour of PollPolicy.timeout
        assert (info.value.field, info.value.value) == ("task_status", "'in_queue'")
        assert "in_queue" in str(info.value)
        assert sim.stats.requests["query"] <= POLL.unreadable_limit + 1
        # The task is still followed, its slot held: no answer said it ended.
        assert client.stats.following == 1 and client.stats.slots_in_use == 1
        sim.control(shapes={"unreadable": {}})  # the answers become readable again
        done = await asyncio.wait_for(client.wait(task), 5)
        assert done.status == "succeed" and done.external_task_id == "odd-1"
        assert client.stats.slots_in_use == 0 and client.stats.following == 0


async def test_a_finished_but_unreadable_task_frees_its_slot(start_sim: StartSim) -> None:
    # created_at cannot be read, but task_status can: once it says `succeed`, Kling no longer
    # counts the task, so neither do we.
    sim = await start_sim(gen_seconds=0.05, shapes={"unreadable": {"odd-2": "created_at"}})
    events: list[Event] = []
    async with make_client(sim, poll=POLL, event_hook=events.append) as client:
        task = await client.submit(make_requests(1)[0], external_task_id="odd-2")
        with pytest.raises(ResponseValidationError, match="created_at = 'not a time'"):
            await asyncio.wait_for(client.wait(task), 5)
        assert client.stats.slots_in_use == 0 and client.stats.following == 0
    bad = [e for e in events if isinstance(e, TaskUnreadable)]
    assert len(bad) >= POLL.unreadable_limit
    assert bad[0].task_id == task.task_id and bad[0].field == "created_at"


async def test_the_slot_of_an_unreadable_task_is_given_back_at_its_deadline(
    start_sim: StartSim,
) -> None:
    sim = await start_sim(gen_seconds=0.05, shapes={"unreadable": {"odd-3": "task_status"}})
    poll = PollPolicy(interval=0.05, min_interval=0.01, interval_max=0.1, timeout=0.5)
    async with make_client(sim, poll=poll) as client:
        task = await client.submit(make_requests(1)[0], external_task_id="odd-3")
        with pytest.raises(ResponseValidationError):
            await asyncio.wait_for(client.wait(task, timeout=5), 5)
        assert client.stats.slots_in_use == 1
        # followed until its deadline (poll.timeout), no longer
        assert await until(lambda: client.stats.following == 0, timeout=5)
        assert client.stats.slots_in_use == 0 and client.stats.following == 0


@pytest.mark.parametrize("slots", [2, 5], ids=["single-queries", "list-sweeps"])
async def test_a_batch_with_one_unreadable_task_finishes_the_others(
    start_sim: StartSim, tmp_path: Path, slots: int
) -> None:
    sim = await start_sim(concurrency=slots, shapes={"unreadable": {"odd-batch": "task_status"}})
    requests = make_requests(6)
    requests[2] = requests[2].with_external_id("odd-batch")
    async with make_client(sim, concurrency=slots, poll=POLL) as client:
        results = by_line(await collect(run_batch(client, requests, tmp_path), 30))
    bad = results.pop(3)
    assert bad.state == "submitting"  # a rerun asks Kling by external id, never re-creates
    assert bad.error is not None and bad.error.type == "ResponseValidationError"
    assert "task_status = 'in_queue'" in bad.error.message
    assert [r.state for r in results.values()] == ["downloaded"] * 5
    stats = sim.stats
    assert stats.accepted_creates == 6
    assert stats.rejected_concurrency == 0  # the held slot was never handed out twice
    assert stats.peak_running <= slots


async def all_downloaded(client: Client, out: Path, n: int = 3) -> list[BatchResult]:
    """Run a batch of `n` jobs into `out`; every one must end with its video on disk."""
    results = await collect(run_batch(client, make_requests(n), out), 20)
    assert sorted(r.state for r in results) == ["downloaded"] * n
    return results


def undownload(out: Path) -> None:
    """As if the run had stopped before downloading: finished jobs, no files."""
    sql(out, "UPDATE jobs SET state = 'succeeded', files = NULL")
    for path in (out / "videos").iterdir():
        path.unlink()


async def test_timestamps_in_seconds_do_not_expire_videos(
    start_sim: StartSim, tmp_path: Path
) -> None:
    sim = await start_sim(shapes={"seconds_timestamps": True})
    async with make_client(sim, poll=POLL) as client:
        results = await all_downloaded(client, tmp_path)
    for result in results:
        assert result.expires_at is not None and result.expires_at.year >= 2025


async def test_missing_timestamps_mean_unknown_expiry_fetched_first(
    start_sim: StartSim, tmp_path: Path
) -> None:
    sim = await start_sim(shapes={"missing_timestamps": True})
    async with make_client(sim, poll=POLL) as client:
        results = await all_downloaded(client, tmp_path)
        assert all(r.expires_at is None for r in results)
        undownload(tmp_path)
        status = batch_status(tmp_path)
        assert (status.pending_downloads, status.unknown_expiry) == (3, 3)
        assert status.soonest_expiry is None
        await all_downloaded(client, tmp_path)  # the rerun fetches them
    assert len(list((tmp_path / "videos").iterdir())) == 3


async def test_an_echoed_task_info_keeps_our_external_id(
    start_sim: StartSim, tmp_path: Path
) -> None:
    sim = await start_sim(shapes={"echo_task_info": True})
    async with make_client(sim, poll=POLL) as client:
        task = await client.submit(make_requests(1)[0], external_task_id="mine-1")
        assert task.external_task_id == "mine-1"
        done = await asyncio.wait_for(client.wait(task), 5)
        assert done.external_task_id == "mine-1"  # queries answer "task_info": {}
        files = await client.download(done, tmp_path)
    assert [f.name for f in files] == ["mine-1.mp4"]


async def test_null_results_and_videos_read_as_none(start_sim: StartSim) -> None:
    sim = await start_sim(fail_rate=1.0, shapes={"videos_null": True})
    async with make_client(sim, poll=POLL) as client:
        task = await client.submit(make_requests(1)[0])
        assert sim.task(task.task_id)["task_result"] == {"videos": None}  # type: ignore[index]
        with pytest.raises(TaskFailedError) as info:
            await asyncio.wait_for(client.wait(task), 5)
    assert sim.task(task.task_id)["task_result"] is None  # type: ignore[index]
    assert info.value.task.videos == []


async def test_a_video_without_url_is_skipped_with_a_warning(
    start_sim: StartSim, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim = await start_sim(shapes={"video_without_url": True})
    events: list[Event] = []
    async with make_client(sim, poll=POLL, event_hook=events.append) as client:
        task = await client.submit(make_requests(1)[0], external_task_id="one-url")
        done = await asyncio.wait_for(client.wait(task), 5)
        files = await client.download(done, tmp_path)
    assert len(sim.task(task.task_id)["task_result"]["videos"]) == 2  # type: ignore[index]
    assert len(done.videos) == 1 and [f.name for f in files] == ["one-url.mp4"]
    skipped = [e for e in events if isinstance(e, VideoSkipped)]
    assert skipped and skipped[0].task_id == task.task_id
    assert skipped[0].video_id == f"no-url-{task.task_id}"
    assert "has no url" in caplog.text


async def test_a_list_page_with_an_unreadable_item_gives_the_rest(start_sim: StartSim) -> None:
    sim = await start_sim(shapes={"unreadable": {"odd-list": "videos"}})
    events: list[Event] = []
    async with make_client(sim, poll=POLL, event_hook=events.append) as client:
        for i, request in enumerate(make_requests(4)):
            await client.submit(request, external_task_id="odd-list" if i == 1 else None)
        page = await client.list_tasks(1, 30)
        walked = [t async for t in client.iter_tasks(page_size=2)]
    assert len(page) == 3 and page.items == 4
    (error,) = page.unreadable
    assert error.field == "task_result.videos" and error.value == "'none'"
    assert len(walked) == 3
    bad = [e for e in events if isinstance(e, TaskUnreadable) and e.source == "list"]
    assert len(bad) >= 2 and bad[0].field == "task_result.videos"


async def test_newer_callbacks_with_numeric_ids_are_accepted(start_sim: StartSim) -> None:
    sim = await start_sim(shapes={"callback_id_status": True, "numbers_for_strings": True})
    slow = PollPolicy(interval=30, interval_max=30)  # only a callback can wake the sweep
    async with make_client(sim, poll=slow) as client, CallbackReceiver(client) as receiver:
        client.callback_url = receiver.url
        task = await client.submit(make_requests(1)[0])
        done = await asyncio.wait_for(client.wait(task), 5)
    assert done.status == "succeed"
    assert receiver.accepted >= 2 and receiver.rejected == receiver.ignored == 0
    assert sim.stats.callbacks_failed == 0


def backoff_steps(elapsed: float, first: float, cap: float) -> int:
    """How many creates the empty gate's back-off lets out in `elapsed` s at most (every wait
    at the short end of its jitter)."""
    count, at, step = 1, first, first
    while at <= elapsed:
        count += 1
        step = min(cap, 2 * step)
        at += max(first, (1 - JITTER) * step)
    return count


@pytest.mark.parametrize("under_200", [False, True])
async def test_1303_with_nothing_of_ours_running_waits_on_the_gate(
    start_sim: StartSim, under_200: bool
) -> None:
    # Someone else holds every slot: one probe per back-off step (the documented first wait,
    # doubling, jittered, up to the probe interval), never a retry loop (the issue saw 39 POSTs
    # in 3 s under HTTP 200). Load only makes the count smaller.
    sim = await start_sim(concurrency=1, held_slots=1, shapes={"errors_under_200": under_200})
    interval = 0.2
    first = FAST_RETRY.concurrency_wait_initial
    limits = Limits(concurrency=2, rps=1000, probe_interval=interval)
    async with make_client(sim, limits=limits) as client:
        submit = asyncio.create_task(client.submit(make_requests(1)[0]))
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.sleep(1.0)
        elapsed = loop.time() - started
        refused = sim.stats.rejected_concurrency
        assert 1 <= refused <= backoff_steps(elapsed, first, interval) + 1
        assert sim.stats.requests["create"] == refused
        sim.held_slots = 0
        task = await asyncio.wait_for(submit, 5)
        assert task.status == "submitted" and client.stats.slots_in_use == 1


def test_the_cli_runs_a_batch_against_odd_answers(tmp_path: Path) -> None:
    shapes = [
        "numbers_for_strings",
        "seconds_timestamps",
        "echo_task_info",
        "video_without_url",
        "videos_null",
        "errors_under_200",
    ]
    args = [arg for shape in shapes for arg in ("--shape", shape)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job_line(i) for i in range(4)])
    with SimProcess("--gen-seconds", "0.1", "--concurrency", "2", *args) as sp:
        assert set(sp.get("/__sim/stats")["settings"]["shapes"]) == set(shapes)
        out = tmp_path / "out"
        done = run_cli(["run", str(jobs), "--out", str(out), "--no-progress"], sp.env(), 60)
        assert done.returncode == 0, done.stderr
        status = run_cli(["status", str(out)], sp.env())
    assert "downloaded      4" in status.stdout
    assert len(list((out / "videos").glob("*.mp4"))) == 4


def test_the_cli_status_tells_of_an_unknown_expiry(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job_line(i) for i in range(2)])
    with SimProcess("--gen-seconds", "0.1", "--shape", "missing_timestamps") as sp:
        out = tmp_path / "out"
        done = run_cli(["run", str(jobs), "--out", str(out), "--no-progress"], sp.env(), 60)
        assert done.returncode == 0, done.stderr
        undownload(out)
        status = run_cli(["status", str(out)], sp.env())
        assert "2 finished video(s) not on disk with an unknown expiry" in status.stdout
        fetched = run_cli(["download", str(out), "--no-progress"], sp.env(), 60)
        assert fetched.returncode == 0, fetched.stderr
    assert len(list((out / "videos").glob("*.mp4"))) == 2


def test_shape_switches_are_validated() -> None:
    for bad in ({"nope": True}, {"numbers_for_strings": 1}, {"unreadable": {"x": "url"}}):
        with pytest.raises(ValueError):
            Simulator(shapes=bad)


async def test_shape_switches_change_at_run_time(start_sim: StartSim) -> None:
    sim = await start_sim()
    described: dict[str, Any] = sim.control(shapes={"seconds_timestamps": True})
    assert described["settings"]["shapes"] == {"seconds_timestamps": True}
    with pytest.raises(ValueError, match="unknown shape switch"):
        sim.control(shapes={"nope": True})
    described = sim.control(shapes={"seconds_timestamps": False, "unreadable": {"a": "videos"}})
    assert described["settings"]["shapes"] == {"unreadable": {"a": "videos"}}
