"""`batch_status`: what an output folder holds, read without writing (safe beside a running
batch), with every recorded video checked against the disk."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ._batch_io import JOURNAL_NAME, BatchResult, check_file, result_from_row
from ._folder import OutputFolderError
from ._journal import JobState, Journal

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

    @property
    def total(self) -> int:
        """Jobs the journal knows."""
        return sum(self.counts.values())


def batch_status(out_dir: Path, *, verify: bool = False) -> BatchStatus:
    """Read `out_dir`'s journal and check each downloaded file exists with its recorded size
    (`verify=True` also re-hashes it). Never writes: safe while a batch runs."""
    out_dir = Path(out_dir)
    path = out_dir / JOURNAL_NAME
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputFolderError(f"output folder {out_dir} is a file, not a folder")
    if not path.exists():
        raise FileNotFoundError(f"no batch journal at {path}")
    journal = Journal(path, readonly=True)
    try:
        rows = list(journal.rows())
    finally:
        journal.close_sync()
    counts: dict[str, int] = {}
    bad: list[FileProblem] = []
    checked = 0
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
        if row.state != JobState.DOWNLOADED:
            continue
        for record in row.files or ():
            checked += 1
            if reason := check_file(out_dir, record, rehash=verify):
                bad.append(FileProblem(result_from_row(row), str(record.get("path")), reason))
    problems = [result_from_row(r) for r in rows if r.error]
    pending = [r.expires_at for r in rows if r.state == JobState.SUCCEEDED]
    waiting = [at for at in pending if at]
    soonest = datetime.fromtimestamp(min(waiting), UTC) if waiting else None
    removed = sum(not r.in_jobs_file for r in rows)
    unknown = len(pending) - len(waiting)
    return BatchStatus(counts, problems, len(pending), soonest, unknown, bad, removed, checked)
