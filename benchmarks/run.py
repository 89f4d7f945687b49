"""Benchmark kling-async against a plain-asyncio baseline on one simulated Kling account.

    python benchmarks/run.py                  # everything (~28 min on 2 cores)
    python benchmarks/run.py --quick          # every scenario type at small scale (~1.5 min)
    python benchmarks/run.py --json out.json  # also write the numbers for tooling
    python benchmarks/run.py --only bodies_8,bodies_50   # a subset of the scenarios
    python benchmarks/run.py --only scale     # run, rerun and status at 100,000 jobs
    python benchmarks/run.py --only shared    # 3 and 6 processes on one account (Redis)

Prints one table (rows: metric; columns: kling-async, baseline, bound/limit, ratio). Each
client run is its own process against a fresh simulator process on 127.0.0.1; see
benchmarks/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._download import download_limit
from benchmarks._plan import KEYS, build_plan, run_plan
from benchmarks._plot import draw_charts
from benchmarks._report import footnote, machine_facts, render, summary
from benchmarks._rows import build_rows
from benchmarks.dry_run import run_dry_run
from benchmarks.scale import JOBS, QUICK_JOBS, run_scale, scale_rows
from benchmarks.shared import run_shared, shared_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small CI smoke run (~1.5 min)")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the table + notes as Markdown here")
    parser.add_argument("--work-dir", type=Path, help="scratch dir (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir (logs)")
    parser.add_argument(
        "--only",
        type=lambda text: frozenset(text.split(",")),
        help=f"comma-separated subset to run, of: {', '.join(KEYS)}, dry_run, scale, shared",
    )
    parser.add_argument(
        "--charts",
        type=Path,
        help="where the SVG charts go (default: benchmarks/ for a full run, the scratch dir "
        "for --quick); drawn only if matplotlib is installed (pip install -e '.[bench]')",
    )
    args = parser.parse_args(argv)
    extra = {"dry_run", "scale", "shared"}  # run here, not by run_plan
    if args.only and not args.only <= {*KEYS, *extra}:
        parser.error(f"--only: unknown {', '.join(sorted(args.only - {*KEYS, *extra}))}")

    plan = build_plan(args.quick)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="kling-bench-"))
    started = time.perf_counter()
    try:
        results = run_plan(
            plan, work, lambda line: print(line, file=sys.stderr, flush=True), args.only
        )
        dry = None
        if args.only is None or "dry_run" in args.only:
            dry = run_dry_run(plan.dry_run_lines, work / "dry-run")
            print(dry.describe(), file=sys.stderr, flush=True)
        scale = None
        if args.only is None or "scale" in args.only:
            scale = run_scale(QUICK_JOBS if plan.quick else JOBS, work / "scale")
            print(scale.describe(), file=sys.stderr, flush=True)
        shared = None
        if args.only is None or "shared" in args.only:
            shared = run_shared(plan.quick, work / "shared")
        charts = args.charts or (work if plan.quick else Path(__file__).resolve().parent)
        try:
            drawn = draw_charts(results.runs, charts)
        except OSError as exc:  # a chart must never cost the numbers measured for it
            print(f"charts: not drawn ({exc})", file=sys.stderr)
            drawn = []
        gone = " (removed with the scratch dir: --keep keeps them)" if charts == work else ""
        shown = ", ".join(map(str, drawn)) or "none (no chart's scenarios ran, or no matplotlib)"
        print(f"charts: {shown}{gone if drawn and not args.keep else ''}", file=sys.stderr)
    finally:
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - started
    rows = build_rows(results)
    if scale is not None:
        rows += scale_rows(scale)
    if shared is not None:
        rows += shared_rows(shared)
    if args.only:  # drop the rows of what did not run
        rows = [row for row in rows if row.ours is not None or row.base is not None]
    table = render(rows)
    notes = footnote(results)
    for (key, client), why in results.failures.items():
        notes += f"\nFAILED run (its rows show –): {key} / {client}: {why}"
    facts = machine_facts()
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = (
        f"kling-async benchmark — {facts['date']}, {facts['cpus']} CPUs, Python "
        f"{facts['python']}, {'quick' if plan.quick else 'full'} run in {elapsed:.0f} s\n"
        f"command: {command.strip()}"
    )
    if dry is not None:
        notes += f"\n{dry.describe()}"
    if scale is not None:
        notes += f"\n{scale.describe()}"
    if shared is not None:
        notes += f"\n{shared.describe()}"
    print(f"\n{header}\n\n{table}\n\n{notes}")
    if (lim := download_limit(results.downloads)) is not None:
        print(
            f"\ndownload: kling-async {lim[0]:,.0f} MB/s, bare read to disk {lim[1]:,.0f} MB/s, "
            f"sha256 on one core {lim[2]:,.0f} MB/s -> download_limit_ratio {lim[3]:.3f}"
        )
    if args.json:
        doc = summary(results, rows)
        doc["machine"]["command"] = command.strip()
        doc["machine"]["elapsed_s"] = elapsed
        if dry is not None:
            doc["dry_run"] = {**asdict(dry), "lines_per_s": dry.lines_per_s}
        if scale is not None:
            doc["scale"] = asdict(scale)
        if shared is not None:
            doc["shared"] = asdict(shared)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(f"{header}\n\n{table}\n\n{notes}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
