"""A batch's results: one `BatchResult` per job, and the results.jsonl manifest made of them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from ._journal import JobRow, JobState, Journal
from ._labels import label
from ._records import FileRecord, JobError

__all__ = [
    "JOURNAL_NAME",
    "MANIFEST_NAME",
    "MAX_UNITS",
    "BatchResult",
    "result_from_row",
    "write_manifest",
]

JOURNAL_NAME = "journal.sqlite3"
MANIFEST_NAME = "results.jsonl"
#: Journal meta key: the units budget (`--max-units`) of the last run that read a jobs file
#: ("": none).
MAX_UNITS = "max_units"


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What became of one job: its final state, files (`FileRecord`: path, bytes, sha256) or
    error (`JobError`: type, message, Kling's code and request_id).

    `line` is the job's line in the jobs file (None once the job is no longer in it: its task,
    already paid for, is still followed and downloaded); `job_id` is the job's identity.
    `state` is the journal's state; `outcome` says in words what it means for this job.
    """

    line: int | None
    external_task_id: str
    state: JobState
    task_id: str | None = None
    files: tuple[FileRecord, ...] = ()
    error: JobError | None = None
    expires_at: datetime | None = None
    job_id: str = ""
    in_jobs_file: bool = True
    #: True when nothing was done for the job in this run: an earlier run brought it to
    #: `state` (a rerun reports such jobs again, e.g. as "already done").
    from_earlier_run: bool = False
    #: Units the task cost (its `final_unit_deduction`, or its estimate when Kling gave
    #: none); None while not known (not finished, never created, or finished before units).
    units: Decimal | None = None

    @property
    def outcome(self) -> str:
        """What became of the job, in words: `downloaded`, `already done` (downloaded by an
        earlier run), `failed`, `rejected`, `expired`, `pending`, `over budget` (not sent: its
        estimate did not fit under `max_units`), `not submitted` (a create
        Kling refused, or one the batch stopped before sending: never billed), `outcome
        unknown` (a create whose answer never came), `unconfirmed` (a create in flight or cut
        off), `status unknown` (submitted; following it failed), `submitted`, `to download`
        or `download failed`. Each of the last five is resolved by the next run."""
        return label(self.state, self.error, self.task_id, earlier=self.from_earlier_run)

    @property
    def ok(self) -> bool:
        """True when the job's video(s) are on disk."""
        return self.state == JobState.DOWNLOADED

    @property
    def counts_against_exit(self) -> bool:
        """Whether this result makes a run "not everything on disk" (exit code 1).

        A job still in the jobs file must be downloaded. A removed one counts only while its
        paid-for video could still reach the disk: removing a failed line ends the matter.
        """
        if self.ok:
            return False
        return self.in_jobs_file or not self.state.is_terminal

    def as_dict(self) -> dict[str, Any]:
        """The manifest line for this job."""
        return {
            "line": self.line,
            "external_task_id": self.external_task_id,
            "task_id": self.task_id,
            "state": self.state,
            "files": [record.as_dict() for record in self.files],
            "error": None if self.error is None else self.error.as_dict(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "job_id": self.job_id,
            "in_jobs_file": self.in_jobs_file,
            "units": None if self.units is None else _number(self.units),
        }


def _number(units: Decimal) -> int | float:
    """Units as a JSON number (3.5, 7)."""
    return int(units) if units == units.to_integral_value() else float(units)


def result_from_row(
    row: JobRow, *, line: int | None = None, in_file: bool | None = None, earlier: bool = False
) -> BatchResult:
    """The result a journal row stands for (seen at `line`, or in the file or not, if given;
    `earlier`: reported again as an earlier run left it)."""
    expires = datetime.fromtimestamp(row.expires_at, UTC) if row.expires_at else None
    in_file = row.in_jobs_file if in_file is None else in_file
    return BatchResult(
        (row.line if line is None else line) if in_file else None,
        row.external_id,
        row.state,
        row.task_id,
        row.files or (),
        row.error,
        expires,
        row.key,
        in_file,
        earlier,
        None if row.units is None else row.units.spent,
    )


def write_manifest(journal_path: Path, path: Path) -> None:
    """Rewrite results.jsonl from the journal (one line per job, by line), atomically.

    The rows stream from one read-only cursor (SQLite sorts them, spilling to disk if need
    be), without the tasks: memory stays the same whatever the number of jobs.
    """
    journal = Journal(journal_path, readonly=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for row in journal.rows(task=False):
                fh.write(json.dumps(result_from_row(row).as_dict()) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        journal.close_sync()
