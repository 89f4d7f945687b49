"""Resume and status at scale: bounded pages, the run ledger, lines known by their text,
downloads that lag behind, results that wait for their reader, a bounded `status`.

Memory itself is measured by `benchmarks/scale.py` (100,000 jobs); these tests pin down the
behaviour that keeps it flat without changing what a batch does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import (
    assert_no_duplicate_creates,
    assert_videos_complete,
    by_line,
    collect,
    job_line,
    journal_rows,
    make_client,
    manifest,
    simulators,
    sql,
    write_jobs,
)
from conftest import make_png

from kling_async import Limits, _batch_feed, _journal_run, batch_status, run_batch
from kling_async import _batch as batch_module
from kling_async._batch_downloads import DownloadStage
from kling_async._jobs import Line
from kling_async._journal import JobState, Journal
from kling_async._journal_run import RunLedger
from kling_async._results import JOURNAL_NAME
from kling_async.simulator import Simulator

StartSim = Callable[..., Awaitable[Simulator]]


@pytest.fixture
async def start_sim() -> AsyncIterator[StartSim]:
    """`await start_sim(**config)`: a running simulator, stopped at teardown."""
    async with simulators() as start:
        yield start


@pytest.fixture
def tiny_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of 3 rows: every multi-page path runs with a handful of jobs."""
    monkeypatch.setattr(_journal_run, "PAGE", 3)


def backlog_meter(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the download backlog after every queued fetch."""
    seen: list[int] = []
    queue = DownloadStage.queue

    def recording(self: DownloadStage, fetch: Any) -> None:
        queue(self, fetch)
        seen.append(self.backlog)

    monkeypatch.setattr(DownloadStage, "queue", recording)
    return seen


def sources(out: Path) -> int:
    journal = Journal(out / JOURNAL_NAME)
    try:
        return int(journal._db.execute("SELECT COUNT(*) FROM sources").fetchone()[0])
    finally:
        journal.close_sync()


# -- lines known by their text ----------------------------------------------------------------


async def test_rerun_knows_url_lines_by_their_text_without_parsing(
    start_sim: StartSim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_pages: None
) -> None:
    sim = await start_sim(concurrency=4)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job_line(i) for i in range(10)] + [job_line(3)])
    out = tmp_path / "out"
    async with make_client(sim, concurrency=4) as client:
        first = by_line(await collect(run_batch(client, jobs, out)))
    assert len(first) == 11 and all(r.ok for r in first.values())
    assert sources(out) == 10  # the duplicate line shares its text (and content) with line 4
    parsed: list[int] = []
    parse = Line.parse

    def counting(self: Line) -> Any:
        parsed.append(self.line)
        return parse(self)

    monkeypatch.setattr(Line, "parse", counting)
    sim.reset_stats()
    # Reordered, one line edited: only the edited line is parsed, only it is created.
    lines = [job_line(i) for i in reversed(range(10))] + [job_line(3), job_line(99)]
    lines[0] = job_line(9, prompt="an edited prompt")
    write_jobs(jobs, lines)
    async with make_client(sim, concurrency=4) as client:
        second = await collect(run_batch(client, jobs, out))
    assert parsed == [1, 12]  # the edited line and the new one; the rest known by text
    assert sim.stats.as_dict()["accepted_creates"] == 2
    by_id = {r.job_id: r for r in second}
    assert {r.line for r in second if r.in_jobs_file} == set(range(1, 13))
    for old in first.values():
        again = by_id[old.job_id]
        assert again.external_task_id == old.external_task_id and again.files == old.files
    assert [r.in_jobs_file for r in second].count(False) == 1  # line 10's old job (prompt 9)
    assert_no_duplicate_creates(sim.stats.as_dict())


async def test_same_text_new_image_bytes_is_a_new_job(start_sim: StartSim, tmp_path: Path) -> None:
    """A line with a local file is never known by its text: the file's bytes may change."""
    sim = await start_sim(concurrency=2)
    image = tmp_path / "a.png"
    image.write_bytes(make_png(320, 320))
    jobs = write_jobs(tmp_path / "jobs.jsonl", [json.dumps({"images": ["a.png"], "prompt": "p"})])
    out = tmp_path / "out"
    async with make_client(sim) as client:
        (first,) = await collect(run_batch(client, jobs, out))
    assert first.ok and sources(out) == 0
    image.write_bytes(make_png(330, 330))  # same name, same line, other bytes
    async with make_client(sim) as client:
        second = await collect(run_batch(client, jobs, out))
    assert sim.stats.as_dict()["accepted_creates"] == 2
    new = [r for r in second if r.in_jobs_file]
    assert len(new) == 1 and new[0].ok and new[0].job_id != first.job_id


# -- downloads that lag behind ----------------------------------------------------------------


async def test_finished_tasks_wait_in_the_journal_while_downloads_lag(
    start_sim: StartSim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_pages: None
) -> None:
    monkeypatch.setattr(_batch_feed, "FEED", 2)
    backlog = backlog_meter(monkeypatch)
    feeds: list[int] = []
    feed = _batch_feed.Feeder._feed

    def counting(self: Any) -> None:
        feeds.append(1)
        feed(self)

    monkeypatch.setattr(_batch_feed.Feeder, "_feed", counting)
    sim = await start_sim(concurrency=10, gen_seconds=0.05)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job_line(i) for i in range(24)])
    limits = Limits(concurrency=10, rps=1000.0, download_concurrency=1)
    async with make_client(sim, limits=limits) as client:
        results = by_line(await collect(run_batch(client, jobs, tmp_path), timeout=60))
    stats = sim.stats.as_dict()
    assert len(results) == 24 and all(r.ok for r in results.values())
    assert max(backlog) <= 2  # never more than FEED videos queued or downloading
    assert len(feeds) > 1  # tasks finished while downloads waited: left to the journal
    assert stats["requests"]["video"] == 24  # each video fetched once
    assert_no_duplicate_creates(stats)
    assert_videos_complete(tmp_path, sim.video_sha256, expect=24)


async def test_resume_feeds_earlier_finished_videos_a_few_at_a_time(
    start_sim: StartSim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_pages: None
) -> None:
    sim = await start_sim(concurrency=6)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job_line(i) for i in range(14)])
    async with make_client(sim, concurrency=6) as client:
        await collect(run_batch(client, jobs, tmp_path))
    # As if every task had finished but no video reached the disk, with expiries out of order.
    for path in (tmp_path / "videos").iterdir():
        path.unlink()
    sql(tmp_path, "UPDATE jobs SET state = 'succeeded', files = NULL")
    sql(tmp_path, "UPDATE jobs SET expires_at = 2e9 - line")
    sql(tmp_path, "UPDATE jobs SET expires_at = NULL WHERE line = 7")
    monkeypatch.setattr(_batch_feed, "FEED", 3)
    backlog = backlog_meter(monkeypatch)
    line_of = {row.key: row.line for row in journal_rows(tmp_path)}
    order: list[int | None] = []
    queue = DownloadStage.queue

    def recording(self: DownloadStage, fetch: Any) -> None:
        order.append(line_of[fetch.key])
        queue(self, fetch)

    monkeypatch.setattr(DownloadStage, "queue", recording)
    sim.reset_stats()
    limits = Limits(concurrency=6, rps=1000.0, download_concurrency=1)
    async with make_client(sim, limits=limits) as client:
        results = await collect(run_batch(client, None, tmp_path))
    assert len(results) == 14 and all(r.ok for r in results)
    assert max(backlog) <= 3
    assert order == [7, *range(14, 7, -1), *range(6, 0, -1)]  # unknown expiry, then soonest
    # A new client does not know Kling's clock yet: the first stored answers are asked again
    # (one list page); once it does, the rest ended minutes ago and their links are used.
    assert sim.stats.as_dict()["requests"] == {"list": 1, "video": 14}
    assert_videos_complete(tmp_path, sim.video_sha256, expect=14)


# -- results that wait for their reader -------------------------------------------------------


async def test_a_rerun_waits_for_a_slow_reader_of_results(
    start_sim: StartSim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = await start_sim(concurrency=8)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job_line(i) for i in range(60)])
    async with make_client(sim, concurrency=8) as client:
        await collect(run_batch(client, jobs, tmp_path))
    monkeypatch.setattr(batch_module, "_RESULTS_HIGH", 8)
    monkeypatch.setattr(batch_module, "_RESULTS_LOW", 2)
    waiting: list[int] = []
    async with make_client(sim, concurrency=8) as client:
        batch = run_batch(client, jobs, tmp_path)
        lines = []
        async for result in batch:
            waiting.append(batch._results.qsize())
            lines.append(result.line)
            await asyncio.sleep(0.001)  # a reader slower than the journal
    assert sorted(lines) == list(range(1, 61))  # every job once, in file order
    assert lines == list(range(1, 61))
    assert max(waiting) <= 8


# -- the ledger's pages -----------------------------------------------------------------------


def fill(out: Path, rows: list[tuple[str, int | None, str, float | None]]) -> Path:
    """A journal with these (key, line, state, expires_at) rows."""
    out.mkdir(exist_ok=True)
    journal = Journal(out / JOURNAL_NAME)
    try:
        for key, line, state, expires in rows:
            journal._db.execute(
                "INSERT INTO jobs (key, line, external_id, state, expires_at, updated)"
                " VALUES (?, ?, ?, ?, ?, 0)",
                (key, line, f"ext-{key}", state, expires),
            )
    finally:
        journal.close_sync()
    return out / JOURNAL_NAME


def test_pages_survive_rows_changing_between_them(tmp_path: Path, tiny_pages: None) -> None:
    path = fill(tmp_path, [(f"k{i:02}", i, "submitted", None) for i in range(1, 11)])
    ledger = RunLedger(path)
    try:
        seen: list[str] = []
        for page in ledger.pages(JobState.SUBMITTED):
            assert len(page) <= 3
            seen += [row.key for row in page]
            # Meanwhile the batch moves rows: one already read, one not yet read.
            ledger._db.execute("UPDATE jobs SET state = 'succeeded' WHERE key = ?", (seen[0],))
        assert seen == [f"k{i:02}" for i in range(1, 11)]
    finally:
        ledger.close()


def test_by_expiry_and_unseen_orders(tmp_path: Path, tiny_pages: None) -> None:
    path = fill(
        tmp_path,
        [
            ("a", 5, "succeeded", 30.0),
            ("b", 1, "succeeded", None),
            ("c", None, "succeeded", 10.0),
            ("d", 3, "succeeded", 20.0),
            ("e", 2, "downloaded", 5.0),
            ("f", 4, "succeeded", 10.0),
            ("g", None, "failed", None),
        ],
    )
    ledger = RunLedger(path)
    try:
        expiry = [row.key for page in ledger.by_expiry("succeeded") for row in page]
        assert expiry == ["b", "c", "f", "d", "a"]
        assert all(row.task is None for page in ledger.by_expiry("succeeded") for row in page)
        ledger.see("d", 1)
        ledger.report("f")
        unseen = [row.key for page in ledger.unseen() for row in page]
        assert unseen == ["b", "e", "a", "c", "g"]  # by line, then no longer in the file
    finally:
        ledger.close()


def test_finish_stores_lines_drops_and_renames_in_one_go(tmp_path: Path) -> None:
    path = fill(
        tmp_path,
        [
            ("kept", 1, "downloaded", None),
            ("moved", 2, "downloaded", None),
            ("gone", 3, "downloaded", None),
            ("never-sent", 4, "rejected", None),
            ("v1:5", 5, "downloaded", None),
            ("unknown-create", 6, "submitting", None),
        ],
    )
    ledger = RunLedger(path)
    try:
        assert ledger.claim("ext-moved", "other") == "moved"  # the journal's job owns it
        assert ledger.claim("fresh", "new") == "new" and ledger.claim("fresh", "x") == "new"
        assert [ledger.occurrence("c") for _ in range(3)] == [0, 1, 2]
        ledger.see("kept", 1)
        ledger.see("moved", 7)
        ledger.see("v1:5", 2)
        ledger.rename("v1:5", "identity-of-5")
        ledger.set_uncreated("unknown-create", True)
        ledger.remember("digest", "content")
        ledger.finish(whole_file=True)
    finally:
        ledger.close()
    rows = {row.key: row.line for row in journal_rows(tmp_path)}
    assert rows == {"kept": 1, "moved": 7, "gone": None, "identity-of-5": 2}
    ledger = RunLedger(path)
    try:
        assert ledger.content("digest") == "content"  # kept for the next run
    finally:
        ledger.close()


# -- status -----------------------------------------------------------------------------------


def test_status_keeps_a_bounded_number_of_problems_and_counts_them_all(
    tmp_path: Path,
) -> None:
    fill(tmp_path, [(f"k{i}", i, "failed", None) for i in range(1, 8)])
    sql(tmp_path, 'UPDATE jobs SET error = \'{"message": "no"}\'')
    sql(
        tmp_path,
        "UPDATE jobs SET state = 'downloaded', files = ? WHERE line > 4",
        json.dumps([{"path": "videos/x.mp4", "bytes": 3, "sha256": "00"}]),
    )
    status = batch_status(tmp_path, limit=2)
    assert status.counts == {"failed": 4, "downloaded": 3}
    assert [p.line for p in status.problems] == [1, 2] and status.problem_count == 7
    assert [b.result.line for b in status.files_bad] == [5, 6]
    assert status.files_bad_count == 3 and status.files_checked == 3
    full = batch_status(tmp_path)
    assert len(full.problems) == 7 and len(full.files_bad) == 3


async def test_manifest_lists_every_job_by_line(start_sim: StartSim, tmp_path: Path) -> None:
    sim = await start_sim(concurrency=4)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job_line(i) for i in range(9)])
    async with make_client(sim, concurrency=4) as client:
        await collect(run_batch(client, jobs, tmp_path / "out"))
    rows = manifest(tmp_path / "out")
    assert [row["line"] for row in rows] == list(range(1, 10))
    assert all(row["state"] == "downloaded" and row["files"] for row in rows)
