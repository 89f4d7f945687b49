"""What the command line tells about a folder's jobs: the run's summary line and `status`.

Both count every job of the jobs file, not only those the journal has rows for: a run records
how many jobs the file held (`record_jobs_in_file`, a journal meta value), and the jobs no run
has reached yet are counted as such. Jobs are counted by label (`_labels`), so a create Kling
refused reads "not submitted", never "submitting".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ._batch_io import JOURNAL_NAME, MANIFEST_NAME, BatchResult, result_from_row
from ._batch_status import BatchStatus
from ._journal import Journal
from ._labels import ALREADY_DONE, LABELS, NOT_REACHED, PROBLEM_CAUSES, cause

__all__ = [
    "JOBS_IN_FILE",
    "Overview",
    "overview",
    "record_jobs_in_file",
    "status_lines",
    "summary_line",
    "where",
]

#: Journal meta key: how many jobs the jobs file held when a run last read it.
JOBS_IN_FILE = "jobs_in_file"
#: Problem lines `status` lists before "… and N more".
SHOWN = 20


def record_jobs_in_file(out_dir: Path, count: int) -> None:
    """Store in the journal how many jobs this run's jobs file holds (creating the journal if
    needed); the folder must be locked by the caller."""
    journal = Journal(out_dir / JOURNAL_NAME)
    try:
        journal.set_meta(JOBS_IN_FILE, str(count))
    finally:
        journal.close_sync()


@dataclass(slots=True)
class Overview:
    """A folder's jobs by label, with the first problems (jobs with an error) and the causes
    of the labels whose jobs usually share one."""

    counts: Counter[str] = field(default_factory=Counter)
    causes: dict[str, Counter[str]] = field(default_factory=dict)
    problems: list[BatchResult] = field(default_factory=list)
    problem_count: int = 0
    removed: int = 0  # jobs no longer in the jobs file (their tasks are still followed)

    @property
    def total(self) -> int:
        """Every job: the jobs file's, plus those no longer in it."""
        return self.counts.total()


def overview(out_dir: Path, *, limit: int | None = SHOWN) -> Overview:
    """Read the journal once (read-only: safe beside a running batch); keep at most `limit`
    problems (None: all)."""
    journal = Journal(out_dir / JOURNAL_NAME, readonly=True)
    view = Overview()
    in_file = 0
    try:
        recorded = journal.meta(JOBS_IN_FILE)
        for row in journal.rows():
            result = result_from_row(row)
            word = result.outcome
            view.counts[word] += 1
            in_file += row.in_jobs_file
            view.removed += not row.in_jobs_file
            if word in PROBLEM_CAUSES:
                view.causes.setdefault(word, Counter())[cause(result.error)] += 1
            if row.error:
                view.problem_count += 1
                if limit is None or len(view.problems) < limit:
                    view.problems.append(result)
    finally:
        journal.close_sync()
    if recorded is not None and int(recorded) > in_file:
        view.counts[NOT_REACHED] = int(recorded) - in_file
    return view


def _counts(view: Overview, already_done: int) -> list[tuple[str, int]]:
    counts = Counter(view.counts)
    if already_done:  # reported by this run as done before it: split from "downloaded"
        counts["downloaded"] -= already_done
        counts[ALREADY_DONE] += already_done
    return [(word, counts[word]) for word in LABELS if counts[word] > 0]


def _gone(view: Overview) -> str:
    return f" ({view.removed} no longer in the jobs file)" if view.removed else ""


def summary_line(out_dir: Path, view: Overview, *, already_done: int = 0) -> str:
    """`200 jobs: 5 not submitted (AuthenticationError), 195 not reached; manifest: …`."""
    parts = []
    for word, n in _counts(view, already_done):
        causes = view.causes.get(word)
        why = ""
        if causes:
            why = (
                " ("
                + ", ".join(
                    name if len(causes) == 1 else f"{k} {name}" for name, k in causes.most_common()
                )
                + ")"
            )
        parts.append(f"{n} {word}{why}")
    jobs = "job" if view.total == 1 else "jobs"
    return (
        f"{view.total} {jobs}{_gone(view)}: {', '.join(parts)}; manifest: {out_dir / MANIFEST_NAME}"
    )


def status_lines(
    out_dir: Path, view: Overview, status: BatchStatus, *, verify: bool, show_all: bool
) -> list[str]:
    """`kling-async status DIR`: counts by label, videos to fetch, damaged files, problems."""
    lines = [f"{out_dir}: {view.total} jobs{_gone(view)}"]
    width = max(len(word) for word in LABELS)
    lines += [f"  {word:<{width}} {n}" for word, n in _counts(view, 0)]
    fetch = f"run `kling-async download {out_dir}`"
    if status.soonest_expiry is not None:
        left = status.soonest_expiry - datetime.now(UTC)
        lines.append(
            f"  {status.pending_downloads} finished video(s) not on disk; soonest expires "
            f"{status.soonest_expiry:%Y-%m-%d %H:%M} UTC (in {left.days} d) — {fetch}"
        )
    if status.unknown_expiry:
        lines.append(
            f"  {status.unknown_expiry} finished video(s) not on disk with an unknown expiry "
            f"(Kling sent no created_at; fetched first) — {fetch}"
        )
    if status.files_bad:
        how = "re-hashed" if verify else "checked by size"
        lines.append(
            f"  {len(status.files_bad)} of {status.files_checked} downloaded file(s) ({how}) "
            f"missing or damaged — {fetch} to fetch them again"
        )
        bad = status.files_bad if show_all else status.files_bad[:SHOWN]
        lines += [f"  {where(b.result)}: {b.path} {b.reason}" for b in bad]
        lines += _more(len(status.files_bad) - len(bad))
    for problem in view.problems:
        message = (problem.error or {}).get("message")
        lines.append(f"  {where(problem)}: {problem.outcome}: {message}")
    lines += _more(view.problem_count - len(view.problems))
    return lines


def _more(hidden: int) -> list[str]:
    return [f"  … and {hidden} more (--all to list every one)"] if hidden > 0 else []


def where(result: BatchResult) -> str:
    """Where a job is, for a status line: its line, or its id once it left the jobs file."""
    if result.line is None:
        return f"{result.external_task_id} (no longer in the jobs file)"
    return f"line {result.line}"
