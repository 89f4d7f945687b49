"""What a batch knows before it reads the jobs file: the journal's rows, by identity, a page
at a time.

`Resumer` (the base of `Batch`) picks up what an earlier run left (running tasks, videos to
fetch, creates whose outcome is unknown), checks every downloaded file against the disk,
matches release-0.1 rows to their jobs, and at the end reports the jobs that are no longer
in the jobs file. It never holds the journal: rows are read in bounded pages through the
run's ledger (`_journal_run`), which also keeps the run's own bookkeeping, and a job takes
memory only while it is in flight (followed at Kling, or queued or under way to disk).
Videos an earlier run left to fetch are fed to the download queue as it drains, the soonest
to expire first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import Container, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._batch_fetch import BatchCounts, DownloadStage, Fetch
from ._batch_io import BatchResult, check_file, job_error, result_from_row
from ._batch_submit import lookup_external
from ._errors import AccountError, AuthenticationError, KlingError
from ._jobs import Job, legacy_fingerprint
from ._journal import JobRow, JobState, Journal
from ._journal_run import RunLedger
from ._names import safe_filename
from .models import Task

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["Resumer"]

#: Videos an earlier run left to fetch are queued while fewer than this many wait or download.
FEED = 256


def _retryable(row: JobRow) -> bool:
    """A rejection we made (invalid job, id taken or in use) is decided again every run; one
    Kling made (its error code is on record) stands while the job is unchanged."""
    return (row.error or {}).get("code") is None


class Resumer:
    """Journal-side state of a batch (see the module docstring)."""

    def __init__(self, client: Client, out_dir: Path, *, verify: bool, watermark: bool) -> None:
        self.client = client
        self._watermark = watermark
        self.out_dir = out_dir
        self.videos_dir = out_dir / "videos"
        self.counts = BatchCounts()
        self.stop_reason: str | None = None
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
        #: The jobs in flight (followed, or queued or under way to disk): whether each one's
        #: create asked for watermarked copies (None: a release-0.1 row's, not known).
        self._inflight: dict[str, bool | None] = {}
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

    async def _room_for_results(self) -> None:
        raise NotImplementedError

    def _follow(
        self, key: str, ext: str, task: Task, *, hold_slot: bool, watermark: bool | None
    ) -> None:
        raise NotImplementedError

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        raise NotImplementedError

    def stop_submitting(self, reason: str) -> None:
        """Submit nothing more (see Batch)."""
        raise NotImplementedError

    async def _unsubmitted(self, key: str, ext: str, exc: KlingError) -> None:
        raise NotImplementedError

    def _settle(self) -> None:
        self._outstanding -= 1
        if self._outstanding == 0:
            self._idle.set()

    # -- start-up -----------------------------------------------------------------------------
    def _load(self, journal: Journal) -> None:
        self._batch_id = journal.meta("batch_id") or uuid.uuid4().hex
        journal.set_meta("batch_id", self._batch_id)
        self._ledger = RunLedger(journal.path)
        self._legacy = self._ledger.has_legacy()

    def _legacy_paths(self) -> Container[str]:
        """Paths of files that release-0.1 rows recorded (lower case): new names avoid them."""
        return self.ledger.legacy_paths() if self._legacy else frozenset()

    async def _resume(self) -> None:
        """Pick up what an earlier run left: running tasks, videos to fetch or fetch again,
        creates whose outcome is unknown."""
        ledger = self.ledger
        for page in ledger.pages(JobState.DOWNLOADED):  # the disk is the truth
            damaged = await asyncio.to_thread(self._check_files, page)
            for row in page:
                if row.key in damaged and row.task_id is not None:
                    ledger.add_damaged(row.key, damaged[row.key])
                    ledger.report(row.key)  # its stored "downloaded" is stale: never shown
        for page in ledger.pages(JobState.SUBMITTED, task=True):
            for row in page:
                if row.task is not None and row.key not in self._inflight:
                    self.counts.seen += 1
                    task = Task.model_validate(row.task)
                    self._follow(
                        row.key, row.external_id, task, hold_slot=True, watermark=row.watermark
                    )
        self._outstanding += 1  # the batch is not done while a feeder has work
        self._spawn(self._feed_damaged())
        self._feed()
        for page in ledger.pages(JobState.SUBMITTING):
            for row in page:
                if row.key not in self._inflight:
                    await self._resolve(row)

    async def _feed_damaged(self) -> None:
        """Fetch again the downloads found missing or damaged, as the download queue drains."""
        try:
            for page in self.ledger.damaged():
                for key, bad in page:
                    await self._fetcher.room(FEED)
                    row = self.ledger.get(key)
                    if row is None or key in self._inflight:
                        continue
                    self.counts.seen += 1
                    self._outstanding += 1
                    self._inflight[key] = row.watermark
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

    def _to_disk(self, key: str, ext: str, task: Task) -> None:
        """A followed task succeeded (and the journal says so): queue its videos, or, while
        many downloads wait, leave it to the journal, not memory, for the feeder to queue."""
        if self._fetcher.backlog < FEED:
            self._fetcher.queue(Fetch(key, ext, task, self._inflight.get(key)))
            return
        self._inflight.pop(key, None)
        self.counts.seen -= 1  # counted again when the feeder queues it
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
        # The page may be stale by now: a job followed, fetched or reported this run is not
        # queued again.
        if row.task is None or row.key in self._inflight or self.ledger.reported(row.key):
            return
        self.counts.seen += 1
        self._outstanding += 1
        self._inflight[row.key] = row.watermark
        task = Task.model_validate(row.task)
        fetch = Fetch(row.key, row.external_id, task, row.watermark, tuple(row.files or ()))
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
                str(record.get("path"))
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
            error["message"] = f"{lost} missing or damaged on disk; {error['message']}"
            await self._write(row.key, JobState.SUCCEEDED, error)
            self._emit(row.key, _result(row, JobState.SUCCEEDED, error))
            self._settle()
            return
        if task is None:
            error = {
                "type": "VideoExpiredError",
                "message": f"{lost} missing or damaged on disk, and Kling no longer has task "
                f"{row.task_id}",
            }
            await self._write(row.key, JobState.EXPIRED, error)
            self._emit(row.key, _result(row, JobState.EXPIRED, error))
            self._settle()
            return
        error = {"type": "FileMissing", "message": f"{lost} missing or damaged: fetching again"}
        await self._write(row.key, JobState.SUCCEEDED, error)
        files = tuple(row.files or ())
        self._fetcher.queue(Fetch(row.key, row.external_id, task, row.watermark, files, bad))

    async def _write(self, key: str, state: str, error: dict[str, Any]) -> None:
        assert self._journal is not None
        await self._journal.update(key, state, error=error)

    async def _resolve(self, row: JobRow) -> None:
        """A create whose outcome is unknown: the journal holds our intent, so a task under
        its id is ours (adopted); no task means it was never made (sent when its job is read)."""
        try:
            found = await lookup_external(self.client, row.external_id)
        except KlingError as exc:  # cannot tell if it exists: a later run asks again
            self.counts.seen += 1
            if isinstance(exc, AccountError | AuthenticationError):
                self.stop_submitting(f"{type(exc).__name__}: {exc}")
            await self._unsubmitted(row.key, row.external_id, exc)
            return
        if found is None:
            self.ledger.set_uncreated(row.key, True)
            return
        self.counts.seen += 1
        assert self._journal is not None
        await self._journal.update_task(row.key, JobState.SUBMITTED, found)
        hold = not found.is_terminal
        self._follow(row.key, row.external_id, found, hold_slot=hold, watermark=row.watermark)

    # -- while reading the jobs file --------------------------------------------------------
    def _match_legacy(self, job: Job) -> Job:
        """A job the journal does not know may be a release-0.1 row's: same old fingerprint
        (identical lines in order). It then keeps that row, its id, task and files."""
        old = self.ledger.take_legacy(legacy_fingerprint(job))
        if old is None:
            return job
        self.ledger.rename(old, job.key)
        if old in self._inflight and self._inflight[old] is None and job.request is not None:
            self._inflight[old] = job.request.watermark or self._watermark
        return replace(job, key=old)

    def _needs_create(self, key: str, row: JobRow | None) -> bool:
        if row is None or row.state == JobState.PENDING:
            return True
        if row.state == JobState.SUBMITTING:
            return self.ledger.uncreated(key)
        return row.state == JobState.REJECTED and _retryable(row)

    def _seen_known(self, line: int, row: JobRow) -> None:
        """A job the journal knows, read again at `line`: report it if it is done (and not
        reported yet)."""
        if row.state not in JobState.TERMINAL or row.key in self._inflight:
            return
        if self.ledger.report(row.key):  # the first report of it this run
            self.counts.seen += 1
            self._emit(row.key, result_from_row(row, line=line, in_file=True), line=line)

    def _describe(self, key: str) -> str:
        """Where a job is, for messages: its line now, or as the last run saw it."""
        if (line := self.ledger.line(key)) is not None:
            return f"line {line}"
        row = self.ledger.get(key)
        if row is not None and row.line is not None:
            return f"the job on line {row.line} in the last run"
        return "a job no longer in the jobs file"

    # -- the end ------------------------------------------------------------------------------
    async def _report_unseen(self, *, journal_only: bool) -> None:
        """Report what this run has not: with no jobs file, every job as the journal has it;
        after reading the whole file, the finished jobs no longer in it."""
        if not (journal_only or self._whole_file):
            return
        ledger = self.ledger
        for page in ledger.unseen():
            for row in page:
                key = row.key
                if key in self._inflight or ledger.reported(key):
                    continue
                if journal_only:
                    if ledger.uncreated(key):
                        error = {
                            "type": "NotSubmitted",
                            "message": "not created yet: `run` sends it",
                        }
                        self._emit(key, _result(row, JobState.SUBMITTING, error))
                    elif row.state in JobState.TERMINAL or row.state == JobState.PENDING:
                        self._emit(key, result_from_row(row))
                elif row.state in JobState.TERMINAL and row.state != JobState.REJECTED:
                    self.counts.seen += 1
                    self._emit(key, result_from_row(row, in_file=False))
            await self._room_for_results()


def _v1_name(ext: str, index: int, count: int, watermarked: bool) -> str:
    """The file name release 0.1 gave a video (to find the `.part` files it left)."""
    stem = ext
    if safe_filename(stem, suffix="") != stem:
        digest = hashlib.sha256(stem.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        stem = f"{safe_filename(stem, suffix='', max_len=100)}-{digest}"
    stem += (f"-{index + 1}" if count > 1 else "") + ("-wm" if watermarked else "")
    return safe_filename(stem)


def _result(row: JobRow, state: str, error: dict[str, Any]) -> BatchResult:
    return replace(result_from_row(row), state=state, error=error, files=())
