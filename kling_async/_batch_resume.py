"""What a batch knows before it reads the jobs file: the journal's rows, by identity, a page
at a time.

`Resumer` (between `Feeder` and `Creator`) picks up what an earlier run left (running
tasks, videos to fetch, creates whose outcome is unknown), checks every downloaded file
against the disk, matches release-0.1 rows to their jobs, and at the end reports the jobs
that are no longer in the jobs file. It never holds the journal: rows are read in bounded
pages through the run's ledger (`_journal_run`), which also keeps the run's own
bookkeeping, and a job takes memory only while it is in flight (followed at Kling, or
queued or under way to disk). Videos to fetch go to the download queue through `Feeder`.

The units budget belongs to the folder: each job's row keeps the units reserved before its
create and those spent when its task ended (`Charge`), so a run starts from what the journal
says was spent (settled) and is in flight (reserved, whatever the cap: it is being paid for).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Container
from dataclasses import replace

from ._batch_feed import Feeder, result_as
from ._batch_submit import lookup_external
from ._errors import AccountError, ApiUnreachableError, AuthenticationError, KlingError
from ._events import UnitsOvershoot, emit
from ._jobs import Job, legacy_fingerprint
from ._journal import JobRow, JobState, Journal
from ._journal_run import RunLedger
from ._journal_units import replay
from ._prices import deduction, format_units
from ._records import NOT_SENT, Charge, JobError
from ._results import MAX_UNITS, result_from_row
from .models import Task

__all__ = ["Resumer", "retryable"]


def retryable(row: JobRow) -> bool:
    """A rejection we made (invalid job, id taken or in use) is decided again every run; one
    Kling made (its error code is on record) stands while the job is unchanged."""
    return row.error is None or row.error.code is None


class Resumer(Feeder):
    """The journal side of a batch (see the module docstring)."""

    #: Finished jobs from before units were recorded whose cost is unknown (not counted).
    units_unknown = 0

    # Provided by Follower (`_follow`) and Batch.
    async def _room_for_results(self) -> None:
        raise NotImplementedError

    def _follow(
        self,
        key: str,
        ext: str,
        task: Task,
        *,
        hold_slot: bool,
        watermark: bool | None,
        line: int | None = None,
        done: asyncio.Future[Task] | None = None,
    ) -> None:
        raise NotImplementedError

    def stop_submitting(self, reason: str) -> None:
        """Submit nothing more (see Batch)."""
        raise NotImplementedError

    async def _unsubmitted(self, key: str, ext: str, exc: KlingError) -> None:
        raise NotImplementedError

    # -- start-up -----------------------------------------------------------------------------
    def _load(self, journal: Journal) -> None:
        self._batch_id = journal.meta("batch_id") or uuid.uuid4().hex
        journal.set_meta("batch_id", self._batch_id)
        self._ledger = RunLedger(journal.path)
        self._legacy = self._ledger.has_legacy()
        if self._jobs_given:  # the cap of the last run that read a jobs file (for `status`)
            cap = self.budget.cap
            journal.set_meta(MAX_UNITS, "" if cap is None else format_units(cap))
        self.units_unknown = len(replay(journal, self.budget).unknown)

    @property
    def _jobs_given(self) -> bool:
        raise NotImplementedError  # Creator: whether this run reads a jobs file

    def _charge(self, key: str, task: Task) -> Charge | None:
        """Settle a finished task's units (its `final_unit_deduction`); None for a task that
        holds no reservation (created before units were recorded: its deduction, if readable,
        is counted without a kind, as a later open backfills it from the stored task)."""
        if self.budget.held(key) is None:
            if (units := deduction(task.final_unit_deduction)) is not None:
                self.budget.restore(None, units)  # once: a followed task ends once per run
            return None
        done = self.budget.settle(key, deduction(task.final_unit_deduction))
        if done.overshoot:
            raised = None if done.raised_to is None else str(done.raised_to)
            over = UnitsOvershoot(
                task.task_id, str(done.kind), str(done.units), str(done.estimate), raised
            )
            emit(self.client.event_hook, over)
            if done.raised_to is not None:
                self.overshoots.append(done)
        return Charge(done.kind, done.estimate, done.units)

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

    async def _resolve(self, row: JobRow) -> None:
        """A create whose outcome is unknown: the journal holds our intent, so a task under
        its id is ours (adopted); no task means it was never made (sent when its job is read)."""
        try:
            found = await lookup_external(self.client, row.external_id)
        except KlingError as exc:  # cannot tell if it exists: a later run asks again
            if isinstance(exc, AccountError | AuthenticationError | ApiUnreachableError):
                self.stop_submitting(f"{type(exc).__name__}: {exc}")
            await self._unsubmitted(row.key, row.external_id, exc)
            return
        if found is None:  # sent again when its job is read, if the budget allows then
            self.ledger.set_uncreated(row.key, True)
            self.budget.release(row.key)
            return
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
        flight = self._inflight.get(old)
        if flight is not None and flight.watermark is None and job.request is not None:
            watermark = job.request.watermark or self._watermark
            self._inflight[old] = flight._replace(watermark=watermark)
        return replace(job, key=old)

    def _needs_create(self, key: str, row: JobRow | None) -> bool:
        if row is None or row.state == JobState.PENDING:
            return True
        if row.state == JobState.SUBMITTING:
            return self.ledger.uncreated(key)
        return row.state == JobState.REJECTED and retryable(row)

    def _seen_known(self, line: int, row: JobRow) -> None:
        """A job the journal knows, read again at `line`: report it if it is done (and not
        reported yet)."""
        if not row.state.is_terminal or row.key in self._inflight:
            return
        if self.ledger.report(row.key):  # the first report of it this run
            self._emit(
                row.key, result_from_row(row, line=line, in_file=True, earlier=True), line=line
            )

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
                        error = JobError("not created yet: `run` sends it", NOT_SENT)
                        self._emit(key, result_as(row, JobState.SUBMITTING, error))
                    elif row.state.is_terminal or row.state == JobState.PENDING:
                        self._emit(key, result_from_row(row, earlier=True))
                elif row.state.is_terminal and row.state != JobState.REJECTED:
                    self._emit(key, result_from_row(row, in_file=False, earlier=True))
            await self._room_for_results()
