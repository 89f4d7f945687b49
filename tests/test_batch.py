"""The bulk runner end to end against the in-process simulator (Python API: run_batch)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import (
    URL_IMAGE,
    VIDEO_BYTES,
    assert_no_duplicate_creates,
    assert_videos_complete,
    by_line,
    collect,
    job_line,
    journal_rows,
    make_client,
    make_requests,
    manifest,
    simulators,
    write_jobs,
)

from kling_async import (
    Batch,
    BatchResult,
    Client,
    RetryPolicy,
    batch_status,
    run_batch,
)
from kling_async.simulator import FaultConfig, Simulator
from kling_async.simulator._config import DEFAULT_FAILURE_MESSAGES

StartSim = Callable[..., Awaitable[Simulator]]
DAY = 86_400.0


@pytest.fixture
async def start_sim() -> AsyncIterator[StartSim]:
    """`await start_sim(**config)`: a running simulator, stopped at teardown."""
    async with simulators() as start:
        yield start


def sha_of(sim: Simulator) -> Callable[[str], str]:
    return lambda video_id: sim.video_sha256(video_id)


async def run(client: Client, jobs: Any, out: Path, **kw: Any) -> dict[int, BatchResult]:
    return by_line(await collect(run_batch(client, jobs, out, **kw)))


# -- concurrency ------------------------------------------------------------------------------


async def test_cap_lower_than_concurrency(start_sim: StartSim, tmp_path: Path) -> None:
    sim = await start_sim(concurrency=3, gen_seconds=0.1)
    async with make_client(sim, concurrency=8) as client:
        results = await run(client, make_requests(24), tmp_path)
    stats = sim.stats.as_dict()
    assert len(results) == 24
    assert all(r.ok for r in results.values()), [r for r in results.values() if not r.ok]
    assert stats["peak_running"] <= 3
    assert stats["accepted_creates"] == 24
    assert stats["rejected_concurrency"] <= 5, stats["rejected_concurrency"]
    assert_no_duplicate_creates(stats)
    assert assert_videos_complete(tmp_path, sha_of(sim), expect=24) == 24


async def test_someone_else_holds_slots(start_sim: StartSim, tmp_path: Path) -> None:
    """Other users of the account leave fewer slots than configured: still never above cap."""
    sim = await start_sim(concurrency=4, held_slots=2, gen_seconds=0.05)
    async with make_client(sim, concurrency=4) as client:
        results = await run(client, make_requests(10), tmp_path)
    stats = sim.stats.as_dict()
    assert all(r.ok for r in results.values())
    assert stats["peak_running"] <= 2
    assert_no_duplicate_creates(stats)


# -- task failures and invalid jobs --------------------------------------------------------------


async def test_failed_tasks_reported_with_klings_message(
    start_sim: StartSim, tmp_path: Path
) -> None:
    sim = await start_sim(concurrency=4, fail_rate=0.35, seed=3)
    async with make_client(sim, concurrency=4) as client:
        results = await run(client, make_requests(16), tmp_path)
    failed = [r for r in results.values() if r.state == "failed"]
    done = [r for r in results.values() if r.state == "downloaded"]
    assert failed and done and len(failed) + len(done) == 16
    for result in failed:
        assert result.error is not None
        assert result.error.message in DEFAULT_FAILURE_MESSAGES
        assert result.task_id and not result.files and not result.ok
    rows = {row["line"]: row for row in manifest(tmp_path)}
    for result in failed:
        assert rows[result.line]["state"] == "failed"
        assert rows[result.line]["error"]["message"] == result.error.message  # type: ignore[union-attr]
    assert sim.stats.as_dict()["tasks_by_status"]["failed"] == len(failed)
    assert_videos_complete(tmp_path, sha_of(sim), expect=len(done))


async def test_invalid_lines_rejected_rest_go_on(start_sim: StartSim, tmp_path: Path) -> None:
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [
            "# a comment",  # 1
            job_line(1),  # 2
            "",  # 3
            "{not json",  # 4
            json.dumps({"images": [URL_IMAGE], "prompt": "x", "colour": "red"}),  # 5
            json.dumps({"images": ["missing.png"], "prompt": "x"}),  # 6
            json.dumps({"images": [URL_IMAGE] * 5, "prompt": "x"}),  # 7
            json.dumps({"images": [URL_IMAGE], "prompt": "x", "duration": "7"}),  # 8
            "   ",  # 9
            job_line(2),  # 10
            "[1, 2]",  # 11
            json.dumps({"images": [URL_IMAGE], "prompt": ""}),  # 12
            job_line(3, duration=10, mode="pro"),  # 13
        ],
    )
    sim = await start_sim(concurrency=3)
    async with make_client(sim, concurrency=3) as client:
        results = await run(client, jobs, tmp_path / "out")
    assert sorted(results) == [2, 4, 5, 6, 7, 8, 10, 11, 12, 13]  # blanks and comments skipped
    assert {n for n, r in results.items() if r.ok} == {2, 10, 13}
    reasons = {n: r.error.message for n, r in results.items() if not r.ok}  # type: ignore[union-attr]
    assert all(results[n].state == "rejected" for n in reasons)
    assert "not valid JSON" in reasons[4]
    assert "unknown field" in reasons[5] and "colour" in reasons[5]
    assert "missing.png" in reasons[6]
    assert "5 given" in reasons[7]
    assert "duration" in reasons[8]
    assert "JSON object" in reasons[11]
    assert "prompt" in reasons[12]
    assert sim.stats.as_dict()["accepted_creates"] == 3  # nothing rejected reached Kling
    rows = {row["line"]: row for row in manifest(tmp_path / "out")}
    assert sorted(rows) == sorted(results)
    assert rows[6]["state"] == "rejected" and rows[6]["error"]["field"]
    status = batch_status(tmp_path / "out")
    assert status.counts == {"downloaded": 3, "rejected": 7}
    assert {p.line for p in status.problems} == set(reasons)


async def test_api_refused_create_is_rejected_not_retried(
    start_sim: StartSim, tmp_path: Path
) -> None:
    """A content-policy refusal (1301) concerns one job: reported with code and request_id."""
    sim = await start_sim(concurrency=3, faults=FaultConfig(scripts={"create": ("1301",)}))
    async with make_client(sim, concurrency=1) as client:
        results = await run(client, make_requests(3), tmp_path)
    refused = [r for r in results.values() if r.state == "rejected"]
    assert len(refused) == 1 and refused[0].error is not None
    assert refused[0].error.code == 1301 and refused[0].error.request_id
    assert sum(r.ok for r in results.values()) == 2


# -- exactly-once creates --------------------------------------------------------------------


async def test_lost_create_answers_never_duplicate(start_sim: StartSim, tmp_path: Path) -> None:
    faults = FaultConfig(
        scripts={"create": ("lost", "none", "lost", "lost")}, rates={"create": {"lost": 0.2}}
    )
    sim = await start_sim(concurrency=4, faults=faults, seed=11)
    async with make_client(sim, concurrency=4) as client:
        results = await run(client, make_requests(30), tmp_path)
    stats = sim.stats.as_dict()
    assert stats["faults_injected"]["lost"] >= 6
    assert all(r.ok for r in results.values()), [r for r in results.values() if not r.ok]
    assert_no_duplicate_creates(stats)
    assert stats["accepted_creates"] == 30
    assert_videos_complete(tmp_path, sha_of(sim), expect=30)


# -- downloads ---------------------------------------------------------------------------------


async def test_truncated_downloads_resume_with_range(start_sim: StartSim, tmp_path: Path) -> None:
    faults = FaultConfig(scripts={"video": ("truncate", "truncate", "truncate")})
    sim = await start_sim(concurrency=3, faults=faults, video_bytes=300_000)
    async with make_client(sim, concurrency=3) as client:
        results = await run(client, make_requests(5), tmp_path)
    stats = sim.stats.as_dict()
    assert all(r.ok for r in results.values())
    assert stats["faults_injected"]["truncate"] == 3
    assert stats["requests"]["video"] == 5 + 3
    # Range resumes: the halves already on disk were not fetched again.
    assert stats["video_bytes_served"] == 5 * 300_000
    assert stats["video_auth_headers"] == 0
    assert assert_videos_complete(tmp_path, sha_of(sim), expect=5) == 5


@pytest.mark.parametrize("refusal", ["403", "404"])
async def test_403_404_video_urls_refreshed_by_requery(
    start_sim: StartSim, tmp_path: Path, refusal: str
) -> None:
    # One refusal per run: two in a row could both land on one video, whose URL is re-queried
    # once only (a second refusal of a fresh URL is an answer), which made this test flaky.
    sim = await start_sim(concurrency=3, faults=FaultConfig(scripts={"video": (refusal,)}))
    async with make_client(sim, concurrency=3) as client:
        results = await run(client, make_requests(4), tmp_path)
    stats = sim.stats.as_dict()
    assert all(r.ok for r in results.values()), [(r.state, r.error) for r in results.values()]
    assert stats["requests"]["video"] == 4 + 1
    assert stats["requests"].get("query", 0) >= 1  # the refused URL is re-queried
    assert_videos_complete(tmp_path, sha_of(sim), expect=4)


async def test_signed_urls_past_ttl_refreshed(start_sim: StartSim, tmp_path: Path) -> None:
    """Links stored in the journal go stale (url_ttl); a later download re-queries them first
    (a new client does not know the server's clock yet: a stored answer counts as stale)."""
    sim = await start_sim(
        concurrency=3, url_ttl=2.0, faults=FaultConfig(rates={"video": {"5000": 1.0}})
    )
    quick = RetryPolicy(attempts=1, wait_initial=0.01)
    async with make_client(sim, concurrency=3, retry=quick) as client:
        first = await run(client, make_requests(3), tmp_path)
    assert {r.state for r in first.values()} == {"succeeded"}  # finished, not on disk
    assert all(r.error for r in first.values())
    sim.faults.clear()
    sim.advance(10)  # every stored link is past its exp now
    sim.reset_stats()
    async with make_client(sim, concurrency=3) as client:
        second = await run(client, None, tmp_path)  # what `kling-async download` does
    stats = sim.stats.as_dict()
    assert all(r.ok for r in second.values()) and len(second) == 3
    assert stats["requests"]["video"] == 3  # each asked again before its video: none refused
    assert stats["requests"]["list"] == 1  # all three in one list page (a poller's sweep)
    assert "query" not in stats["requests"]
    assert stats["accepted_creates"] == 0
    assert_videos_complete(tmp_path, sha_of(sim), expect=3)


async def test_video_past_retention_is_expired(start_sim: StartSim, tmp_path: Path) -> None:
    sim = await start_sim(
        concurrency=3,
        # Tokens are signed by the server's time (its Date headers): the jump changes nothing.
        faults=FaultConfig(rates={"video": {"5000": 1.0}}),
    )
    quick = RetryPolicy(attempts=1, wait_initial=0.01)
    async with make_client(sim, concurrency=3, retry=quick) as client:
        first = await run(client, make_requests(3), tmp_path)
    assert {r.state for r in first.values()} == {"succeeded"}
    status = batch_status(tmp_path)
    assert status.pending_downloads == 3 and status.soonest_expiry is not None
    assert status.soonest_expiry - datetime.now(UTC) > timedelta(days=29)
    sim.faults.clear()
    sim.advance(31 * DAY)
    async with make_client(sim) as client:
        second = await run(client, None, tmp_path)
    assert {r.state for r in second.values()} == {"expired"}
    for result in second.values():
        assert result.error is not None and "video" in result.error.message
        assert not result.ok
    assert batch_status(tmp_path).counts == {"expired": 3}
    assert {row["state"] for row in manifest(tmp_path)} == {"expired"}
    assert not list((tmp_path / "videos").iterdir())


async def test_expired_by_our_clock_without_any_fetch(start_sim: StartSim, tmp_path: Path) -> None:
    """Past created_at + 30 d by our own clock: no request, state expired, clear message."""
    sim = await start_sim(concurrency=3, faults=FaultConfig(rates={"video": {"5000": 1.0}}))
    quick = RetryPolicy(attempts=1, wait_initial=0.01)
    async with make_client(sim, retry=quick) as client:
        await run(client, make_requests(2), tmp_path)
    sim.faults.clear()
    sim.reset_stats()
    later = lambda: time.time() + 31 * DAY  # noqa: E731
    async with make_client(sim, clock=later) as client:
        second = await run(client, None, tmp_path)
    assert {r.state for r in second.values()} == {"expired"}
    assert all("30 days" in r.error.message for r in second.values())  # type: ignore[union-attr]
    assert sim.stats.as_dict()["requests"].get("video", 0) == 0


# -- account errors --------------------------------------------------------------------------


async def test_account_error_stops_submitting_then_rerun_finishes(
    start_sim: StartSim, tmp_path: Path
) -> None:
    faults = FaultConfig(scripts={"create": ("none",) * 3 + ("1102",) * 40})
    sim = await start_sim(concurrency=2, gen_seconds=0.15, faults=faults)
    async with make_client(sim, concurrency=2) as client:
        batch = run_batch(client, make_requests(10), tmp_path)
        results = by_line(await collect(batch))
    stats = sim.stats.as_dict()
    assert batch.stop_reason is not None and "AccountError" in batch.stop_reason, stats
    created = stats["accepted_creates"]
    print(stats["requests"], stats["errors_by_code"], sim.faults.pending("create"))
    assert created == 3
    downloaded = [r for r in results.values() if r.ok]
    assert len(downloaded) == created  # running tasks finished and downloaded
    refused = [r for r in results.values() if r.error and r.error.code == 1102]
    assert refused and all(r.error.request_id for r in refused)  # type: ignore[union-attr]
    # The refusal is on record for `status` and the manifest, not only in the live result.
    rows = {row["line"]: row for row in manifest(tmp_path)}
    for result in refused:
        assert rows[result.line]["error"]["code"] == 1102
    # The account is fixed: a rerun finishes the rest, creating nothing twice.
    sim.faults.clear()
    async with make_client(sim, concurrency=2) as client:
        batch = run_batch(client, make_requests(10), tmp_path)
        again = by_line(await collect(batch))
    stats = sim.stats.as_dict()
    assert batch.stop_reason is None
    assert len(again) == 10 and all(r.ok for r in again.values())
    assert stats["accepted_creates"] == 10
    assert_no_duplicate_creates(stats)
    assert_videos_complete(tmp_path, sha_of(sim), expect=10)


# -- results, manifest and reruns ---------------------------------------------------------------


async def test_results_and_manifest_fields(start_sim: StartSim, tmp_path: Path) -> None:
    sim = await start_sim(concurrency=3)
    requests = make_requests(4)
    requests[2] = requests[2].with_external_id("my-own-id-3")
    async with make_client(sim, concurrency=3) as client:
        batch = run_batch(client, requests, tmp_path)
        assert isinstance(batch, Batch)
        results = by_line(await collect(batch))
    assert sorted(results) == [1, 2, 3, 4]
    assert results[3].external_task_id == "my-own-id-3"
    assert sim.task("my-own-id-3") is not None
    lines = manifest(tmp_path)
    assert [row["line"] for row in lines] == [1, 2, 3, 4]
    for row in lines:
        assert set(row) == {
            "line",
            "external_task_id",
            "task_id",
            "state",
            "files",
            "error",
            "expires_at",
            "job_id",
            "in_jobs_file",
            "units",
        }
        result = results[row["line"]]
        assert row["in_jobs_file"] is True and len(row["job_id"]) == 64
        assert row == result.as_dict()
        assert row["state"] == "downloaded" and row["error"] is None
        assert row["task_id"] == sim.task(row["external_task_id"])["task_id"]  # type: ignore[index]
        (record,) = row["files"]
        assert set(record) == {"path", "bytes", "sha256", "video", "watermarked"}
        assert record["bytes"] == VIDEO_BYTES and len(record["sha256"]) == 64
        assert (tmp_path / record["path"]).stat().st_size == VIDEO_BYTES
        expires = datetime.fromisoformat(row["expires_at"])
        assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)


async def test_rerun_of_finished_batch_does_nothing(start_sim: StartSim, tmp_path: Path) -> None:
    sim = await start_sim(concurrency=3, fail_rate=0.3, seed=5)
    async with make_client(sim) as client:
        first = await run(client, make_requests(6), tmp_path)
    sim.reset_stats()
    async with make_client(sim) as client:
        second = await run(client, make_requests(6), tmp_path)
    assert {n: r.as_dict() for n, r in first.items()} == {n: r.as_dict() for n, r in second.items()}
    stats = sim.stats.as_dict()
    assert stats["requests"] == {}  # nothing created, queried or downloaded again


async def test_account_error_stops_submitters_waiting_for_a_slot(
    start_sim: StartSim, tmp_path: Path
) -> None:
    """Jobs already taken by submitters that wait for a slot are not created after the stop."""
    faults = FaultConfig(scripts={"create": ("none", "none", "1102")})
    sim = await start_sim(concurrency=2, gen_seconds=0.2, faults=faults)
    async with make_client(sim, concurrency=6) as client:
        batch = run_batch(client, make_requests(12), tmp_path)
        results = by_line(await collect(batch))
    stats = sim.stats.as_dict()
    assert batch.stop_reason is not None
    assert stats["accepted_creates"] == 2, stats
    assert sum(r.ok for r in results.values()) == 2
    assert_no_duplicate_creates(stats)
    async with make_client(sim, concurrency=6) as client:
        again = by_line(await collect(run_batch(client, make_requests(12), tmp_path)))
    stats = sim.stats.as_dict()
    assert len(again) == 12 and all(r.ok for r in again.values())
    assert stats["accepted_creates"] == 12
    assert_no_duplicate_creates(stats)


async def test_duplicate_external_ids_in_one_batch(start_sim: StartSim, tmp_path: Path) -> None:
    """Two lines with the same user-given external_task_id: the second is rejected, not merged."""
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [
            job_line(1, external_task_id="same-id"),
            job_line(2, external_task_id="same-id"),
            job_line(3),
        ],
    )
    sim = await start_sim(concurrency=3)
    async with make_client(sim) as client:
        results = await run(client, jobs, tmp_path / "out")
    assert results[1].ok and results[3].ok
    assert results[2].state == "rejected"
    assert "same-id" in results[2].error.message  # type: ignore[union-attr]
    assert "line 1" in results[2].error.message  # type: ignore[union-attr]
    assert sim.stats.as_dict()["creates_by_external_id"]["same-id"] == 1
    rows = {row["line"]: row for row in manifest(tmp_path / "out")}
    assert rows[1]["state"] == "downloaded" and rows[2]["state"] == "rejected"
    async with make_client(sim) as client:  # and a rerun agrees
        again = await run(client, jobs, tmp_path / "out")
    assert {n: r.state for n, r in again.items()} == {n: r.state for n, r in results.items()}


async def test_watermarked_copies(start_sim: StartSim, tmp_path: Path) -> None:
    sim = await start_sim(concurrency=3)
    async with make_client(sim) as client:
        results = await run(client, make_requests(2), tmp_path, watermark=True)
    for row in journal_rows(tmp_path):
        assert row.task is not None
        (video,) = row.task["task_result"]["videos"]
        plain, marked = row.files  # type: ignore[misc]
        assert plain.sha256 == sim.video_sha256(video["id"])
        assert marked.sha256 == sim.video_sha256(video["id"], watermark=True)
        assert marked.path.endswith(".wm.mp4") and marked.watermarked
    assert all(len(r.files) == 2 for r in results.values())


async def test_unexpected_download_error_does_not_hang(
    start_sim: StartSim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    sim = await start_sim(concurrency=3)
    async with make_client(sim) as client:
        real = client.save_video

        async def flaky(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls <= 2:
                raise PermissionError("cannot write here")
            return await real(*args, **kwargs)

        monkeypatch.setattr(client, "save_video", flaky)  # the batch saves through its client
        batch = run_batch(client, make_requests(4), tmp_path, download_concurrency=2)
        results = by_line(await collect(batch, timeout=10))
    bad = [r for r in results.values() if not r.ok]
    assert len(bad) == 2 and all(r.state == "succeeded" for r in bad)
    assert all("cannot write" in r.error.message for r in bad)  # type: ignore[union-attr]
    async with make_client(sim) as client:  # a rerun fetches what is missing
        again = await run(client, make_requests(4), tmp_path)
    assert all(r.ok for r in again.values())


async def test_local_image_files_and_one_that_vanished(
    start_sim: StartSim, tmp_path: Path, png_factory: Any
) -> None:
    keep, gone = png_factory(400, 300, "keep.png"), png_factory(400, 300, "gone.png")
    from kling_async import MultiImageToVideoRequest

    requests = [
        MultiImageToVideoRequest(images=[keep], prompt="a"),
        MultiImageToVideoRequest(images=[gone, keep], prompt="b"),
        MultiImageToVideoRequest(images=[keep, URL_IMAGE], prompt="c"),
    ]
    gone.unlink()  # between building the request and sending it
    sim = await start_sim(concurrency=3)
    async with make_client(sim) as client:
        results = await run(client, requests, tmp_path / "out")
    assert results[1].ok and results[3].ok
    assert results[2].state == "rejected" and "gone.png" in results[2].error.message  # type: ignore[union-attr]
    assert sim.stats.as_dict()["accepted_creates"] == 2


def test_job_file_with_bom_and_crlf(tmp_path: Path) -> None:
    """Windows editors save UTF-8 with a BOM and CRLF line ends: line 1 is still a job."""
    from kling_async._jobs import jobs_from_jsonl

    path = tmp_path / "jobs.jsonl"
    path.write_bytes(("\ufeff" + job_line(1) + "\r\n# note\r\n" + job_line(2) + "\r\n").encode())
    jobs = list(jobs_from_jsonl(path))
    assert [(j.line, j.error) for j in jobs] == [(1, None), (3, None)]
