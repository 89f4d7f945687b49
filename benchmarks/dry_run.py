"""Benchmark `kling-async run JOBS --out DIR --dry-run` on a big job file that shares a few images.

    python benchmarks/dry_run.py                # 10,000 lines
    python benchmarks/dry_run.py --lines 2000   # smaller
    python benchmarks/dry_run.py --max-units 100  # with the budget check (a second pass)

The file's jobs use one to four of four 2 MB PNG files (so each file is named thousands of
times and must be probed once), every mode and duration, and one missing image per thousand
lines (so the bad-line path runs too). The dry run is the real command, a child process with no
KLING_* variables, timed from spawn to exit: interpreter start-up included. Target: well under
a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import make_png

__all__ = ["DryRun", "make_jobs", "run_dry_run"]

IMAGES = 4
IMAGE_BYTES = 2_000_000


@dataclass(frozen=True, slots=True)
class DryRun:
    """One timed dry run."""

    lines: int
    bad_lines: int
    wall_s: float
    cpu_s: float  # the child's user + system time

    @property
    def lines_per_s(self) -> float:
        """Throughput over the whole command."""
        return self.lines / self.wall_s if self.wall_s else 0.0

    def describe(self) -> str:
        """One line for the report."""
        return (
            f"dry run: {self.lines:,} lines sharing {IMAGES} images ({self.bad_lines} bad) in "
            f"{self.wall_s:.2f} s wall, {self.cpu_s:.2f} s CPU: {self.lines_per_s:,.0f} lines/s "
            f"(target: well under 60 s)"
        )


def make_jobs(folder: Path, lines: int, seed: int = 13) -> tuple[Path, int]:
    """Write the shared images and a job file of `lines` lines; (path, number of bad lines)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"shared-{k}.png" for k in range(IMAGES)]
    for name in names:
        make_png(folder / name, IMAGE_BYTES)
    rng = random.Random(seed)
    bad = 0
    with (folder / "jobs.jsonl").open("w", encoding="utf-8") as fh:
        for n in range(1, lines + 1):
            images = rng.sample(names, rng.randint(1, IMAGES))
            if n % 1000 == 500:
                images[0], bad = "missing.png", bad + 1
            job = {
                "images": images,
                "prompt": f"shot {n}: a slow push-in on the product, soft light",
                "mode": rng.choice(["std", "pro"]),
                "duration": rng.choice(["5", "10"]),
                "aspect_ratio": rng.choice(["16:9", "9:16", "1:1"]),
            }
            fh.write(json.dumps(job) + "\n")
    return folder / "jobs.jsonl", bad


def run_dry_run(lines: int, work: Path, max_units: str | None = None) -> DryRun:
    """Build the file under `work`, run the dry-run command once, check it, time it (with
    `max_units`, the budget check too: the jobs are read again, each identified)."""
    jobs, bad = make_jobs(work, lines)
    out = work / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "kling_async", "run", str(jobs), "--out", str(out), "--dry-run"]
        + (["--max-units", max_units] if max_units else []),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    expected = f"{lines:,} jobs, {lines - bad:,} valid, {bad:,} bad"
    checked = not max_units or "job(s) to create, estimated" in proc.stdout
    if proc.returncode != (1 if bad else 0) or expected not in proc.stdout or out.exists():
        raise RuntimeError(f"dry run misbehaved (rc {proc.returncode}):\n{proc.stdout[-2000:]}")
    if not checked:
        raise RuntimeError(f"no budget line:\n{proc.stdout[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return DryRun(lines, bad, wall, cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000, help="job lines (default 10,000)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--max-units", help="also check the estimate against this budget")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="kling-dry-run-"))
    try:
        result = run_dry_run(args.lines, work, args.max_units)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(result.describe())
    if args.json:
        args.json.write_text(json.dumps({**asdict(result), "lines_per_s": result.lines_per_s}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
