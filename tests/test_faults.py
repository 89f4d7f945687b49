"""The issue's fault list, each against the simulator: the batch still finishes correctly.

"Correctly" everywhere means: every job ends as a verified video on disk (sha256 equal to what
the simulator served, no `.part` left) or as a clear recorded error, and no external_task_id is
ever created twice. Fault seeds are fixed, so every run injects the same faults.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import fault_helpers
import pytest
from batch_helpers import (
    FAST_RETRY,
    SimProcess,
    assert_no_duplicate_creates,
    assert_videos_complete,
    by_line,
    collect,
    job_line,
    journal_rows,
    make_client,
    make_requests,
    manifest,
    run_cli,
    write_jobs,
)
from fault_helpers import StartSim, not_ok, run, tally

from kling_async import Event, RetryPolicy, Timeouts, VideoExpiredError, run_batch
from kling_async.simulator import FaultConfig, VideoContent

start_sim = fault_helpers.start_sim  # the fixture, shared with the other fault tests

KINDS = ("create", "query", "list", "video")
DAY = 86_400.0


def check_all_done(sim: Any, out: Path, results: dict[int, Any], n: int) -> dict[str, Any]:
    """Every one of `n` jobs downloaded and verified, each created exactly once."""
    stats = sim.stats.as_dict()
    assert len(results) == n
    assert not not_ok(results), not_ok(results)
    assert_no_duplicate_creates(stats)
    assert stats["accepted_creates"] == n
    assert assert_videos_complete(out, sim.video_sha256, expect=n) == n
    return stats


# -- 5xx ----------------------------------------------------------------------------------------


async def test_5xx_bursts_on_every_route(start_sim: StartSim, tmp_path: Path) -> None:
    burst = ("5000", "5001", "5002", "5000")  # shorter than the retry budget (6 attempts)
    faults = FaultConfig(scripts={kind: burst for kind in KINDS})
    sim = await start_sim(concurrency=4, faults=faults)
    async with make_client(sim, concurrency=4) as client:
        results = await run(client, make_requests(12), tmp_path)
    stats = check_all_done(sim, tmp_path, results, 12)
    for kind in KINDS:
        assert sim.faults.pending(kind) == 0, kind  # every burst was met and survived
    assert stats["faults_injected"]["5000"] == 8 and stats["faults_injected"]["5002"] == 4


async def test_steady_10_percent_5xx_on_every_route(start_sim: StartSim, tmp_path: Path) -> None:
    rates = {"5000": 0.034, "5001": 0.033, "5002": 0.033}
    faults = FaultConfig(rates={kind: rates for kind in KINDS}, seed=5)
    sim = await start_sim(concurrency=5, faults=faults)
    async with make_client(sim, concurrency=5) as client:
        results = await run(client, make_requests(30), tmp_path)
    stats = check_all_done(sim, tmp_path, results, 30)
    injected = sum(stats["faults_injected"].values())
    assert injected >= 5, stats["faults_injected"]


async def test_5xx_burst_longer_than_retry_budget_is_recorded_then_rerun(
    start_sim: StartSim, tmp_path: Path
) -> None:
    """A create that fails past every retry is a recorded error that a rerun retries (it was
    never billed), not a job rejected for good."""
    faults = FaultConfig(scripts={"create": ("5001",) * 12})
    sim = await start_sim(concurrency=3, faults=faults)
    quick = RetryPolicy(attempts=3, wait_initial=0.01, wait_max=0.02, timeout=5.0)
    requests = make_requests(6)
    async with make_client(sim, concurrency=1, retry=quick) as client:
        first = await run(client, requests, tmp_path)
    failed = [r for r in first.values() if not r.ok]
    assert failed, first
    for result in failed:
        assert result.error is not None and result.error.code == 5001
        assert result.error.request_id
    assert sim.faults.pending("create") == 0
    async with make_client(sim, concurrency=3) as client:
        again = await run(client, requests, tmp_path)
    check_all_done(sim, tmp_path, again, 6)


# -- connection resets, stalls -----------------------------------------------------------------


async def test_connection_resets_on_every_route(start_sim: StartSim, tmp_path: Path) -> None:
    # aiohttp re-sends an idempotent GET once after a disconnect: script GET resets in pairs.
    scripts = {
        "create": ("reset", "none", "reset"),
        "query": ("reset", "reset"),
        "list": ("reset", "reset"),
        "video": ("reset", "reset", "none", "reset", "reset"),
    }
    rates = {kind: {"reset": 0.08} for kind in KINDS}
    sim = await start_sim(concurrency=4, faults=FaultConfig(scripts=scripts, rates=rates, seed=2))
    async with make_client(sim, concurrency=4) as client:
        results = await run(client, make_requests(16), tmp_path)
    stats = check_all_done(sim, tmp_path, results, 16)
    assert stats["faults_injected"]["reset"] >= 12


async def test_stalled_server_hits_our_timeouts(start_sim: StartSim, tmp_path: Path) -> None:
    """A server that accepts and never answers costs a timeout per request, never a hang."""
    scripts = {
        "create": ("stall", "latency:0.8"),  # the second is created after we gave up on it
        "query": ("stall",),
        "list": ("stall", "stall"),
        "video": ("stall", "none", "stall"),
    }
    faults = FaultConfig(scripts=scripts, stall_max_seconds=60.0)
    sim = await start_sim(concurrency=3, faults=faults)
    short = Timeouts(connect=1.0, read=0.3, total=0.5, download_read=0.3)
    started = asyncio.get_running_loop().time()
    async with make_client(sim, concurrency=3, timeouts=short) as client:
        results = await run(client, make_requests(8), tmp_path, timeout=15)
    assert asyncio.get_running_loop().time() - started < 15  # far below one stall (60 s)
    stats = check_all_done(sim, tmp_path, results, 8)
    assert stats["faults_injected"]["stall"] == 6
    for kind in KINDS:
        assert sim.faults.pending(kind) == 0, kind


# -- lost create answers --------------------------------------------------------------------


async def test_create_answers_lost_after_creation_5_percent(
    start_sim: StartSim, tmp_path: Path
) -> None:
    faults = FaultConfig(
        scripts={"create": ("lost", "none", "lost")},
        rates={"create": {"lost": 0.05}, "query": {"5000": 0.05}},
        seed=9,
    )
    sim = await start_sim(concurrency=5, faults=faults)
    async with make_client(sim, concurrency=5) as client:
        results = await run(client, make_requests(40), tmp_path)
    stats = check_all_done(sim, tmp_path, results, 40)
    assert stats["faults_injected"]["lost"] >= 3


# -- 1302 / 1303 storms, the cap moving under us ---------------------------------------------


async def test_1302_storm(start_sim: StartSim, tmp_path: Path) -> None:
    """An account that allows 4 requests/s: the adaptive rate learns it from the 1302s (none of
    which ends a job) and every job is done."""
    sim = await start_sim(concurrency=4, rate_limit=4)
    async with make_client(sim, concurrency=4, retry=replace(FAST_RETRY, attempts=None)) as client:
        results = await run(client, make_requests(16), tmp_path)
        assert client.request_rate.state().rate.cuts >= 1
    stats = check_all_done(sim, tmp_path, results, 16)
    assert stats["errors_by_code"][1302] >= 1


async def test_1302_past_the_retry_budget_is_retried_by_a_rerun(
    start_sim: StartSim, tmp_path: Path
) -> None:
    """Rate limiting is transient: a create refused with 1302 past every retry is on record
    and a rerun creates it, instead of it being rejected for good."""
    sim = await start_sim(concurrency=3, faults=FaultConfig(scripts={"create": ("1302",) * 6}))
    quick = RetryPolicy(attempts=3, wait_initial=0.01, wait_max=0.02, timeout=5.0)
    requests = make_requests(4)
    async with make_client(sim, concurrency=1, retry=quick) as client:
        first = await run(client, requests, tmp_path)
    refused = [r for r in first.values() if not r.ok]
    assert refused and all(r.error and r.error.code == 1302 for r in refused)
    assert all(r.state != "rejected" for r in refused), refused
    async with make_client(sim, concurrency=3) as client:
        again = await run(client, requests, tmp_path)
    check_all_done(sim, tmp_path, again, 4)


async def test_1303_storm(start_sim: StartSim, tmp_path: Path) -> None:
    """Many creates refused for concurrency in a row: back off, shrink, grow back, finish."""
    sim = await start_sim(concurrency=4, faults=FaultConfig(scripts={"create": ("1303",) * 15}))
    async with make_client(sim, probe_interval=0.05, concurrency=4) as client:
        results = await run(client, make_requests(16), tmp_path)
        rejections = client.stats.rejections
    stats = check_all_done(sim, tmp_path, results, 16)
    assert stats["rejected_concurrency"] >= 15 and rejections >= 15
    assert stats["peak_running"] <= 4


async def test_cap_lowered_mid_run_and_slots_taken_then_released(
    start_sim: StartSim, tmp_path: Path
) -> None:
    """The account's cap drops, then someone else takes every slot, then lets them go."""
    sim = await start_sim(concurrency=4, gen_seconds=0.1)
    submitted = 0
    loop = asyncio.get_running_loop()
    running_seen: list[int] = []

    def on_event(event: Event) -> None:
        nonlocal submitted
        if event.kind != "task_submitted":
            return
        submitted += 1
        running_seen.append(sim.stats.running + sim.held_slots)
        if submitted == 6:
            sim.concurrency = 2
        elif submitted == 12:
            sim.held_slots = 2  # our share is zero now

            def release() -> None:
                sim.held_slots = 0
                sim.concurrency = 4

            loop.call_later(0.4, release)

    async with make_client(sim, probe_interval=0.05, concurrency=4, event_hook=on_event) as client:
        results = await run(client, make_requests(24), tmp_path)
        limit = client.slot_limit
    stats = check_all_done(sim, tmp_path, results, 24)
    # Refused, backed off, never hammering: a few dozen 1303s at most for 24 jobs.
    assert 1 <= stats["rejected_concurrency"] <= 60
    assert max(running_seen) <= 4
    assert limit >= 3  # grew back after the slots were released


# -- video transfers ---------------------------------------------------------------------------


async def test_truncated_transfers_10_percent_resume_with_range(
    start_sim: StartSim, tmp_path: Path
) -> None:
    size = 200_000
    faults = FaultConfig(rates={"video": {"truncate": 0.1}}, seed=3)
    sim = await start_sim(concurrency=5, video_bytes=size, faults=faults)
    async with make_client(sim, concurrency=5) as client:
        results = await run(client, make_requests(30), tmp_path)
    stats = check_all_done(sim, tmp_path, results, 30)
    truncated = stats["faults_injected"]["truncate"]
    assert truncated >= 2
    assert stats["requests"]["video"] == 30 + truncated
    assert stats["video_bytes_served"] == 30 * size  # nothing received was fetched again


async def test_video_urls_answering_403_404_are_refreshed(
    start_sim: StartSim, tmp_path: Path
) -> None:
    script = ("403", "none", "404", "none", "none", "403", "none", "404")
    sim = await start_sim(concurrency=3, faults=FaultConfig(scripts={"video": script}))
    async with make_client(sim, concurrency=3) as client:
        results = await run(client, make_requests(6), tmp_path, download_concurrency=1)
    stats = check_all_done(sim, tmp_path, results, 6)
    assert stats["requests"]["video"] == 6 + 4
    assert stats["requests"]["query"] >= 4  # a fresh task query for each refused URL


async def test_signed_video_urls_going_stale_mid_run(start_sim: StartSim, tmp_path: Path) -> None:
    """Links expire (url_ttl) between the status sweep and the download: re-queried."""
    sim = await start_sim(concurrency=3, url_ttl=5.0)
    stale = 0

    def on_event(event: Event) -> None:
        nonlocal stale
        if event.kind == "task_finished" and stale < 3:
            stale += 1
            sim.advance(6)  # the URL just reported is past its exp

    async with make_client(sim, concurrency=3, event_hook=on_event) as client:
        results = await run(client, make_requests(6), tmp_path, download_concurrency=1)
    stats = check_all_done(sim, tmp_path, results, 6)
    assert stats["requests"]["video"] > 6


async def test_video_gone_for_good_is_a_clear_error_then_rerun(
    start_sim: StartSim, tmp_path: Path
) -> None:
    sim = await start_sim(concurrency=3, faults=FaultConfig(rates={"video": {"404": 1.0}}))
    requests = make_requests(3)
    async with make_client(sim, concurrency=3) as client:
        first = await run(client, requests, tmp_path)
    assert {r.state for r in first.values()} == {"succeeded"}
    for result in first.values():
        assert result.error is not None and "404" in result.error.message
    assert not list((tmp_path / "videos").glob("*.mp4"))
    sim.faults.clear()
    async with make_client(sim, concurrency=3) as client:
        again = await run(client, requests, tmp_path)
    check_all_done(sim, tmp_path, again, 3)


async def test_a_refused_video_the_requery_shows_past_expiry_is_expired(
    start_sim: StartSim, tmp_path: Path
) -> None:
    """Retention passes between the task's end and its download. The CDN's 404 is the first
    answer from the new time (outvoted by the earlier ones); the re-query's answers settle the
    server's clock, and by it the video expired: said so, not merely "no longer listed"."""
    sim = await start_sim(concurrency=1)
    async with make_client(sim, concurrency=1) as client:
        [request] = make_requests(1)
        task = await client.wait(await client.submit(request), timeout=10)
        assert task.videos and not client.server_clock.past_expiry(task.expires_at)
        sim.advance(31 * DAY)
        with pytest.raises(
            VideoExpiredError, match=r"video expired on .* \(Kling keeps videos 30 days\)$"
        ):
            await client.save_video(task, 0, tmp_path / "videos" / "video.mp4")
        assert client.server_clock.past_expiry(task.expires_at)
    assert not list((tmp_path / "videos").glob("*"))  # no .part left behind
    assert sim.stats.as_dict()["requests"]["video"] == 1  # the fresh query ended it, not a GET


async def test_retention_passes_mid_batch(start_sim: StartSim, tmp_path: Path) -> None:
    """Kling's 30 days run out while the batch works: the rest are `expired`, never a crash."""
    sim = await start_sim(concurrency=2, gen_seconds=0.1)
    jumped = False

    def on_event(event: Event) -> None:
        nonlocal jumped
        if event.kind == "download_finished" and not jumped:
            jumped = True
            sim.advance(31 * DAY)

    async with make_client(sim, concurrency=2, event_hook=on_event) as client:
        results = await run(client, make_requests(6), tmp_path)
    states = {r.state for r in results.values()}
    assert states <= {"downloaded", "expired"}, [(r.state, r.error) for r in results.values()]
    assert "expired" in states and "downloaded" in states
    for result in results.values():
        if result.state == "expired":
            assert result.error is not None
            assert "retention" in result.error.message or "expired" in result.error.message
    assert {row["state"] for row in manifest(tmp_path)} == states
    assert not list((tmp_path / "videos").glob("*.part"))
    stats = sim.stats.as_dict()
    assert_no_duplicate_creates(stats)
    downloaded = sum(r.ok for r in results.values())
    assert assert_videos_complete(tmp_path, sim.video_sha256, expect=downloaded) == downloaded


# -- account errors ---------------------------------------------------------------------------


async def test_pack_depleted_mid_batch(start_sim: StartSim, tmp_path: Path) -> None:
    """1102 after a few creates: no more submissions, running tasks finish and download."""
    faults = FaultConfig(scripts={"create": ("none",) * 4 + ("1102",) * 30})
    sim = await start_sim(concurrency=4, gen_seconds=0.2, faults=faults)
    requests = make_requests(12)
    async with make_client(sim, concurrency=4) as client:
        batch = run_batch(client, requests, tmp_path)
        results = {r.line: r async for r in batch}
    stats = sim.stats.as_dict()
    assert batch.stop_reason is not None and "AccountError" in batch.stop_reason
    assert stats["accepted_creates"] == 4
    assert 1 <= stats["errors_by_code"][1102] <= 4  # at most the creates already sent
    assert sum(r.ok for r in results.values()) == 4
    for row in journal_rows(tmp_path):  # jobs never taken have no row: a rerun sends them
        if row.state != "downloaded":
            assert row.state == "submitting" and row.error, row
            assert row.error.code == 1102 or "AccountError" in row.error.message
    sim.faults.clear()
    async with make_client(sim, concurrency=4) as client:
        again = await run(client, requests, tmp_path)
    check_all_done(sim, tmp_path, again, 12)


async def test_account_error_while_polling(start_sim: StartSim, tmp_path: Path) -> None:
    """An account error answering a status sweep: everything in flight is on record, the batch
    ends, and a rerun adopts the running tasks (never creating them again)."""
    sim = await start_sim(concurrency=4, gen_seconds=0.3)
    requests = make_requests(8)
    scripted = False

    def on_event(event: Event) -> None:
        nonlocal scripted  # once: the four creates may answer before the first event
        if event.kind == "task_submitted" and sim.stats.accepted_creates == 4 and not scripted:
            scripted = True
            sim.faults.script("list", "1102")

    async with make_client(sim, concurrency=4, event_hook=on_event) as client:
        batch = run_batch(client, requests, tmp_path)
        results = by_line(await collect(batch, 10))
    assert batch.stop_reason is not None and "AccountError" in batch.stop_reason
    assert sim.stats.as_dict()["errors_by_code"][1102] == 1
    for result in results.values():
        assert result.ok or (result.error and result.error.code == 1102), result
    for row in journal_rows(tmp_path):
        assert row.state == "downloaded" or row.error, row
    sim.faults.clear()
    async with make_client(sim, concurrency=4) as client:
        again = await run(client, requests, tmp_path)
    check_all_done(sim, tmp_path, again, 8)


@pytest.mark.slow
def test_pack_depleted_cli_exit_code_and_message(tmp_path: Path) -> None:
    script = "create:" + ",".join(["none"] * 3 + ["1102"] * 20)
    args = ["--concurrency", "3", "--gen-seconds", "0.2", "--video-bytes", "40000"]
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job_line(i) for i in range(8)])
    out = tmp_path / "out"
    run_args = ["run", str(jobs), "--out", str(out), "--concurrency", "3"]
    run_args += ["--poll-interval", "0.05", "--no-progress"]
    with SimProcess(*args, "--fault-script", script) as sim:
        first = run_cli(run_args, sim.env())
        assert first.returncode == 1, first.stderr
        assert "batch stopped submitting: AccountError" in first.stderr
        assert "1102" in first.stdout and "resource pack depleted" in first.stdout
        assert "Traceback" not in first.stderr
        assert first.stdout.count(": downloaded videos/") == 3
        sim.control(clear_faults=True)
        second = run_cli(run_args, sim.env())
        assert second.returncode == 0, second.stderr
        stats = tally(sim.get("/__sim/stats")["stats"])
    assert_no_duplicate_creates(stats)
    assert stats["accepted_creates"] == 8
    assert_videos_complete(out, VideoContent(40_000).sha256, expect=8)


# -- answers that are not answers --------------------------------------------------------------


async def test_garbage_and_bad_envelopes(start_sim: StartSim, tmp_path: Path) -> None:
    rates: dict[str, dict[str, float]] = {
        kind: {"garbage": 0.05, "bad_envelope": 0.05} for kind in ("create", "query", "list")
    }
    rates["video"] = {"garbage": 0.1}
    scripts = {"create": ("garbage", "bad_envelope"), "video": ("garbage",)}
    sim = await start_sim(concurrency=4, faults=FaultConfig(rates=rates, scripts=scripts, seed=8))
    async with make_client(sim, concurrency=4) as client:
        results = await run(client, make_requests(16), tmp_path)
    stats = check_all_done(sim, tmp_path, results, 16)
    assert stats["faults_injected"]["garbage"] >= 2 and stats["faults_injected"]["bad_envelope"]


async def test_everything_at_once(start_sim: StartSim, tmp_path: Path) -> None:
    """A bad day: every fault kind at a low rate on every route it applies to."""
    api = {"5000": 0.03, "5002": 0.02, "reset": 0.02, "1302": 0.03, "garbage": 0.01}
    rates = {
        "create": {**api, "lost": 0.05, "1303": 0.03},
        "query": dict(api),
        "list": dict(api),
        "video": {"5001": 0.03, "reset": 0.03, "truncate": 0.08, "403": 0.03},
    }
    sim = await start_sim(concurrency=4, video_bytes=120_000, faults=FaultConfig(rates=rates))
    retry = RetryPolicy(
        attempts=8, wait_initial=0.01, wait_max=0.05, concurrency_wait_initial=0.05, timeout=20
    )
    async with make_client(sim, probe_interval=0.05, concurrency=4, retry=retry) as client:
        results = await run(client, make_requests(30), tmp_path, timeout=30)
    check_all_done(sim, tmp_path, results, 30)
