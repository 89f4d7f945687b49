"""What a batch knows before it reads the jobs file: the journal's rows, by identity.

`Resumer` (the base of `Batch`) loads them, picks up what an earlier run left (running tasks,
videos to fetch, creates whose outcome is unknown), checks every downloaded file against the
disk, matches release-0.1 rows to their jobs, and at the end reports the jobs that are no
longer in the jobs file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections import deque
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._batch_fetch import BatchCounts, DownloadStage, Fetch
from ._batch_io import BatchResult, check_file, job_error, result_from_row
from ._batch_submit import lookup_external
from ._errors import AccountError, AuthenticationError, KlingError
from ._jobs import Job, legacy_fingerprint
from ._journal import JobRow, JobState, Journal
from ._names import safe_filename
from .models import Task

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["Resumer"]


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
        self._outstanding = 0  # submitted-not-finished + waiting-to-download
        self._idle = asyncio.Event()
        self._closed = False
        self._journal: Journal | None = None
        self._fetcher: DownloadStage
        self._batch_id = ""
        self._rows: dict[str, JobRow] = {}  # what the journal held at start, by key
        self._lines: dict[str, int] = {}  # key → line, for the jobs read this run
        self._whole_file = False  # the jobs file was read to its end this run
        self._renames: dict[str, str] = {}  # release-0.1 row key → the identity it matched
        self._legacy: dict[str, deque[str]] = {}  # release-0.1 fingerprint → unmatched keys
        self._claims: dict[str, str] = {}  # external id → the key that owns it
        self._watermarks: dict[str, bool | None] = {}  # key → asked for watermarked copies
        self._uncreated: set[str] = set()  # `submitting` rows that Kling says it never made
        self._reported: set[str] = set()  # reported this run (or its report is on the way)

    # Provided by Batch.
    def _emit(self, key: str, result: BatchResult) -> None:
        raise NotImplementedError

    def _follow(self, key: str, ext: str, task: Task, *, hold_slot: bool) -> None:
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
        self._rows = {row.key: row for row in journal.rows()}
        for row in self._rows.values():  # rows come by line: legacy copies queue in order
            self._watermarks[row.key] = row.watermark
            if row.legacy is not None:
                self._legacy.setdefault(row.legacy, deque()).append(row.key)
            if row.state not in (JobState.REJECTED, JobState.PENDING):
                self._claims.setdefault(row.external_id, row.key)

    def _legacy_paths(self) -> set[str]:
        """Paths of files that release-0.1 rows recorded (lower case): new names avoid them."""
        return {
            str(record.get("path", "")).lower()
            for row in self._rows.values()
            if row.key.startswith("v1:")
            for record in row.files or ()
        }

    async def _resume(self) -> None:
        """Pick up what an earlier run left: running tasks, videos to fetch or fetch again,
        creates whose outcome is unknown."""
        downloaded = [row for row in self._rows.values() if row.state == JobState.DOWNLOADED]
        damaged = await asyncio.to_thread(self._check_files, downloaded)
        for row in list(self._rows.values()):
            task = Task.model_validate(row.task) if row.task else None
            if row.key in damaged and task is not None:
                self._outstanding += 1
                self.counts.seen += 1
                self._reported.add(row.key)  # its stored "downloaded" is stale: never shown
                self._spawn(self._refetch(row, task, damaged[row.key]))
            elif row.state == JobState.SUCCEEDED and task is not None:
                self.counts.seen += 1
                self._outstanding += 1
                fetch = Fetch(row.key, row.external_id, task, row.watermark, tuple(row.files or ()))
                if row.legacy is not None:
                    self._adopt_legacy_parts(fetch)
                self._fetcher.queue(fetch)
            elif row.state == JobState.SUBMITTED and task is not None:
                self.counts.seen += 1
                self._follow(row.key, row.external_id, task, hold_slot=True)
            elif row.state == JobState.SUBMITTING:
                await self._resolve(row)

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

    async def _refetch(self, row: JobRow, stored: Task, bad: frozenset[str]) -> None:
        """A downloaded file went missing or bad: fetch it again while Kling still has it."""
        lost = ", ".join(sorted(bad)) or "its files"
        try:
            task = await lookup_external(self.client, stored.task_id)  # a fresh URL
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
                f"{stored.task_id}",
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
            self._uncreated.add(row.key)
            return
        self.counts.seen += 1
        assert self._journal is not None
        await self._journal.update_task(row.key, JobState.SUBMITTED, found)
        self._follow(row.key, row.external_id, found, hold_slot=not found.is_terminal)

    # -- while reading the jobs file --------------------------------------------------------
    def _match_legacy(self, job: Job) -> Job:
        """A job the journal does not know may be a release-0.1 row's: same old fingerprint
        (identical lines in order). It then keeps that row, its id, task and files."""
        if not self._legacy or job.key in self._rows:
            return job
        keys = self._legacy.get(legacy_fingerprint(job))
        if not keys:
            return job
        old = keys.popleft()
        self._renames[old] = job.key
        if self._watermarks.get(old) is None and job.request is not None:
            self._watermarks[old] = job.request.watermark or self._watermark
        return replace(job, key=old)

    def _needs_create(self, job: Job) -> bool:
        row = self._rows.get(job.key)
        if row is None or row.state == JobState.PENDING:
            return True
        if row.state == JobState.SUBMITTING:
            return job.key in self._uncreated
        return row.state == JobState.REJECTED and _retryable(row)

    def _seen_known(self, key: str) -> None:
        row = self._rows[key]
        if row.state in JobState.TERMINAL and key not in self._reported:
            self.counts.seen += 1
            self._emit(key, result_from_row(row, earlier=True))

    def _describe(self, key: str) -> str:
        """Where a job is, for messages: its line now, or as the last run saw it."""
        if (line := self._lines.get(key)) is not None:
            return f"line {line}"
        row = self._rows.get(key)
        if row is not None and row.line is not None:
            return f"the job on line {row.line} in the last run"
        return "a job no longer in the jobs file"

    # -- the end ------------------------------------------------------------------------------
    def _report_unseen(self, *, journal_only: bool) -> None:
        """Report what this run has not: with no jobs file, every job as the journal has it;
        after reading the whole file, the finished jobs no longer in it."""
        if not (journal_only or self._whole_file):
            return
        for key, row in self._rows.items():
            if key in self._reported or key in self._lines:
                continue
            if journal_only:
                if key in self._uncreated:
                    error = {"type": "NotSubmitted", "message": "not created yet: `run` sends it"}
                    self._emit(key, _result(row, JobState.SUBMITTING, error))
                elif row.state in JobState.TERMINAL or row.state == JobState.PENDING:
                    self._emit(key, result_from_row(row, earlier=True))
            elif row.state in JobState.TERMINAL and row.state != JobState.REJECTED:
                self.counts.seen += 1
                self._emit(key, result_from_row(row, in_file=False, earlier=True))

    def _droppable(self) -> tuple[str, ...]:
        """Rows of jobs gone from the file that Kling never had: nothing left to follow."""
        return tuple(
            key
            for key, row in self._rows.items()
            if key not in self._lines
            and (row.state in (JobState.REJECTED, JobState.PENDING) or key in self._uncreated)
        )


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
