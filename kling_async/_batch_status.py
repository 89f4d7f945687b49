"""`batch_status`: what an output folder holds, read without writing (safe beside a running
batch), with every recorded video checked against the disk, in memory that does not grow with
the number of jobs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from ._budget import Budget
from ._folder import OutputFolderError
from ._journal import JobState, Journal
from ._journal_units import replay
from ._labels import OVER_BUDGET_LABEL
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
    #: Finished jobs from before units were recorded whose task carries no readable
    #: deduction: their cost is unknown and not in `units_spent`.
    units_unknown: int = 0
    #: Jobs not sent because their estimate did not fit the units budget (not counted in
    #: `problems`/`problem_count`: nothing is wrong with them; `over_budget` keeps `limit`).
    over_budget: list[BatchResult] = field(default_factory=list)
    over_budget_count: int = 0

    @property
    def units(self) -> str:
        """`7 spent, 3.5 reserved, 10 budget (units)` (`no cap` without a budget), plus how
        many finished jobs have an unknown cost, if any."""
        cap = "no cap" if self.max_units is None else f"{format_units(self.max_units)} budget"
        spent, reserved = format_units(self.units_spent), format_units(self.units_reserved)
        unknown = ""
        if self.units_unknown:
            unknown = (
                f"; {self.units_unknown} finished job(s) of unknown cost (recorded before units"
                " were, with no readable final_unit_deduction: not counted)"
            )
        return f"{spent} spent, {reserved} reserved, {cap} (units){unknown}"

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
        problems, over_budget = _problems(journal, limit)
        units = Budget()
        unknown = len(replay(journal, units).unknown)
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
        problem_count=tally.errors - tally.over_budget,
        files_bad_count=bad_count,
        units_spent=units.spent,
        units_reserved=units.reserved,
        max_units=parse_units(cap) if cap else None,
        units_unknown=unknown,
        over_budget=over_budget,
        over_budget_count=tally.over_budget,
    )


def _problems(journal: Journal, limit: int | None) -> tuple[list[BatchResult], list[BatchResult]]:
    """The first `limit` jobs with an error, and apart from them the first `limit` left unsent
    by the units budget (not a fault of theirs: a higher cap sends them)."""
    problems: list[BatchResult] = []
    over: list[BatchResult] = []
    for row in journal.rows(task=False, with_error=True):
        result = result_from_row(row)
        kept = over if result.outcome == OVER_BUDGET_LABEL else problems
        if limit is None or len(kept) < limit:
            kept.append(result)
        elif limit is not None and len(problems) >= limit and len(over) >= limit:
            break
    return problems, over
