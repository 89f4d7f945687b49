"""A batch's followed tasks: each one's end goes to the journal, then to disk or to the results."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from ._batch_create import Creator
from ._batch_feed import InFlight
from ._errors import AccountError, ApiUnreachableError, AuthenticationError, KlingError
from ._journal import JobState
from ._records import JobError, job_error
from ._results import BatchResult
from .models import Task

__all__ = ["Follower"]


class Follower(Creator):
    """The tasks side of a batch: follow each created (or resumed) task to its end."""

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
        """Follow `task` (`done`: its end, when the client began following it at its create)."""
        self._outstanding += 1
        self._inflight[key] = InFlight(watermark, line)
        self.counts.running += 1
        if done is None:
            done = self.client.follow(task, hold_slot=hold_slot)

        def finished(future: asyncio.Future[Task]) -> None:
            if not self._closed:
                self._spawn(self._finished(key, ext, future))

        done.add_done_callback(finished)

    async def _finished(self, key: str, ext: str, done: asyncio.Future[Task]) -> None:
        self.counts.running -= 1
        self.counts.finished += 1
        if done.cancelled():
            self._inflight.pop(key, None)
            self._settle()
            return
        exc = done.exception()
        if exc is not None:  # Kling lost the task, or polling hit a fatal error
            error = job_error(exc) if isinstance(exc, KlingError) else JobError(str(exc))
            if isinstance(exc, AccountError | AuthenticationError | ApiUnreachableError):
                self.stop_submitting(f"{type(exc).__name__}: {exc}")
            # SUBMITTING: a rerun asks Kling by external id and creates it again if still unknown
            await self.journal.update(key, JobState.SUBMITTING, error=error)
            self._emit(key, BatchResult(None, ext, JobState.SUBMITTING, error=error))
            self._settle()
            return
        task = done.result()
        units = self._charge(key, task)
        if task.task_status == "succeed":
            await self.journal.update_task(key, JobState.SUCCEEDED, task, units=units)
            self._to_disk(key, ext, task, None if units is None else units.spent)
            return
        self.counts.failed += 1
        error = JobError(task.task_status_msg or "task failed", "TaskFailedError")
        await self.journal.update_task(key, JobState.FAILED, task, error=error, units=units)
        result = BatchResult(None, ext, JobState.FAILED, task.task_id, (), error, task.expires_at)
        if units is not None:
            result = replace(result, units=units.spent)
        self._emit(key, result)
        self._settle()
