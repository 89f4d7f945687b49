"""Benchmark kling-async against a plain-asyncio baseline on one simulated Kling account.

    python benchmarks/run.py                  # everything (~15-20 min on 2 cores)
    python benchmarks/run.py --quick          # every scenario type at small scale (< 60 s)
    python benchmarks/run.py --json out.json  # also write the numbers for tooling

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
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._download import download_limit
from benchmarks._plan import build_plan, run_plan
from benchmarks._report import footnote, machine_facts, render, summary
from benchmarks._rows import build_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small CI smoke run (< 60 s)")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the table + notes as Markdown here")
    parser.add_argument("--work-dir", type=Path, help="scratch dir (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir (logs)")
    args = parser.parse_args(argv)

    plan = build_plan(args.quick)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="kling-bench-"))
    started = time.perf_counter()
    try:
        results = run_plan(plan, work, lambda line: print(line, file=sys.stderr, flush=True))
    finally:
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - started
    rows = build_rows(results)
    table = render(rows)
    notes = footnote(results)
    facts = machine_facts()
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = (
        f"kling-async benchmark — {facts['date']}, {facts['cpus']} CPUs, Python "
        f"{facts['python']}, {'quick' if plan.quick else 'full'} run in {elapsed:.0f} s\n"
        f"command: {command.strip()}"
    )
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
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(f"{header}\n\n{table}\n\n{notes}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
