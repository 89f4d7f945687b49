"""Resuming a batch from its journal after a crash at a chosen instant (in-process)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import (
    VIDEO_BYTES,
    assert_no_duplicate_creates,
    assert_videos_complete,
    by_line,
    collect,
    journal_rows,
    make_client,
    make_requests,
    manifest,
    simulators,
    sql,
    video_ids,
)

from kling_async import MultiImageToVideoRequest, RetryPolicy, run_batch
from kling_async._identity import generated_external_id
from kling_async._jobs import Identifier, jobs_from_requests
from kling_async._journal import Journal
from kling_async._results import JOURNAL_NAME
from kling_async.simulator import FaultConfig, Simulator, VideoContent

StartSim = Callable[..., Awaitable[Simulator]]


@pytest.fixture
async def start_sim() -> AsyncIterator[StartSim]:
    """`await start_sim(**config)`: a running simulator, stopped at teardown."""
    async with simulators() as start:
        yield start


async def batch_ext(
    out: Path, requests: list[MultiImageToVideoRequest], line: int
) -> tuple[str, str]:
    """(external id, identity) the batch in `out` gives the job on `line`."""
    journal = Journal(out / JOURNAL_NAME)
    try:
        batch_id = journal.meta("batch_id")
    finally:
        journal.close_sync()
    assert batch_id
    identifier = Identifier()
    jobs = [await identifier.identify(job) for job in jobs_from_requests(requests)]
    key = jobs[line - 1].key
    return generated_external_id(batch_id, key), key


def insert_row(out: Path, line: int, ext: str, key: str, state: str, task: Any = None) -> None:
    sql(
        out,
        "INSERT INTO jobs (key, line, external_id, watermark, state, task_id, task, expires_at,"
        " updated) VALUES (?, ?, ?, 0, ?, ?, ?, ?, 0)",
        key,
        line,
        ext,
        state,
        task.task_id if task else None,
        json.dumps(task.model_dump(mode="json")) if task else None,
        task.expires_at.timestamp() if task else None,
    )


async def test_crash_between_intent_and_create_answer_adopts(
    start_sim: StartSim, tmp_path: Path
) -> None:
    """Row `submitting`, but the POST did reach Kling: the rerun adopts, never re-creates."""
    sim = await start_sim(concurrency=3)
    requests = make_requests(4)
    async with make_client(sim) as client:
        await collect(run_batch(client, requests[:3], tmp_path))
        ext, fp = await batch_ext(tmp_path, requests, 4)
        insert_row(tmp_path, 4, ext, fp, "submitting")  # intent committed …
        await client.submit(requests[3].with_external_id(ext))  # … and the create happened
    async with make_client(sim) as client:
        results = by_line(await collect(run_batch(client, requests, tmp_path)))
    stats = sim.stats.as_dict()
    assert all(r.ok for r in results.values()) and len(results) == 4
    assert stats["creates_by_external_id"][ext] == 1
    assert stats["accepted_creates"] == 4
    assert_videos_complete(tmp_path, sim.video_sha256, expect=4)


async def test_crash_before_the_create_left_creates_once(
    start_sim: StartSim, tmp_path: Path
) -> None:
    """Row `submitting`, nothing on Kling's side: the rerun asks, then creates it once."""
    sim = await start_sim(concurrency=3)
    requests = make_requests(4)
    async with make_client(sim) as client:
        await collect(run_batch(client, requests[:3], tmp_path))
    ext, fp = await batch_ext(tmp_path, requests, 4)
    insert_row(tmp_path, 4, ext, fp, "submitting")
    async with make_client(sim) as client:
        results = by_line(await collect(run_batch(client, requests, tmp_path)))
    stats = sim.stats.as_dict()
    assert results[4].ok and stats["creates_by_external_id"][ext] == 1
    assert_no_duplicate_creates(stats)


async def test_running_task_in_journal_is_followed_and_holds_a_slot(
    start_sim: StartSim, tmp_path: Path
) -> None:
    """Row `submitted` (crash while it ran): followed to the end; its slot counts on resume."""
    sim = await start_sim(concurrency=2, gen_seconds=0.3)
    requests = make_requests(6)
    async with make_client(sim, concurrency=2) as client:
        await collect(run_batch(client, requests[:1], tmp_path))
        ext, fp = await batch_ext(tmp_path, requests, 2)
        task = await client.submit(requests[1].with_external_id(ext))
    insert_row(tmp_path, 2, ext, fp, "submitted", task)
    sim.reset_stats()
    async with make_client(sim, concurrency=2) as client:
        results = by_line(await collect(run_batch(client, requests, tmp_path)))
    stats = sim.stats.as_dict()
    assert len(results) == 6 and all(r.ok for r in results.values())
    assert ext not in stats["creates_by_external_id"]
    assert stats["accepted_creates"] == 4
    assert stats["peak_running"] <= 2
    assert stats["rejected_concurrency"] == 0  # the running task's slot was counted
    assert_videos_complete(tmp_path, sim.video_sha256, expect=6)


async def test_file_renamed_but_journal_not_updated_is_hashed_not_fetched(
    start_sim: StartSim, tmp_path: Path
) -> None:
    sim = await start_sim(concurrency=3)
    async with make_client(sim) as client:
        await collect(run_batch(client, make_requests(3), tmp_path))
    before = {row["line"]: row for row in manifest(tmp_path)}
    # The crash: video renamed into place, journal still says `succeeded`.
    sql(tmp_path, "UPDATE jobs SET state = 'succeeded', files = NULL WHERE line IN (1, 3)")
    sim.reset_stats()
    async with make_client(sim) as client:
        results = by_line(await collect(run_batch(client, make_requests(3), tmp_path)))
    stats = sim.stats.as_dict()
    assert all(r.ok for r in results.values())
    assert stats["video_bytes_served"] == 0 and stats["requests"] == {}
    assert {row["line"]: row for row in manifest(tmp_path)} == before
    assert_videos_complete(tmp_path, sim.video_sha256, expect=3)


async def test_leftover_part_is_resumed_with_range(start_sim: StartSim, tmp_path: Path) -> None:
    sim = await start_sim(concurrency=3, faults=FaultConfig(rates={"video": {"5000": 1.0}}))
    quick = RetryPolicy(attempts=1, wait_initial=0.01)
    async with make_client(sim, retry=quick) as client:
        first = by_line(await collect(run_batch(client, make_requests(2), tmp_path)))
    assert {r.state for r in first.values()} == {"succeeded"}
    content = VideoContent(VIDEO_BYTES)
    for row in journal_rows(tmp_path):
        (vid,) = video_ids(row)
        part = tmp_path / "videos" / f"{row.external_id}.mp4.part"
        part.write_bytes(b"".join(content.iter_range(vid, 0, 9_999)))  # a crash mid-transfer
    sim.faults.clear()
    sim.reset_stats()
    async with make_client(sim) as client:
        second = by_line(await collect(run_batch(client, None, tmp_path)))
    assert all(r.ok for r in second.values()) and len(second) == 2
    assert sim.stats.as_dict()["video_bytes_served"] == 2 * (VIDEO_BYTES - 10_000)
    assert_videos_complete(tmp_path, sim.video_sha256, expect=2)


async def test_leaving_the_loop_early_then_rerun(start_sim: StartSim, tmp_path: Path) -> None:
    """A Python caller stops iterating (or is cancelled): journal stays sound, rerun finishes."""
    sim = await start_sim(concurrency=3, gen_seconds=0.15)
    requests = make_requests(12)
    async with make_client(sim, concurrency=3) as client:
        batch = run_batch(client, requests, tmp_path)
        async with contextlib.aclosing(batch.__aiter__()) as results:
            async for result in results:
                if result.ok:
                    break
        await asyncio.sleep(0.4)  # tasks of the stopped batch finish while the client lives on
    async with make_client(sim, concurrency=3) as client:
        task = asyncio.ensure_future(collect(run_batch(client, requests, tmp_path)))
        await asyncio.sleep(0.2)
        task.cancel()  # cancelled like Ctrl-C would
        with contextlib.suppress(asyncio.CancelledError):
            await task
    async with make_client(sim, concurrency=3) as client:
        final = by_line(await collect(run_batch(client, requests, tmp_path)))
    stats = sim.stats.as_dict()
    assert len(final) == 12 and all(r.ok for r in final.values())
    assert_no_duplicate_creates(stats)
    assert stats["accepted_creates"] == 12
    assert_videos_complete(tmp_path, sim.video_sha256, expect=12)


async def test_task_found_finished_past_retention_is_expired(
    start_sim: StartSim, tmp_path: Path
) -> None:
    """A rerun 31 days later finds its running task long finished, video gone: `expired`."""
    sim = await start_sim(concurrency=3)
    requests = make_requests(2)
    async with make_client(sim) as client:
        await collect(run_batch(client, requests[:1], tmp_path))
        ext, fp = await batch_ext(tmp_path, requests, 2)
        task = await client.submit(requests[1].with_external_id(ext))
    insert_row(tmp_path, 2, ext, fp, "submitted", task)
    await asyncio.sleep(0.3)  # it finishes while nobody watches
    sim.advance(31 * 86_400)
    async with make_client(sim) as client:
        results = by_line(await collect(run_batch(client, requests, tmp_path)))
    assert results[2].state == "expired" and not results[2].files
    # Every answer of this run is from 31 days later: past expiry by the server's clock.
    assert results[2].error is not None and "video expired on" in results[2].error.message
    assert results[1].ok  # downloaded in the first run


async def test_resume_lookup_failure_does_not_crash(start_sim: StartSim, tmp_path: Path) -> None:
    """Asking Kling about an unknown create fails (account error): reported, batch goes on."""
    sim = await start_sim(concurrency=3)
    requests = make_requests(3)
    async with make_client(sim) as client:
        await collect(run_batch(client, requests[:2], tmp_path))
    ext, fp = await batch_ext(tmp_path, requests, 3)
    insert_row(tmp_path, 3, ext, fp, "submitting")
    sim.faults.script("query", "1102")
    async with make_client(sim) as client:
        batch = run_batch(client, requests, tmp_path)
        results = by_line(await collect(batch))
    assert results[1].ok and results[2].ok
    assert results[3].state == "submitting"
    assert results[3].error is not None and results[3].error.code == 1102
    assert batch.stop_reason is not None
    assert sim.stats.as_dict()["creates_by_external_id"].get(ext, 0) == 0
    async with make_client(sim) as client:  # account fixed
        final = by_line(await collect(run_batch(client, requests, tmp_path)))
    assert all(r.ok for r in final.values())
    assert sim.stats.as_dict()["creates_by_external_id"][ext] == 1


async def test_stop_submitting_is_graceful_then_rerun(start_sim: StartSim, tmp_path: Path) -> None:
    """`batch.stop_submitting()`: nothing new is created, what runs finishes and downloads."""
    sim = await start_sim(concurrency=3, gen_seconds=0.15)
    requests = make_requests(12)
    async with make_client(sim, concurrency=5) as client:  # 2 submitters wait for a slot
        batch = run_batch(client, requests, tmp_path)
        results = []
        async for result in batch:
            results.append(result)
            if len(results) == 2:
                created = sim.stats.as_dict()["accepted_creates"]
                batch.stop_submitting("enough for today")
    stats = sim.stats.as_dict()
    assert batch.stop_reason == "enough for today"
    assert stats["accepted_creates"] <= created + 1  # at most a create already on the wire
    assert sum(r.ok for r in results) == stats["accepted_creates"] < 12
    assert all(r.ok for r in results)
    async with make_client(sim, concurrency=5) as client:
        final = by_line(await collect(run_batch(client, requests, tmp_path)))
    stats = sim.stats.as_dict()
    assert len(final) == 12 and all(r.ok for r in final.values())
    assert stats["accepted_creates"] == 12
    assert_no_duplicate_creates(stats)
