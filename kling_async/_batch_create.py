"""Creating a batch's jobs: read the jobs file in order, and create each new job exactly once,
only under an id this folder owns.

`Creator` (between `Resumer` and `Batch`) reads jobs one at a time (so identical lines get the
same occurrence numbers every run), hands known jobs back to the journal side, and for a new
job records the intent, then creates. An id is ours when it is derived from the folder's random
batch id, or — the user's own id — once Kling confirmed that no task has it yet; a task found
under it later (a lost answer, a crash) is then our own and is adopted. A task made elsewhere
is adopted only with `adopt_existing`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ._batch_resume import Resumer
from ._batch_submit import Outcome, create_for_batch, lookup_external
from ._errors import (
    AccountError,
    ApiUnreachableError,
    AuthenticationError,
    InvalidRequestError,
    KlingError,
)
from ._events import JobRejected, emit
from ._identity import generated_external_id, job_key
from ._jobs import Identifier, Job, Line, by_text
from ._journal import JobRow, JobState, Journal
from ._prices import format_units, kind_of
from ._records import NOT_SENT, OVER_BUDGET, Charge, JobError, job_error
from ._results import BatchResult
from .models import MultiImageToVideoRequest

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["Creator"]


class Creator(Resumer):
    """The create side of a batch (see the module docstring)."""

    def __init__(
        self,
        client: Client,
        jobs: Iterator[Job | Line] | None,
        out_dir: Path,
        *,
        verify: bool,
        watermark: bool,
        adopt_existing: bool,
    ) -> None:
        super().__init__(client, out_dir, verify=verify, watermark=watermark)
        self._jobs = jobs
        self._adopt = adopt_existing
        self._identifier = Identifier()
        self._read_lock = asyncio.Lock()

    @property
    def _jobs_given(self) -> bool:
        return self._jobs is not None

    @property
    def journal(self) -> Journal:
        """The open journal (only while the batch runs)."""
        assert self._journal is not None, "the batch is not running"
        return self._journal

    def _load(self, journal: Journal) -> None:
        super()._load(journal)
        self._identifier.occurrence = self.ledger.occurrence  # counted on disk, not in memory

    # -- reading the jobs file ----------------------------------------------------------------
    async def _next_job(self) -> tuple[Job, JobRow | None] | None:
        """The next job that needs a create (with its journal row, if any); jobs the journal
        knows are handled on the way."""
        if self._jobs is None:
            return None
        ledger = self.ledger
        async with self._read_lock:  # in file order: identical jobs numbered alike every run
            handled = 0
            while True:
                item = next(self._jobs, None)
                if item is None:
                    self._whole_file = True
                    return None
                key, job = await self._identify(item)
                row = ledger.get(key)
                if job is None and (row is None or self._needs_create(key, row)):
                    job = await self._parse(item, key)  # a known line that needs its request
                if row is None and self._legacy:
                    assert job is not None
                    job = self._match_legacy(job)
                    key, row = job.key, ledger.get(job.key)
                ledger.see(key, item.line)
                if self._needs_create(key, row):
                    assert job is not None
                    if self.stop_reason is None:
                        return job, row
                    # Stopped: nothing new is sent, but the file is still read to its end,
                    # so known jobs are reported and removed ones are told apart.
                else:
                    assert row is not None
                    self._seen_known(item.line, row)
                handled += 1
                if handled % 64 == 0:  # a long finished file must not starve the event loop
                    await asyncio.sleep(0)
                await self._room_for_results()  # nor outrun whoever reads the results

    async def _identify(self, item: Job | Line) -> tuple[str, Job | None]:
        """A job's identity, and the job parsed (None: a line recognised by its text, which
        need not be parsed unless it must be sent)."""
        ledger = self.ledger
        if isinstance(item, Line) and (content := ledger.content(item.digest)) is not None:
            return job_key(content, ledger.occurrence(content)), None
        job = item.parse() if isinstance(item, Line) else item
        job, content = await self._identifier.content(job)
        if isinstance(item, Line) and by_text(job):
            ledger.remember(item.digest, content)
        key = job_key(content, ledger.occurrence(content))
        return key, replace(job, key=key)

    async def _parse(self, item: Job | Line, key: str) -> Job:
        """Parse a line recognised by its text: the same text, the same job (and identity)."""
        job = item.parse() if isinstance(item, Line) else item
        job, _ = await self._identifier.content(job)  # checks it as any line read is checked
        return replace(job, key=key)

    async def _submitter(self) -> None:
        while (item := await self._next_job()) is not None:
            await self._send(*item)

    async def _send(self, job: Job, row: JobRow | None) -> None:
        key = job.key
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
        owner = self.ledger.claim(ext, key)
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
        if not self.budget.reserve(key, request):  # atomic: no await since the check
            await self._over_budget(key, job.line, ext, request)
            return
        await self._intent(job, ext, request)
        if resumed:  # Kling had no task under it: sent now
            self.ledger.set_uncreated(key, False)
        result = await create_for_batch(self.client, request, ext, self._stopped)
        if result.outcome is Outcome.CREATED:
            assert result.task is not None
            task = result.task
            await self.journal.update_task(key, JobState.SUBMITTED, task)
            hold = result.adopted and not task.is_terminal
            wm = request.watermark
            self._follow(
                key, ext, task, hold_slot=hold, watermark=wm, line=job.line, done=result.done
            )
            return
        if result.outcome is Outcome.ABANDONED:
            # Not reported live, like the jobs never taken, but the row (kept: the create
            # may yet land) must say why it is unfinished.
            why = JobError(f"not sent: {self.stop_reason}", NOT_SENT)
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
            if isinstance(exc, AccountError | AuthenticationError | ApiUnreachableError):
                self.stop_submitting(f"{type(exc).__name__}: {exc}")
            error = job_error(exc)
            error = replace(
                error,
                message=f"not sent: could not check that external_task_id {ext!r} is free "
                f"({error.message}); the next run checks again",
            )
            await self.journal.record(
                key, line=job.line, external_id=ext, state=JobState.PENDING, error=error
            )
            self._emit(key, BatchResult(job.line, ext, JobState.PENDING, error=error))
            return False
        if found is None:
            return True
        if self._adopt:  # the user said so: record it as ours, then follow it like our own
            self.budget.reserve(key, request, force=True)  # it exists: it is paid for anyway
            await self._intent(job, ext, request)
            await self.journal.update_task(key, JobState.SUBMITTED, found)
            hold = not found.is_terminal
            wm = request.watermark
            self._follow(key, ext, found, hold_slot=hold, watermark=wm, line=job.line)
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

    async def _intent(self, job: Job, ext: str, request: MultiImageToVideoRequest) -> None:
        """Record the intent to create, with the units reserved for it (the budget's record)."""
        held = self.budget.held(job.key)
        await self.journal.intent(
            job.key,
            line=job.line,
            external_id=ext,
            watermark=request.watermark,
            units=None if held is None else Charge(*held),
        )

    async def _over_budget(
        self, key: str, line: int, ext: str, request: MultiImageToVideoRequest
    ) -> None:
        """Not sent: its estimate does not fit under the cap. Pending, so a rerun (with a
        higher cap, or after tasks in flight settled for less) sends it."""
        estimate = format_units(self.budget.estimate(request))
        error = JobError(
            f"not sent: its estimate ({estimate} units, {kind_of(request)}) would exceed the "
            f"units budget: {self.budget.state()}",
            OVER_BUDGET,
        )
        self.over_budget += 1
        await self.journal.record(
            key, line=line, external_id=ext, state=JobState.PENDING, error=error
        )
        self._emit(key, BatchResult(line, ext, JobState.PENDING, error=error))

    async def _reject(self, key: str, line: int, ext: str, exc: KlingError) -> None:
        self.budget.release(key)  # never created: nothing is billed
        error = job_error(exc)
        await self.journal.record(
            key, line=line, external_id=ext, state=JobState.REJECTED, error=error
        )
        emit(self.client.event_hook, JobRejected(line, error.message))
        self._emit(key, BatchResult(line, ext, JobState.REJECTED, error=error))
