"""What the command line tells about a folder's jobs: the run's summary line and `status`.

Both count every job of the jobs file, not only those the journal has rows for: a run records
how many jobs the file held (`record_jobs_in_file`, a journal meta value), and the jobs no run
has reached yet are counted as such. Jobs are counted by label (`_labels`), so a create Kling
refused reads "not submitted", never "submitting". The counts, problems and file checks are
`batch_status`'s; only the rows whose stored state needs a second look are read here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ._batch_status import BatchStatus
from ._journal import JobState, Journal
from ._labels import ALREADY_DONE, LABELS, NOT_REACHED, PROBLEM_CAUSES, cause, label
from ._prices import format_units
from ._results import JOURNAL_NAME, MANIFEST_NAME, BatchResult

if TYPE_CHECKING:
    from ._batch import Batch

__all__ = [
    "JOBS_IN_FILE",
    "Overview",
    "overview",
    "record_jobs_in_file",
    "status_lines",
    "summary_line",
    "units_lines",
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
    """A folder's jobs by label (every job of the jobs file, plus those no longer in it), the
    causes of the labels whose jobs usually share one, and the journal's `BatchStatus`."""

    status: BatchStatus
    counts: Counter[str] = field(default_factory=Counter)
    causes: dict[str, Counter[str]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Every job: the jobs file's, plus those no longer in it."""
        return self.counts.total()


def overview(out_dir: Path, status: BatchStatus) -> Overview:
    """Label the jobs `status` counts by state. Only the rows whose state alone does not say
    what they are (`submitting`, `succeeded`: few, in a batch that ran) are read again, plus
    the journal's record of how many jobs the file held (read-only: safe beside a batch)."""
    view = Overview(status, Counter(status.counts))
    journal = Journal(out_dir / JOURNAL_NAME, readonly=True)
    try:
        recorded = journal.meta(JOBS_IN_FILE)
        for state in (JobState.SUBMITTING, JobState.SUCCEEDED, JobState.PENDING):
            for row in journal.rows(state, task=False):
                word = label(row.state, row.error, row.task_id)
                view.counts[state] -= 1
                view.counts[word] += 1
                if word in PROBLEM_CAUSES:
                    view.causes.setdefault(word, Counter())[cause(row.error)] += 1
    finally:
        journal.close_sync()
    in_file = status.total - status.removed
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
    removed = view.status.removed
    return f" ({removed} no longer in the jobs file)" if removed else ""


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


def status_lines(out_dir: Path, view: Overview, *, verify: bool, show_all: bool) -> list[str]:
    """`kling-async status DIR`: counts by label, videos to fetch, damaged files, problems
    (the first `SHOWN` of each list, unless `show_all`)."""
    status = view.status
    lines = [f"{out_dir}: {view.total} jobs{_gone(view)}"]
    width = max(len(word) for word in LABELS)
    lines += [f"  {word:<{width}} {n}" for word, n in _counts(view, 0)]
    lines.append(f"  units: {status.units}")
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
    shown = None if show_all else SHOWN
    if status.files_bad:
        how = "re-hashed" if verify else "checked by size"
        lines.append(
            f"  {status.files_bad_count} of {status.files_checked} downloaded file(s) ({how}) "
            f"missing or damaged — {fetch} to fetch them again"
        )
        bad = status.files_bad[:shown]
        lines += [f"  {where(b.result)}: {b.path} {b.reason}" for b in bad]
        lines += _more(status.files_bad_count - len(bad))  # batch_status keeps only so many
    problems = status.problems[:shown]
    for problem in problems:
        message = problem.error.message if problem.error else None
        lines.append(f"  {where(problem)}: {problem.outcome}: {message}")
    lines += _more(status.problem_count - len(problems))
    if status.over_budget_count:  # not a fault of the jobs: a higher cap sends them
        lines.append(
            f"  not submitted, over budget: {status.over_budget_count} job(s) — rerun with a"
            " higher --max-units to send them"
        )
        over = status.over_budget[:shown]
        lines += [f"    {where(job)}: {_estimate(job)}" for job in over]
        lines += [f"  {more}" for more in _more(status.over_budget_count - len(over))]
    return lines


def _estimate(job: BatchResult) -> str:
    """ "its estimate (7 units, kling-v1-6 pro 10 s)", from the reason the batch recorded."""
    message = job.error.message if job.error else ""
    start, end = message.find("its estimate"), message.find(" would exceed")
    return message[start:end] if 0 <= start < end else message


def _more(hidden: int) -> list[str]:
    return [f"  … and {hidden} more (--all to list every one)"] if hidden > 0 else []


def where(result: BatchResult) -> str:
    """Where a job is, for a status line: its line, or its id once it left the jobs file."""
    if result.line is None:
        return f"{result.external_task_id} (no longer in the jobs file)"
    return f"line {result.line}"


def units_lines(batch: Batch) -> list[str]:
    """What a run says of units: each estimate a task's real cost raised, and the budget
    when it kept jobs from being sent."""
    lines = [
        f"units: a {s.kind} task cost {format_units(s.units)} (estimated "
        f"{format_units(s.estimate)}): its estimate is now {format_units(s.units)}"
        for s in batch.overshoots
    ]
    if batch.units_unknown and batch.budget.cap is not None:
        lines.append(
            f"units: {batch.units_unknown} finished job(s) from before units were recorded have"
            " an unknown cost (no readable final_unit_deduction): not counted against the budget"
        )
    if batch.over_budget:
        lines.append(
            f"units budget reached: {batch.budget.state()}; {batch.over_budget} job(s) not "
            "submitted (over budget): rerun with a higher --max-units to go on"
        )
    return lines
