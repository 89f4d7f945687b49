"""A journal's rows as read: `JobState` (stored as its value), `JobRow`, and `Tally` (counts
SQLite makes without handing over a row). `Journal` (`_journal`) writes them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ._records import Charge, FileRecord, JobError

__all__ = ["JobRow", "JobState", "Tally"]


class JobState(StrEnum):
    """The states a job moves through (stored as their values)."""

    PENDING = "pending"  # never sent, retried by the next run (its external id was unchecked)
    SUBMITTING = "submitting"  # intent recorded; the create's outcome may be unknown
    SUBMITTED = "submitted"  # Kling has the task; not finished yet
    SUCCEEDED = "succeeded"  # finished; video not yet (or no longer) on disk
    DOWNLOADED = "downloaded"  # verified video(s) on disk
    FAILED = "failed"  # Kling's task failed
    REJECTED = "rejected"  # invalid job or refused create: never billed
    EXPIRED = "expired"  # finished but past retention before we saved it

    @property
    def is_terminal(self) -> bool:
        """Nothing more happens to the job: downloaded, failed, rejected or expired."""
        return self in _TERMINAL


_TERMINAL = frozenset({JobState.DOWNLOADED, JobState.FAILED, JobState.REJECTED, JobState.EXPIRED})


@dataclass(frozen=True, slots=True)
class JobRow:
    """One job as the journal holds it.

    `key` is the job's identity; `line` its line at the last run that read the jobs file (None:
    no longer in it); `watermark` whether its create asked for a watermarked copy (None: not
    known, a release-0.1 row); `legacy` the release-0.1 fingerprint of a migrated row that no
    run has matched to its job yet.
    """

    key: str
    line: int | None
    external_id: str
    watermark: bool | None
    legacy: str | None
    state: JobState
    task_id: str | None
    task: dict[str, Any] | None
    expires_at: float | None
    error: JobError | None
    files: tuple[FileRecord, ...] | None
    units: Charge | None = None

    @classmethod
    def from_sql(cls, row: tuple[Any, ...]) -> JobRow:
        """Decode a `SELECT <COLUMNS>` row."""
        key, line, ext, watermark, legacy, state, task_id, task, expires, error, files, units = row
        return cls(
            key,
            line,
            ext,
            None if watermark is None else bool(watermark),
            legacy,
            JobState(state),
            task_id,
            json.loads(task) if task else None,
            expires,
            JobError.from_dict(json.loads(error)) if error else None,
            tuple(map(FileRecord.from_dict, json.loads(files))) if files else None,
            Charge.from_dict(json.loads(units)) if units else None,
        )

    @property
    def in_jobs_file(self) -> bool:
        """Whether the job was in the jobs file when a run last read it."""
        return self.line is not None


@dataclass(frozen=True, slots=True)
class Tally:
    """Jobs by state; how many are no longer in the jobs file, how many carry an error; the
    finished videos not on disk: how many, the soonest expiry (epoch s), how many unknown;
    jobs left unsent by the units budget (`over_budget`, among `errors`)."""

    counts: dict[str, int]
    removed: int
    errors: int
    pending: int
    soonest: float | None
    unknown: int
    over_budget: int = 0
