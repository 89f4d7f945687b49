"""The bulk engine: jobs → tasks → videos on disk, at the account's concurrency, crash-safe.

A job is its content (`_identity`): the journal is keyed by identity, so editing, inserting,
deleting, moving or duplicating lines between runs never re-creates a job that exists, never
skips a new one and never hands one job another's task. Submitters read the jobs file in order
(one at a time, so identical lines are numbered the same way every run), record the intent
before each create, and create only with an id they own: one derived from the folder's random
batch id, or the user's own id after Kling confirmed that no task has it yet. The client's
tracker follows running tasks; a download pool takes the earliest-expiring video first. The
folder is locked (`_folder`) for the whole run.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._batch_fetch import DownloadStage, Fetch
from ._batch_io import JOURNAL_NAME, MANIFEST_NAME, BatchResult, job_error, write_manifest
from ._batch_resume import Resumer
from ._batch_submit import Outcome, create_for_batch, lookup_external
from ._errors import AccountError, AuthenticationError, InvalidRequestError, KlingError
from ._events import emit
from ._folder import FolderLock, OutputFolderError
from ._identity import generated_external_id
from ._jobs import Identifier, Job, jobs_from_jsonl, jobs_from_requests
from ._journal import JobState, Journal
from ._types import PathLike
from .models import MultiImageToVideoRequest, Task

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["Batch", "BatchResult", "run_batch"]


class Batch(Resumer):
    """Runs a batch; iterate it (`async for result in batch`) to drive it and get results.

    `jobs=None` runs on the journal alone (`kling-async download`): nothing new is created,
    what the folder knows is followed, fetched and reported.
    """

    def __init__(
        self,
        client: Client,
        jobs: Iterable[Job] | None,
        out_dir: Path,
        *,
        download_concurrency: int | None = None,
        watermark: bool = False,
        adopt_existing: bool = False,
        verify: bool = False,
        submitters: int | None = None,
    ) -> None:
        super().__init__(client, Path(out_dir), verify=verify, watermark=watermark)
        self._jobs: Iterator[Job] | None = None if jobs is None else iter(jobs)
        self._adopt = adopt_existing
        self._downloaders = download_concurrency or client.limits.download_concurrency
        self._submitters = submitters or min(client.gate.maximum, 16)
        self.interrupted = False
        self._results: asyncio.Queue[BatchResult | None] = asyncio.Queue()
        self._background: set[asyncio.Future[None]] = set()
        self._identifier = Identifier()
        self._read_lock = asyncio.Lock()

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
        # However the engine ends (a bad folder before it even started included), the loop
        # below must end too: a sentinel after the engine's own is harmless.
        engine.add_done_callback(lambda _: self._results.put_nowait(None))
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
        lock, release = FolderLock.for_batch(self.out_dir, self)
        workers: list[asyncio.Task[None]] = []
        try:
            journal = self._journal = Journal(self.out_dir / JOURNAL_NAME)
            try:
                self.videos_dir.mkdir(exist_ok=True)
            except OSError as exc:
                why = exc.strerror or exc
                raise OutputFolderError(f"cannot create {self.videos_dir}: {why}") from None
            self._load(journal)
            self._fetcher = DownloadStage(
                self.client,
                self.out_dir,
                journal,
                self.counts,
                self._emit,
                self._settle,
                taken=self._legacy_paths(),
            )
            self._fetcher.on_full = self.stop_submitting  # new videos would have nowhere to go
            await self._resume()
            workers = [asyncio.create_task(self._submitter()) for _ in range(self._submitters)]
            workers += [
                asyncio.create_task(self._fetcher.worker()) for _ in range(self._downloaders)
            ]
            await asyncio.gather(*workers[: self._submitters])
            self._report_unseen(journal_only=self._jobs is None)
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
                if self._journal is not None:
                    await self._finish(self._journal)
            finally:
                self._results.put_nowait(None)
                if release:
                    lock.release()
                else:  # the CLI's lock: it lets go of it
                    lock.batch = None

    async def _finish(self, journal: Journal) -> None:
        """Store where every job was seen, close the journal and rewrite the manifest."""
        try:
            if self._jobs is not None:
                renames = self._renames
                await journal.finish_run(
                    {renames.get(k, k): n for k, n in self._lines.items()},
                    renames=renames,
                    whole_file=self._whole_file,
                    drop=self._droppable() if self._whole_file else (),
                )
        finally:
            await journal.aclose()  # lets writes already queued (shielded) finish
        write_manifest(Journal(journal.path), self.out_dir / MANIFEST_NAME)

    def _emit(self, key: str, result: BatchResult) -> None:
        """Report a job's result, placed where the job is in this run's jobs file."""
        line = self._lines.get(key)
        if line is not None:
            in_file = True
        elif self._jobs is not None and self._whole_file:
            in_file = False
        else:  # not read (yet) this run: as the last run saw it
            row = self._rows.get(key)
            line, in_file = (row.line, row.line is not None) if row else (None, True)
        result = replace(
            result,
            line=line if in_file else None,
            in_jobs_file=in_file,
            job_id=self._renames.get(key, key),
        )
        self._reported.add(key)
        self.counts.states[result.state] = self.counts.states.get(result.state, 0) + 1
        self._results.put_nowait(result)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        job = asyncio.ensure_future(coro)
        self._background.add(job)  # keep a reference: the loop holds tasks only weakly
        job.add_done_callback(self._background.discard)

    # -- reading the jobs file ----------------------------------------------------------------
    async def _next_job(self) -> Job | None:
        """The next job that needs a create; jobs the journal knows are handled on the way."""
        if self._jobs is None:
            return None
        async with self._read_lock:  # in file order: identical jobs numbered alike every run
            handled = 0
            while True:
                job = next(self._jobs, None)
                if job is None:
                    self._whole_file = True
                    return None
                job = self._match_legacy(await self._identifier.identify(job))
                self._lines[job.key] = job.line
                if self._needs_create(job):
                    if self.stop_reason is None:
                        return job
                    # Stopped: nothing new is sent, but the file is still read to its end,
                    # so known jobs are reported and removed ones are told apart.
                else:
                    self._seen_known(job.key)
                handled += 1
                if handled % 64 == 0:  # a long finished file must not starve the event loop
                    await asyncio.sleep(0)

    async def _submitter(self) -> None:
        while (job := await self._next_job()) is not None:
            await self._send(job)

    async def _send(self, job: Job) -> None:
        key, row = job.key, self._rows.get(job.key)
        self.counts.seen += 1
        resumed = row is not None and row.state == JobState.SUBMITTING  # our intent is on record
        if job.request is None:
            assert job.error is not None
            ext = row.external_id if row else generated_external_id(self._batch_id, key)
            await self._reject(key, job.line, ext, job.error)
            return
        own = job.request.external_task_id
        if resumed:
            assert row is not None
            ext = row.external_id
        else:
            ext = own or generated_external_id(self._batch_id, key)
        owner = self._claims.setdefault(ext, key)
        if owner != key:  # two jobs, one idempotency key: they would share a task
            error = InvalidRequestError(
                f"external_task_id {ext!r} is already used by {self._describe(owner)} of this "
                "batch: give each job its own id",
                field="external_task_id",
                value=ext,
            )
            await self._reject(key, job.line, ext, error)
            return
        request = job.request.with_external_id(ext)
        if self._watermark and not request.watermark:
            request = request.model_copy(update={"watermark": True})
        if own and not resumed and not await self._own_id_is_free(job, ext, request):
            return
        await self.journal.intent(key, line=job.line, external_id=ext, watermark=request.watermark)
        self._watermarks[key] = request.watermark
        self._uncreated.discard(key)
        result = await create_for_batch(self.client, request, ext, self._stopped)
        if result.outcome is Outcome.CREATED:
            assert result.task is not None
            task = result.task
            await self.journal.update_task(key, JobState.SUBMITTED, task)
            self._follow(key, ext, task, hold_slot=result.adopted and not task.is_terminal)
            return
        if result.outcome is Outcome.ABANDONED:
            self.counts.seen -= 1  # not reported live, like the jobs never taken, but the
            # row (kept: the create may yet land) must say why it is unfinished.
            why = {"type": "NotSubmitted", "message": f"not sent: {self.stop_reason}"}
            await self.journal.update(key, JobState.SUBMITTING, error=why)
            return
        assert result.error is not None
        if result.outcome is Outcome.REJECTED:
            await self._reject(key, job.line, ext, result.error)
            return
        if result.outcome is Outcome.FATAL:  # stop first: other submitters check it
            self.stop_submitting(f"{type(result.error).__name__}: {result.error}")
        await self._unsubmitted(key, ext, result.error)

    async def _own_id_is_free(self, job: Job, ext: str, request: MultiImageToVideoRequest) -> bool:
        """A user's own id on a job this folder never sent: ask Kling first, so a task made
        elsewhere is never taken for ours (adopted only with `adopt_existing`)."""
        key = job.key
        try:
            found = await lookup_external(self.client, ext)
        except KlingError as exc:
            if isinstance(exc, AccountError | AuthenticationError):
                self.stop_submitting(f"{type(exc).__name__}: {exc}")
            error = job_error(exc)
            error["message"] = (
                f"not sent: could not check that external_task_id {ext!r} is free "
                f"({error['message']}); the next run checks again"
            )
            await self.journal.record(
                key, line=job.line, external_id=ext, state=JobState.PENDING, error=error
            )
            self._emit(key, BatchResult(job.line, ext, JobState.PENDING, error=error))
            return False
        if found is None:
            return True
        if self._adopt:  # the user said so: record it as ours, then follow it like our own
            await self.journal.intent(
                key, line=job.line, external_id=ext, watermark=request.watermark
            )
            self._watermarks[key] = request.watermark
            await self.journal.update_task(key, JobState.SUBMITTED, found)
            self._follow(key, ext, found, hold_slot=not found.is_terminal)
            return False
        taken = InvalidRequestError(
            f"line {job.line}: external_task_id {ext!r} already names task {found.task_id} on "
            'this account (creating it again gets Kling\'s 1201 "already exists"), and this '
            "folder never created it, so it is not taken for this job: give the job a new "
            "external_task_id, or pass --adopt-existing (run_batch(..., adopt_existing=True)) "
            "to take that task over",
            field="external_task_id",
            value=ext,
        )
        await self._reject(key, job.line, ext, taken)
        return False

    async def _unsubmitted(self, key: str, ext: str, exc: KlingError) -> None:
        """The create failed or its outcome is unknown: keep the error on record (manifest,
        `status`); the row stays `submitting`, so a rerun asks Kling before creating again."""
        error = job_error(exc)
        await self.journal.update(key, JobState.SUBMITTING, error=error)
        self._emit(key, BatchResult(None, ext, JobState.SUBMITTING, error=error))

    async def _reject(self, key: str, line: int, ext: str, exc: KlingError) -> None:
        error = job_error(exc)
        await self.journal.record(
            key, line=line, external_id=ext, state=JobState.REJECTED, error=error
        )
        emit(self.client.event_hook, "job_rejected", line=line, error=error["message"])
        self._emit(key, BatchResult(line, ext, JobState.REJECTED, error=error))

    # -- following tasks ----------------------------------------------------------------------
    def _follow(self, key: str, ext: str, task: Task, *, hold_slot: bool) -> None:
        self._outstanding += 1
        self.counts.running += 1
        done = self.client.tracker.track(task)
        if hold_slot:
            self.client.gate.hold()
            done.add_done_callback(self.client._release_slot)

        def finished(future: asyncio.Future[Task]) -> None:
            if not self._closed:
                self._spawn(self._finished(key, ext, future))

        done.add_done_callback(finished)

    async def _finished(self, key: str, ext: str, done: asyncio.Future[Task]) -> None:
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
            await self.journal.update(key, JobState.SUBMITTING, error=error)
            self._emit(key, BatchResult(None, ext, JobState.SUBMITTING, error=error))
            self._settle()
            return
        task = done.result()
        if task.task_status == "succeed":
            await self.journal.update_task(key, JobState.SUCCEEDED, task)
            self._fetcher.queue(Fetch(key, ext, task, self._watermarks.get(key)))
            return
        self.counts.failed += 1
        error = {"message": task.task_status_msg or "task failed", "type": "TaskFailedError"}
        await self.journal.update_task(key, JobState.FAILED, task, error=error)
        result = BatchResult(None, ext, JobState.FAILED, task.task_id, (), error, task.expires_at)
        self._emit(key, result)
        self._settle()


def run_batch(
    client: Client,
    jobs: Iterable[MultiImageToVideoRequest] | PathLike | None,
    out_dir: PathLike,
    *,
    download_concurrency: int | None = None,
    watermark: bool = False,
    adopt_existing: bool = False,
    verify: bool = False,
) -> Batch:
    """Run many jobs (requests, or a JSONL file's path) into `out_dir`; iterate for results.

    Rerunning with the same `out_dir` resumes: a job (its content, wherever its line is) is
    never created twice, and nothing is downloaded twice. `jobs=None` only follows and fetches
    what the folder's journal knows. `watermark` asks for watermarked copies of jobs created
    from now on (it is not part of a job's identity). `adopt_existing` takes over a task that
    already exists under a job's own external_task_id (normally such a job is rejected).
    `verify` re-hashes downloaded files (their sizes are always checked). The folder is
    locked while the batch runs: `FolderBusyError` if another batch or process has it.
    """
    source: Iterable[Job] | None
    if jobs is None:
        source = None
    elif isinstance(jobs, str | os.PathLike):
        source = jobs_from_jsonl(Path(jobs))
    else:
        source = jobs_from_requests(jobs)
    return Batch(
        client,
        source,
        Path(out_dir),
        download_concurrency=download_concurrency,
        watermark=watermark,
        adopt_existing=adopt_existing,
        verify=verify,
    )
