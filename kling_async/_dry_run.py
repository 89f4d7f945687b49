"""`kling-async run JOBS --out DIR --dry-run`: print each bad line, then what the batch would cost.

Kept apart from cli.py so the command line only adds two flags and one branch. A dry run needs
no credentials, sends nothing and writes nothing (DIR is not even created).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import TextIO

from ._preflight import PreflightReport, preflight
from ._prices import describe, format_units, parse_price, parse_units
from ._progress import _size

__all__ = ["dry_run", "price_arg", "render"]


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


def dry_run(jobs: Path, prices: Sequence[tuple[str, Decimal]], out: TextIO | None = None) -> int:
    """Preflight `jobs`, print the report (stdout by default); 0 when every job is valid, else 1."""
    report = preflight(jobs, prices=dict(prices))
    for line in render(report):
        print(line, file=out or sys.stdout)
    return 0 if report.ok else 1
