"""A batch's videos from the journal to the disk: fed to the download queue as it drains.

`Feeder` (the base of a `Batch`) holds a batch's run state and brings to disk what the journal
says is finished but not on disk: videos an earlier run left, tasks that finished while many
downloads waited (left in the journal, not in memory), downloads found missing or damaged.
It queues them only while fewer than `FEED` downloads wait or run, the soonest to expire
first, reading the journal a page at a time, so memory does not grow with the jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import Coroutine
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ._batch_downloads import BatchCounts, DownloadStage, Fetch, Saved
from ._batch_submit import lookup_external
from ._budget import Budget, Settlement
from ._errors import KlingError
from ._journal import JobRow, JobState, Journal
from ._journal_run import RunLedger
from ._names import safe_filename
from ._records import JobError, check_file, job_error
from ._results import BatchResult, result_from_row
from .models import Task

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["FEED", "Feeder", "InFlight", "result_as"]

#: Videos are queued from the journal while fewer than this many wait or download.
FEED = 256


class InFlight(NamedTuple):
    """A job in flight: whether its create asked for watermarked copies (None: a release-0.1
    row's, not known) and its line in this run's jobs file (None: not read yet)."""

    watermark: bool | None
    line: int | None = None


class Feeder:
    """A batch's run state, and its journal-to-disk side (see the module docstring)."""

    def __init__(self, client: Client, out_dir: Path, *, verify: bool, watermark: bool) -> None:
        self.client = client
        self._watermark = watermark
        self.out_dir = out_dir
        self.videos_dir = out_dir / "videos"
        self.counts = BatchCounts()
        self.stop_reason: str | None = None
        #: Units spent and reserved against the cap (see `_batch_resume` for its journal side).
        self.budget = Budget()
        self.over_budget = 0  # jobs not sent this run: their estimate did not fit the budget
        #: Tasks that cost more than their kind's estimate and raised it, in order.
        self.overshoots: list[Settlement] = []
        self._stopped = asyncio.Event()
        self._verify = verify
        self._outstanding = 0  # submitted-not-finished + waiting-to-download + feeders
        self._idle = asyncio.Event()
        self._closed = False
        self._journal: Journal | None = None
        self._ledger: RunLedger | None = None
        self._fetcher: DownloadStage
        self._batch_id = ""
        self._whole_file = False  # the jobs file was read to its end this run
        self._legacy = False  # some release-0.1 row is not matched to its job yet
        #: The jobs in flight (followed, or queued or under way to disk): the only per-job
        #: state a batch keeps in memory.
        self._inflight: dict[str, InFlight] = {}
        self._feeding = False  # the feeder of finished videos runs
        self._rescan = False  # rows were spilled to the journal behind its position

    @property
    def ledger(self) -> RunLedger:
        """This run's ledger (only while the batch runs)."""
        assert self._ledger is not None, "the batch is not running"
        return self._ledger

    # Provided by Batch.
    def _emit(self, key: str, result: BatchResult, line: int | None = None) -> None:
        raise NotImplementedError

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        raise NotImplementedError

    def _settle(self) -> None:
        self._outstanding -= 1
        if self._outstanding == 0:
            self._idle.set()

    # -- feeding the download queue -----------------------------------------------------------
    async def _feed_damaged(self) -> None:
        """Fetch again the downloads found missing or damaged, as the download queue drains."""
        try:
            for page in self.ledger.damaged():
                for key, bad in page:
                    await self._fetcher.room(FEED)
                    row = self.ledger.get(key)
                    if row is None or key in self._inflight:
                        continue
                    self._outstanding += 1
                    self._inflight[key] = InFlight(row.watermark)
                    await self._refetch(row, bad)
        finally:
            self._settle()

    def _feed(self) -> None:
        """(Re)start feeding the journal's finished-not-downloaded videos to the queue."""
        if self._feeding:
            self._rescan = True  # rows may have joined behind the feeder's position
            return
        self._feeding = True
        self._outstanding += 1  # the batch is not done while the feeder has work
        self._spawn(self._feed_succeeded())

    def _to_disk(self, key: str, ext: str, task: Task, units: Decimal | None = None) -> None:
        """A followed task succeeded (and the journal says so): queue its videos, or, while
        many downloads wait, leave it to the journal, not memory, for the feeder to queue."""
        if self._fetcher.backlog < FEED:
            watermark = self._inflight[key].watermark if key in self._inflight else None
            fetch = Fetch(key, ext, task, watermark, units=units, seen=time.monotonic())
            self._fetcher.queue(fetch)  # just seen by this run's poller: its links are fresh
            return
        self._inflight.pop(key, None)
        self._feed()  # before settling: the batch must not look done in between
        self._settle()

    async def _feed_succeeded(self) -> None:
        """Queue the videos the journal holds finished but not on disk, as the download queue
        drains, the soonest to expire first; again while rows keep joining."""
        try:
            self._rescan = True
            while self._rescan:
                self._rescan = False
                for page in self.ledger.by_expiry(JobState.SUCCEEDED):
                    for row in page:
                        await self._fetcher.room(FEED)
                        self._queue_row(row)
        finally:
            self._feeding = False
            self._settle()

    def _queue_row(self, row: JobRow) -> None:
        # The page may be stale by now: a job followed, fetched or reported this run (even
        # one whose row the page shows clean, downloaded since) is not queued again.
        if row.task is None or row.key in self._inflight or self.ledger.reported(row.key):
            return
        self._outstanding += 1
        self._inflight[row.key] = InFlight(row.watermark)
        task = Task.model_validate(row.task)
        spent = row.units.spent if row.units else None
        # A stored answer (seen=None): the stage asks again first if its links may have lapsed.
        fetch = Fetch(row.key, row.external_id, task, row.watermark, row.files or (), units=spent)
        if row.legacy is not None:
            self._adopt_legacy_parts(fetch)
        self._fetcher.queue(fetch)

    def _adopt_legacy_parts(self, fetch: Fetch) -> None:
        """A release-0.1 row's half-downloaded `.part` continues under this release's name."""
        count = len(fetch.task.videos)
        for index, wm, path, record in self._fetcher.targets(fetch):
            old = self.videos_dir / f"{_v1_name(fetch.ext, index, count, wm)}.part"
            new = self.out_dir / f"{path}.part"
            if record is None and old != new and old.exists() and not new.exists():
                with contextlib.suppress(OSError):  # only bandwidth is at stake
                    os.replace(old, new)

    def _check_files(self, rows: list[JobRow]) -> dict[str, frozenset[str]]:
        """The disk is the truth: each downloaded file must exist with its recorded size
        (and hash, with `verify`). Returns the bad paths by key."""
        bad: dict[str, frozenset[str]] = {}
        for row in rows:
            paths = frozenset(
                record.path
                for record in row.files or ()
                if check_file(self.out_dir, record, rehash=self._verify)
            )
            if paths or not row.files:
                bad[row.key] = paths
        return bad

    async def _refetch(self, row: JobRow, bad: frozenset[str]) -> None:
        """A downloaded file went missing or bad: fetch it again while Kling still has it."""
        lost = ", ".join(sorted(bad)) or "its files"
        assert row.task_id is not None
        try:
            task = await lookup_external(self.client, row.task_id)  # a fresh URL
        except KlingError as exc:  # cannot ask now: stays "succeeded", the next run retries
            error = job_error(exc)
            error = replace(error, message=f"{lost} missing or damaged on disk; {error.message}")
            await self._write(row.key, JobState.SUCCEEDED, error)
            self._emit(row.key, result_as(row, JobState.SUCCEEDED, error))
            self._settle()
            return
        if task is None:
            error = JobError(
                f"{lost} missing or damaged on disk, and Kling no longer has task {row.task_id}",
                "VideoExpiredError",
            )
            await self._write(row.key, JobState.EXPIRED, error)
            self._emit(row.key, result_as(row, JobState.EXPIRED, error))
            self._settle()
            return
        error = JobError(f"{lost} missing or damaged: fetching again", "FileMissing")
        await self._write(row.key, JobState.SUCCEEDED, error)
        files, spent = row.files or (), row.units.spent if row.units else None
        fetch = Fetch(
            row.key, row.external_id, task, row.watermark, files, bad, spent, time.monotonic()
        )
        self._fetcher.queue(fetch)

    async def _write(self, key: str, state: JobState, error: JobError) -> None:
        assert self._journal is not None
        await self._journal.update(key, state, error=error)

    # -- downloads ----------------------------------------------------------------------------
    async def _downloader(self) -> None:
        """One download worker: the stage brings a job's videos to disk, the batch records
        and reports what came of it. Runs until cancelled."""
        while True:
            fetch = await self._fetcher.next()
            try:
                saved = await self._fetcher.download(fetch)
                try:
                    await self._record(fetch.key, saved)
                except Exception as exc:  # not recorded: a worker must live on, a rerun fetches
                    saved = Saved(JobState.SUCCEEDED, error=JobError(str(exc), type(exc).__name__))
                self.counts.downloaded += saved.state == JobState.DOWNLOADED
                task = fetch.task
                result = BatchResult(
                    None,
                    fetch.ext,
                    saved.state,
                    task.task_id,
                    saved.files,
                    saved.error,
                    task.expires_at,
                    units=fetch.units,
                )
                self._emit(fetch.key, result)
            finally:
                self._fetcher.done()
                self._settle()

    async def _record(self, key: str, saved: Saved) -> None:
        assert self._journal is not None
        files = saved.files if saved.state == JobState.DOWNLOADED else None
        await self._journal.update(key, saved.state, error=saved.error, files=files)


def _v1_name(ext: str, index: int, count: int, watermarked: bool) -> str:
    """The file name release 0.1 gave a video (to find the `.part` files it left)."""
    stem = ext
    if safe_filename(stem, suffix="") != stem:
        digest = hashlib.sha256(stem.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        stem = f"{safe_filename(stem, suffix='', max_len=100)}-{digest}"
    stem += (f"-{index + 1}" if count > 1 else "") + ("-wm" if watermarked else "")
    return safe_filename(stem)


def result_as(row: JobRow, state: JobState, error: JobError) -> BatchResult:
    """The result of a row, now in `state` for `error`."""
    return replace(result_from_row(row), state=state, error=error, files=())
