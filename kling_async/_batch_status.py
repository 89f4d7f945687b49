"""`batch_status`: what an output folder holds, read without writing (safe beside a running
batch), with every recorded video checked against the disk, in memory that does not grow with
the number of jobs."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from ._folder import OutputFolderError
from ._journal import JobState, Journal
from ._prices import format_units, parse_units
from ._records import check_file
from ._results import JOURNAL_NAME, MAX_UNITS, BatchResult, result_from_row

__all__ = ["BatchStatus", "FileProblem", "batch_status"]


@dataclass(frozen=True, slots=True)
class FileProblem:
    """A downloaded video that is not on disk as recorded: which job, which file, why."""

    result: BatchResult
    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class BatchStatus:
    """What a batch's journal says (counts by state, problems, the soonest video expiry) and
    what the disk says (`files_bad`: downloaded videos missing or damaged)."""

    counts: dict[str, int]
    problems: list[BatchResult]
    pending_downloads: int
    soonest_expiry: datetime | None
    #: Of the pending downloads, how many have an unknown expiry (Kling sent no created_at).
    unknown_expiry: int = 0
    files_bad: list[FileProblem] = field(default_factory=list)
    removed: int = 0  # jobs no longer in the jobs file (their tasks are still followed)
    files_checked: int = 0
    #: Every job with an error (`problems` keeps the first `limit` of them).
    problem_count: int = 0
    #: Every downloaded file missing or damaged (`files_bad` keeps the first `limit`).
    files_bad_count: int = 0
    #: Units spent by finished tasks, and reserved (their estimates) for tasks in flight or
    #: whose create's outcome is unknown; `max_units`: the last run's cap (None: none).
    units_spent: Decimal = Decimal(0)
    units_reserved: Decimal = Decimal(0)
    max_units: Decimal | None = None

    @property
    def units(self) -> str:
        """`7 spent, 3.5 reserved, 10 budget (units)` (`no cap` without a budget)."""
        cap = "no cap" if self.max_units is None else f"{format_units(self.max_units)} budget"
        spent, reserved = format_units(self.units_spent), format_units(self.units_reserved)
        return f"{spent} spent, {reserved} reserved, {cap} (units)"

    @property
    def total(self) -> int:
        """Jobs the journal knows."""
        return sum(self.counts.values())


def batch_status(out_dir: Path, *, verify: bool = False, limit: int | None = 1000) -> BatchStatus:
    """Read `out_dir`'s journal and check each downloaded file exists with its recorded size
    (`verify=True` also re-hashes it). Never writes: safe while a batch runs.

    Memory does not grow with the number of jobs: SQLite counts, the rows stream past, and
    at most `limit` problems and bad files are kept (the first by line; `problem_count` and
    `files_bad_count` count them all, results.jsonl lists every job). `limit=None` keeps
    every one (memory then grows with the problems).
    """
    out_dir = Path(out_dir)
    path = out_dir / JOURNAL_NAME
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputFolderError(f"output folder {out_dir} is a file, not a folder")
    if not path.exists():
        raise FileNotFoundError(f"no batch journal at {path}")
    journal = Journal(path, readonly=True)
    try:
        tally = journal.tally()
        bad: list[FileProblem] = []
        checked = bad_count = 0
        for row in journal.rows(JobState.DOWNLOADED, task=False):
            for record in row.files or ():
                checked += 1
                if reason := check_file(out_dir, record, rehash=verify):
                    bad_count += 1
                    if limit is None or len(bad) < limit:
                        problem = FileProblem(result_from_row(row), record.path, reason)
                        bad.append(problem)
        errors = itertools.islice(journal.rows(task=False, with_error=True), limit)
        problems = [result_from_row(row) for row in errors]
        spent = reserved = Decimal(0)
        for _, _, charge in journal.charges():
            if charge.spent is None:
                reserved += charge.reserved
            else:
                spent += charge.spent
        cap = journal.meta(MAX_UNITS)
    finally:
        journal.close_sync()
    soonest = datetime.fromtimestamp(tally.soonest, UTC) if tally.soonest else None
    return BatchStatus(
        tally.counts,
        problems,
        tally.pending,
        soonest,
        tally.unknown,
        bad,
        tally.removed,
        checked,
        problem_count=tally.errors,
        files_bad_count=bad_count,
        units_spent=spent,
        units_reserved=reserved,
        max_units=parse_units(cap) if cap else None,
    )
