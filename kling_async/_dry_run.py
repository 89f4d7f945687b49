"""`kling-async run JOBS --out DIR --dry-run`: print each bad line, then what the batch would cost.

Kept apart from cli.py so the command line only adds two flags and one branch. A dry run needs
no credentials, sends nothing and writes nothing (DIR is not even created).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TextIO

from ._batch_resume import retryable
from ._budget import Budget
from ._image_cache import ProbeCache
from ._jobs import Identifier, jobs_from_jsonl
from ._journal import JobRow, JobState, Journal
from ._journal_units import replay
from ._preflight import PreflightReport, preflight
from ._prices import Kind, Units, describe, format_units, parse_price, parse_units
from ._progress import _size
from ._results import JOURNAL_NAME

__all__ = ["BudgetCheck", "check_budget", "dry_run", "price_arg", "render", "units_arg"]


def price_arg(text: str) -> tuple[str, Decimal]:
    """argparse type of `--price MODE-DURATION=UNITS`; the error names the flag and the value."""
    try:
        return parse_price(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--price {text!r}: {exc}") from None


def units_arg(text: str) -> Decimal:
    """argparse type of `--max-units U`; the error names the flag and the value."""
    try:
        return parse_units(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--max-units {text!r}: {exc}") from None


def render(report: PreflightReport) -> list[str]:
    """The dry run's output: one line per bad job, then the summary."""
    lines = [str(problem) for problem in report.problems]
    bad = len(report.bad_lines)
    lines.append(
        f"dry run of {report.source}: {report.jobs:,} jobs, {report.valid:,} valid, {bad:,} bad"
        " — nothing was sent or written"
    )
    width = max((len(str(k.kind)) for k in report.kinds), default=0)
    for k in report.kinds:
        jobs = f"{k.jobs:>9,} {'jobs' if k.jobs != 1 else 'job '}"
        lines.append(f"  {k.kind!s:<{width}}  {jobs}  {format_units(k.units):>11} units")
    for ext, used in report.duplicate_ids.items():
        lines.append(f"  duplicate external_task_id {ext!r}: lines {', '.join(map(str, used))}")
    lines.append(
        f"  images: {report.images:,} distinct to upload ({_size(report.image_bytes)}, each "
        f"probed once), {report.uploads:,} uploads, {_size(report.upload_bytes)} of base64 "
        f"sent; {report.urls:,} image URL(s) fetched by Kling"
    )
    lines.append(
        f"  estimated units: {format_units(report.units)} (per task: {describe(report.prices)})"
    )
    return lines


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """Would the batch fit its units budget? What the folder already holds (spent, reserved),
    the jobs a run would create and their estimate, and how many would be left unsent."""

    cap: Decimal | None
    folder: bool  # an existing journal was counted
    spent: Decimal
    reserved: Decimal
    to_create: int
    estimate: Decimal
    left: int  # jobs a run would leave "over budget"
    unknown: int  # finished jobs of unknown cost (no kind, no readable deduction)

    @property
    def fits(self) -> bool:
        """True when every job to create fits under the cap (always without one)."""
        return self.left == 0

    def lines(self) -> list[str]:
        """What the dry run says of the budget."""
        held = ""
        if self.folder:
            held = f"; the folder holds {format_units(self.spent)} spent, " + (
                f"{format_units(self.reserved)} reserved"
            )
        new = f"{self.to_create:,} job(s) to create, estimated {format_units(self.estimate)} units"
        lines = []
        if self.unknown:
            lines.append(
                f"  {self.unknown} finished job(s) from before units were recorded have an "
                "unknown cost (not counted)"
            )
        if self.cap is None:
            return [*lines, f"  {new}{held}"]
        budget = f"budget {format_units(self.cap)} units"
        if self.fits:
            return [*lines, f"  {budget}{held}; {new}: fits"]
        lines.append(
            f"  {budget}{held}; {new}: does not fit — {self.left:,} job(s) would be left "
            "unsubmitted (over budget)"
        )
        return lines


async def check_budget(
    jobs: Path,
    bad_lines: Container[int],
    folder: Path | None,
    cap: Decimal | None,
    prices: Mapping[str | Kind, Units],
) -> BudgetCheck:
    """Play the run's budget on paper: the folder's journal (read-only) counted as a run counts
    it, then each valid job a run would create reserved in file order, as a run reserves it."""
    budget = Budget(cap, prices)
    path = None if folder is None else folder / JOURNAL_NAME
    journal = Journal(path, readonly=True) if path is not None and path.is_file() else None
    try:
        unknown = replay(journal, budget).unknown if journal is not None else frozenset[str]()
        spent, reserved = budget.spent, budget.reserved
        to_create = left = 0
        estimate = Decimal(0)
        identifier, cache = Identifier(), ProbeCache()
        for job in jobs_from_jsonl(jobs, images=cache.parse):
            job = await identifier.identify(job)  # every line: copies are numbered in order
            if job.request is None or job.line in bad_lines or budget.held(job.key):
                continue  # rejected by the run, or reserved already (a create on record)
            row = None if journal is None else journal.get(job.key)
            if row is not None and row.key in unknown:  # its kind is known now: estimate it
                budget.restore(job.request, budget.estimate(job.request))
                unknown -= {row.key}
                continue
            if not _to_create(row):
                continue
            to_create += 1
            estimate += budget.estimate(job.request)
            left += not budget.reserve(job.key, job.request)
    finally:
        if journal is not None:
            journal.close_sync()
    folder_held = journal is not None
    return BudgetCheck(cap, folder_held, spent, reserved, to_create, estimate, left, len(unknown))


def _to_create(row: JobRow | None) -> bool:
    """Whether a run would send this job (as `Resumer._needs_create` decides, but a create of
    unknown outcome with nothing reserved counts as one to send: a dry run cannot ask Kling)."""
    if row is None or row.state in (JobState.PENDING, JobState.SUBMITTING):
        return True
    return row.state == JobState.REJECTED and retryable(row)


def dry_run(
    jobs: Path,
    prices: Sequence[tuple[str, Decimal]],
    out: TextIO | None = None,
    *,
    max_units: Decimal | None = None,
    folder: Path | None = None,
) -> int:
    """Preflight `jobs`, print the report (stdout by default); with `max_units` (or a `folder`
    holding a journal) also whether it fits the budget. 0 when every job is valid and fits."""
    report = preflight(jobs, prices=dict(prices))
    lines = render(report)
    fits = True
    has_journal = folder is not None and (folder / JOURNAL_NAME).is_file()
    if max_units is not None or has_journal:
        check = asyncio.run(
            check_budget(jobs, frozenset(report.bad_lines), folder, max_units, dict(prices))
        )
        lines += check.lines()
        fits = check.fits
    for line in lines:
        print(line, file=out or sys.stdout)
    return 0 if report.ok and fits else 1
