"""The SQLite journal: durable per-job state, group commit, and what `status` reads from it."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kling_async import batch_status
from kling_async._journal import JobState, Journal
from kling_async._records import FileRecord, JobError
from kling_async._results import JOURNAL_NAME, write_manifest


def reopen(path: Path) -> Journal:
    return Journal(path)


async def test_lifecycle_of_a_row(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = Journal(path)
    journal.set_meta("batch_id", "abc")
    await journal.intent("k1", line=1, external_id="ext-1", watermark=False)
    row = journal.get("k1")
    assert row is not None and row.state == JobState.SUBMITTING and row.task is None
    task = {"task_id": "T1", "task_status": "submitted"}
    await journal.update("k1", JobState.SUBMITTED, task=task, expires_at=123.0)
    await journal.update("k1", JobState.SUCCEEDED, error=JobError("download failed"))
    row = journal.get("k1")
    assert row is not None
    assert (row.state, row.task_id, row.task, row.expires_at) == ("succeeded", "T1", task, 123.0)
    assert row.error == JobError("download failed")
    files = (FileRecord("videos/a.mp4", 3, "00"),)
    await journal.update("k1", JobState.DOWNLOADED, files=files)
    await journal.aclose()
    again = reopen(path)
    try:
        row = again.get("k1")
        assert row is not None and row.state == "downloaded" and row.files == files
        assert row.error is None  # a later update without error clears it
        assert row.task == task  # None leaves a column as it was
        assert again.meta("batch_id") == "abc" and again.meta("nope") is None
        assert again.counts() == {"downloaded": 1}
        assert again.get("k2") is None
    finally:
        again.close_sync()


async def test_intent_again_keeps_what_is_known(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    await journal.intent("k1", line=1, external_id="ext-1", watermark=False)
    await journal.update("k1", JobState.SUBMITTING, error=JobError("lost"))
    await journal.intent("k1", line=1, external_id="ext-1", watermark=False)
    row = journal.get("k1")
    assert row is not None and row.state == "submitting"
    await journal.aclose()


async def test_group_commit_many_writers(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = Journal(path)
    await asyncio.gather(
        *(
            journal.intent(f"k{i}", line=i, external_id=f"ext-{i}", watermark=False)
            for i in range(1, 401)
        )
    )
    await asyncio.gather(*(journal.update(f"k{i}", JobState.SUBMITTED) for i in range(1, 401)))
    assert journal.commits < 800  # writes waiting together share one transaction
    await journal.aclose()
    again = reopen(path)
    try:
        assert again.counts() == {"submitted": 400}
        assert [r.line for r in again.rows()] == list(range(1, 401))
        assert len(list(again.rows("submitted"))) == 400
    finally:
        again.close_sync()


async def test_failed_write_reaches_its_waiter_and_the_writer_survives(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    with pytest.raises(sqlite3.IntegrityError):
        await journal.record("k1", line=1, external_id=None, state="rejected", error=JobError(""))  # type: ignore[arg-type]
    await journal.intent(
        "k2", line=2, external_id="ext-2", watermark=False
    )  # the writer thread is still alive
    assert journal.get("k1") is None and journal.get("k2") is not None
    await journal.aclose()


async def test_record_does_not_delete_another_row(tmp_path: Path) -> None:
    """A rejected job reusing another job's external id must not erase that job's row."""
    journal = Journal(tmp_path / "j.sqlite3")
    await journal.intent("k1", line=1, external_id="same", watermark=False)
    await journal.update("k1", JobState.SUBMITTED, task={"task_id": "T"})
    await journal.record(
        "k2", line=2, external_id="same", state=JobState.REJECTED, error=JobError("dup")
    )
    await journal.record(
        "k2", line=2, external_id="same", state=JobState.REJECTED, error=JobError("dup again")
    )
    one, two = journal.get("k1"), journal.get("k2")
    assert one is not None and one.state == "submitted" and one.task_id == "T"
    assert two is not None and two.state == "rejected" and two.error == JobError("dup again")
    await journal.aclose()


async def test_cancelled_writer_still_commits(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = Journal(path)
    write = asyncio.ensure_future(journal.intent("k1", line=1, external_id="ext", watermark=False))
    await asyncio.sleep(0)
    write.cancel()
    with pytest.raises(asyncio.CancelledError):
        await write
    await journal.aclose()  # queued writes finish before the file closes
    again = reopen(path)
    try:
        assert again.get("k1") is not None
    finally:
        again.close_sync()


async def test_closed_journal_refuses_writes(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    await journal.intent("k1", line=1, external_id="ext", watermark=False)
    await journal.aclose()
    threads = threading.active_count()
    with pytest.raises(RuntimeError, match="closed"):
        await journal.update("k1", JobState.SUBMITTED)
    assert threading.active_count() == threads  # no writer thread started on a closed file


@pytest.mark.slow
def test_awaited_write_survives_kill_9(tmp_path: Path) -> None:
    """Once `await journal.intent(...)` returns, the row is on disk: SIGKILL cannot lose it."""
    path = tmp_path / "j.sqlite3"
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal
        from pathlib import Path
        from kling_async._journal import Journal

        async def main():
            journal = Journal(Path({str(path)!r}))
            for i in range(1, 51):
                await journal.intent(f"k{{i}}", line=i, external_id=f"ext-{{i}}", watermark=False)
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], timeout=30, check=False)
    assert proc.returncode == -9
    journal = Journal(path)
    try:
        assert journal.counts() == {"submitting": 50}
    finally:
        journal.close_sync()


# -- status and manifest from a journal -----------------------------------------------------


async def test_batch_status_and_manifest(tmp_path: Path) -> None:
    journal = Journal(tmp_path / JOURNAL_NAME)
    soon, later = time.time() + 86_400, time.time() + 5 * 86_400
    await journal.intent("k1", line=1, external_id="e1", watermark=False)
    await journal.update(
        "k1",
        JobState.DOWNLOADED,
        task={"task_id": "T1"},
        expires_at=later,
        files=[FileRecord("videos/e1.mp4", 1, "ab")],
    )
    await journal.intent("k2", line=2, external_id="e2", watermark=False)
    await journal.update("k2", JobState.SUCCEEDED, task={"task_id": "T2"}, expires_at=later)
    await journal.intent("k3", line=3, external_id="e3", watermark=False)
    await journal.update(
        "k3",
        JobState.SUCCEEDED,
        task={"task_id": "T3"},
        expires_at=soon,
        error=JobError("download failed", "DownloadError"),
    )
    await journal.intent("k4", line=4, external_id="e4", watermark=False)
    await journal.update(
        "k4",
        JobState.FAILED,
        task={"task_id": "T4"},
        expires_at=later,
        error=JobError("Image pixel is invalid", "TaskFailedError"),
    )
    await journal.record(
        "k5",
        line=5,
        external_id="e5",
        state=JobState.REJECTED,
        error=JobError("bad", field="line"),
    )
    await journal.aclose()
    status = batch_status(tmp_path)
    assert status.total == 5
    assert status.counts == {"downloaded": 1, "succeeded": 2, "failed": 1, "rejected": 1}
    assert status.pending_downloads == 2
    assert status.soonest_expiry == datetime.fromtimestamp(soon, UTC)
    assert [(p.line, p.state) for p in status.problems] == [
        (3, "succeeded"),
        (4, "failed"),
        (5, "rejected"),
    ]
    write_manifest(tmp_path / JOURNAL_NAME, tmp_path / "results.jsonl")
    import json

    lines = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [x["line"] for x in lines] == [1, 2, 3, 4, 5]
    assert lines[0]["files"][0]["sha256"] == "ab" and lines[0]["task_id"] == "T1"
    assert lines[3]["error"]["message"] == "Image pixel is invalid"
    assert lines[4]["task_id"] is None and lines[4]["expires_at"] is None
    with pytest.raises(FileNotFoundError):
        batch_status(tmp_path / "nowhere")


async def test_writes_of_one_loop_turn_share_one_commit(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    await journal.intent("k0", line=0, external_id="ext-0", watermark=False)
    before = journal.commits
    # Fifty jobs moving at once (a sweep that saw them all finish): one wake-up, one commit,
    # and each caller still returns only once its own row is durable.
    await asyncio.gather(
        *(
            journal.intent(f"k{i}", line=i, external_id=f"ext-{i}", watermark=False)
            for i in range(1, 51)
        )
    )
    assert journal.commits == before + 1
    await journal.aclose()
    reopened = reopen(tmp_path / "j.sqlite")
    assert reopened.counts() == {JobState.SUBMITTING: 51}
    reopened.close_sync()
