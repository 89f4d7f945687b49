"""The bulk engine: jobs → tasks → videos on disk, at the account's concurrency, crash-safe.

Three stages run side by side: submitters (slot gate + exactly-once create, journal intent
first), the client's tracker (one list sweep reports every running task), and a download pool
that takes the earliest-expiring video first. The journal is the source of truth; a rerun with
the same out dir resumes from it without creating or downloading anything twice.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._batch_fetch import BatchCounts, DownloadStage
from ._batch_io import (
    JOURNAL_NAME,
    MANIFEST_NAME,
    BatchResult,
    job_error,
    result_from_row,
    write_manifest,
)
from ._batch_submit import Outcome, create_for_batch, lookup_external
from ._errors import (
    AccountError,
    AuthenticationError,
    InvalidRequestError,
    KlingError,
)
from ._events import emit
from ._jobs import Job, external_id_for, jobs_from_jsonl, jobs_from_requests
from ._journal import JobRow, JobState, Journal
from ._types import PathLike
from .models import MultiImageToVideoRequest, Task

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["Batch", "BatchResult", "run_batch"]


class Batch:
    """Runs a batch; iterate it (`async for result in batch`) to drive it and get results."""

    def __init__(
        self,
        client: Client,
        jobs: Iterable[Job],
        out_dir: Path,
        *,
        download_concurrency: int | None = None,
        watermark: bool = False,
        submitters: int | None = None,
    ) -> None:
        self.client = client
        self.out_dir = Path(out_dir)
        self.videos_dir = self.out_dir / "videos"
        self._jobs: Iterator[Job] = iter(jobs)
        self._watermark = watermark
        self._downloaders = download_concurrency or client.limits.download_concurrency
        self._submitters = submitters or min(client.gate.maximum, 16)
        self.counts = BatchCounts()
        self.stop_reason: str | None = None
        self._stopped = asyncio.Event()
        self.interrupted = False
        self._results: asyncio.Queue[BatchResult | None] = asyncio.Queue()
        self._outstanding = 0  # submitted-not-finished + waiting-to-download
        self._idle = asyncio.Event()
        self._known: dict[int, JobRow] = {}
        self._journal: Journal | None = None
        self._batch_id = ""
        self._background: set[asyncio.Future[None]] = set()
        self._closed = False
        self._claimed: dict[str, int] = {}  # external id → the line that owns it

    @property
    def journal(self) -> Journal:
        """The open journal (only while the batch runs)."""
        assert self._journal is not None, "the batch is not running"
        return self._journal

    # -- public control -----------------------------------------------------------------------
    def stop_submitting(self, reason: str) -> None:
        """Submit nothing more; running tasks still finish and download."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stopped.set()

    async def __aiter__(self) -> AsyncIterator[BatchResult]:
        engine = asyncio.create_task(self._run(), name="kling-batch")
        try:
            while (result := await self._results.get()) is not None:
                yield result
            await engine
        finally:
            if not engine.done():
                self.interrupted = True
                engine.cancel()
            await asyncio.gather(engine, return_exceptions=True)

    # -- engine -------------------------------------------------------------------------------
    async def _run(self) -> None:
        self.videos_dir.mkdir(parents=True, exist_ok=True)
        journal = self._journal = Journal(self.out_dir / JOURNAL_NAME)
        self._batch_id = journal.meta("batch_id") or uuid.uuid4().hex
        journal.set_meta("batch_id", self._batch_id)
        self._known = {row.line: row for row in journal.rows()}
        for row in self._known.values():
            self._claimed.setdefault(row.external_id, row.line)
        self._fetcher = DownloadStage(
            self.client, self.out_dir, journal, self.counts, self._emit, self._settle
        )
        self._fetcher.on_full = self.stop_submitting  # new videos would have nowhere to go
        workers: list[asyncio.Task[None]] = []
        try:
            await self._resume()
            workers = [asyncio.create_task(self._submitter()) for _ in range(self._submitters)]
            workers += [
                asyncio.create_task(self._fetcher.worker()) for _ in range(self._downloaders)
            ]
            await asyncio.gather(*workers[: self._submitters])
            while self._outstanding:
                self._idle.clear()
                await self._idle.wait()
        finally:
            # From here on, tasks that end (the client may keep tracking them) are the next
            # run's business: nothing may write to the journal once it is closed.
            self._closed = True
            background = list(self._background)
            for job in (*workers, *background):
                job.cancel()
            await asyncio.gather(*workers, *background, return_exceptions=True)
            try:
                await journal.aclose()  # lets writes already queued (shielded) finish
                write_manifest(Journal(journal.path), self.out_dir / MANIFEST_NAME)
            finally:
                self._results.put_nowait(None)

    def _emit(self, result: BatchResult) -> None:
        self.counts.states[result.state] = self.counts.states.get(result.state, 0) + 1
        self._results.put_nowait(result)

    def _settle(self) -> None:
        self._outstanding -= 1
        if self._outstanding == 0:
            self._idle.set()

    async def _resume(self) -> None:
        """Pick up what an earlier run left: running tasks, videos to fetch, unknown creates."""
        for row in list(self._known.values()):
            task = Task.model_validate(row.task) if row.task else None
            if row.state == JobState.REJECTED:
                continue  # never billed: the submitters retry it if its line was edited
            if row.state in JobState.TERMINAL:
                self.counts.seen += 1
                self._emit(result_from_row(row))
            elif row.state == JobState.SUCCEEDED and task is not None:
                self.counts.seen += 1
                self._outstanding += 1
                self._fetcher.queue(row.line, row.external_id, task)
            elif row.state == JobState.SUBMITTED and task is not None:
                self.counts.seen += 1
                self._follow(row.line, row.external_id, task, hold_slot=True)
            elif row.state == JobState.SUBMITTING:
                try:
                    found = await lookup_external(self.client, row.external_id)
                except KlingError as exc:  # cannot tell if it exists: a later run asks again
                    self.counts.seen += 1
                    if isinstance(exc, AccountError | AuthenticationError):
                        self.stop_submitting(f"{type(exc).__name__}: {exc}")
                    await self._unsubmitted(row.line, row.external_id, exc)
                    continue
                if found is not None:  # the lost create did happen: adopt it, never re-create
                    self.counts.seen += 1
                    await self.journal.update_task(row.line, JobState.SUBMITTED, found)
                    self._follow(row.line, row.external_id, found, hold_slot=not found.is_terminal)
                    continue
                del self._known[row.line]  # never created: the submitters send it again

    def _follow(self, line: int, ext: str, task: Task, *, hold_slot: bool) -> None:
        self._outstanding += 1
        self.counts.running += 1
        done = self.client.tracker.track(task)
        if hold_slot:  # held while the task is followed, which may outlast `done`
            self.client.gate.hold()
            self.client.tracker.ended(task).add_done_callback(self.client._release_slot)

        def finished(future: asyncio.Future[Task]) -> None:
            if not self._closed:
                self._spawn(self._finished(line, ext, future))

        done.add_done_callback(finished)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        job = asyncio.ensure_future(coro)
        self._background.add(job)  # keep a reference: the loop holds tasks only weakly
        job.add_done_callback(self._background.discard)

    async def _submitter(self) -> None:
        journal = self.journal
        for job in self._jobs:
            if self.stop_reason is not None:
                return
            row = self._known.get(job.line)
            if row is not None and not self._retry_rejected(row, job):
                continue  # handled by _resume from the journal
            self.counts.seen += 1
            ext = external_id_for(self._batch_id, job)
            if job.request is None:
                assert job.error is not None
                await self._reject(job, ext, job.error)
                continue
            owner = self._claimed.setdefault(ext, job.line)
            if owner != job.line:  # two jobs, one idempotency key: they would share a task
                error = InvalidRequestError(
                    f"external_task_id {ext!r} is already used by line {owner} of this batch",
                    field="external_task_id",
                    value=ext,
                )
                await self._reject(job, ext, error)
                continue
            request = job.request.with_external_id(ext)
            if self._watermark and not request.watermark:
                request = request.model_copy(update={"watermark": True})
            await journal.intent(job.line, ext, job.fingerprint)
            result = await create_for_batch(self.client, request, ext, self._stopped)
            if result.outcome is Outcome.CREATED:
                assert result.task is not None
                task = result.task
                await journal.update_task(job.line, JobState.SUBMITTED, task)
                self._follow(job.line, ext, task, hold_slot=result.adopted and not task.is_terminal)
                continue
            if result.outcome is Outcome.ABANDONED:
                self.counts.seen -= 1  # not reported live, like the jobs never taken, but the
                # row (kept: the create may yet land) must say why it is unfinished.
                why = {"type": "NotSubmitted", "message": f"not sent: {self.stop_reason}"}
                await journal.update(job.line, JobState.SUBMITTING, error=why)
                return
            assert result.error is not None
            if result.outcome is Outcome.REJECTED:
                await self._reject(job, ext, result.error)
                continue
            if result.outcome is Outcome.FATAL:  # stop first: other submitters check it
                self.stop_submitting(f"{type(result.error).__name__}: {result.error}")
            await self._unsubmitted(job.line, ext, result.error)
            if result.outcome is Outcome.FATAL:
                return

    def _retry_rejected(self, row: JobRow, job: Job) -> bool:
        """A rejected line that was edited since runs again; unchanged, its result stands."""
        if row.state != JobState.REJECTED:
            return False
        if row.fingerprint == job.fingerprint:
            self.counts.seen += 1
            self._emit(result_from_row(row))
            return False
        return True

    async def _unsubmitted(self, line: int, ext: str, exc: KlingError) -> None:
        """The create failed or its outcome is unknown: keep the error on record (manifest,
        `status`); the row stays `submitting`, so a rerun asks Kling before creating again."""
        error = job_error(exc)
        await self.journal.update(line, JobState.SUBMITTING, error=error)
        self._emit(BatchResult(line, ext, JobState.SUBMITTING, error=error))

    async def _reject(self, job: Job, ext: str, exc: KlingError) -> None:
        error = job_error(exc)
        await self.journal.record(job.line, ext, job.fingerprint, JobState.REJECTED, error)
        emit(self.client.event_hook, "job_rejected", line=job.line, error=error["message"])
        self._emit(BatchResult(job.line, ext, JobState.REJECTED, error=error))

    async def _finished(self, line: int, ext: str, done: asyncio.Future[Task]) -> None:
        self.counts.running -= 1
        self.counts.finished += 1
        if done.cancelled():
            self._settle()
            return
        exc = done.exception()
        if exc is not None:  # Kling lost the task, or polling hit a fatal error
            error = job_error(exc) if isinstance(exc, KlingError) else {"message": str(exc)}
            if isinstance(exc, AccountError | AuthenticationError):
                self.stop_submitting(f"{type(exc).__name__}: {exc}")
            # SUBMITTING: a rerun asks Kling by external id and creates it again if still unknown
            await self.journal.update(line, JobState.SUBMITTING, error=error)
            self._emit(BatchResult(line, ext, JobState.SUBMITTING, error=error))
            self._settle()
            return
        task = done.result()
        if task.task_status == "succeed":
            await self.journal.update_task(line, JobState.SUCCEEDED, task)
            self._fetcher.queue(line, ext, task)
            return
        self.counts.failed += 1
        error = {"message": task.task_status_msg or "task failed", "type": "TaskFailedError"}
        await self.journal.update_task(line, JobState.FAILED, task, error=error)
        self._emit(
            BatchResult(line, ext, JobState.FAILED, task.task_id, (), error, task.expires_at)
        )
        self._settle()


def run_batch(
    client: Client,
    jobs: Iterable[MultiImageToVideoRequest] | PathLike,
    out_dir: PathLike,
    *,
    download_concurrency: int | None = None,
    watermark: bool = False,
) -> Batch:
    """Run many jobs (requests, or a JSONL file's path) into `out_dir`; iterate for results.

    Rerunning with the same `out_dir` resumes: nothing is created or downloaded twice.
    """
    if isinstance(jobs, str | os.PathLike):
        source: Iterable[Job] = jobs_from_jsonl(Path(jobs))
    else:
        source = jobs_from_requests(jobs)
    return Batch(
        client,
        source,
        Path(out_dir),
        download_concurrency=download_concurrency,
        watermark=watermark,
    )
