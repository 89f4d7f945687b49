"""Benchmark `run`, a rerun and `status` of one output folder at 100,000 jobs (issue 16).

    python benchmarks/scale.py                  # 100,000 jobs (several minutes on 2 cores)
    python benchmarks/scale.py --jobs 2000      # smaller

URL-image jobs (nothing to encode: what grows is the number of jobs), an account of 100
slots, 0.2 s tasks. Three commands on one folder, each the real `kling-async` command in its
own child process against one simulator process: `run` (creates, follows and downloads every
job), the same `run` again once all is done (it must create nothing and take seconds), and
`status`. Each is measured from inside the child (`_cli_child`: peak RSS = VmHWM of the client
process alone, CPU of all its threads) and timed from spawn to exit. Target: ≤ 150 MB each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import ROOT
from benchmarks._rows import Row
from benchmarks._sim import ACCESS_KEY, SECRET_KEY, SimProcess

__all__ = ["JOBS", "QUICK_JOBS", "Scale", "Step", "run_scale", "scale_rows"]

JOBS = 100_000
QUICK_JOBS = 1_000  # `run.py --quick`: a few seconds
CAP = 100
GEN_SECONDS = 0.2
RSS_LIMIT_MB = 150.0
#: Time compression as in the other scenarios: T stands for Kling's ~120 s.
_SCALE = GEN_SECONDS / 120.0


@dataclass(frozen=True, slots=True)
class Step:
    """One command: its wall time (spawn to exit), CPU and peak RSS of the client process."""

    name: str
    wall_s: float
    cpu_s: float
    peak_rss_mb: float


@dataclass(slots=True)
class Scale:
    """The three commands on one folder of `jobs` jobs."""

    jobs: int
    steps: dict[str, Step] = field(default_factory=dict)
    sim_peak_rss_mb: float | None = None
    creates: int = 0

    def describe(self) -> str:
        """A few lines for the report."""
        lines = [
            f"scale: {self.jobs:,} URL-image jobs, cap {CAP}, T={GEN_SECONDS:g} s; "
            f"{self.creates:,} creates in all "
            f"(simulator peak RSS {self.sim_peak_rss_mb or 0:.0f} MB)"
        ]
        for step in self.steps.values():
            lines.append(
                f"  {step.name:<7} wall {step.wall_s:8.2f} s  cpu {step.cpu_s:8.2f} s  "
                f"peak RSS {step.peak_rss_mb:6.1f} MB (target ≤ {RSS_LIMIT_MB:g})"
            )
        return "\n".join(lines)


def make_jobs(path: Path, jobs: int) -> None:
    """A job file of `jobs` lines, four distinct image URLs each."""
    with path.open("w", encoding="utf-8") as fh:
        for n in range(jobs):
            urls = [f"https://images.example.com/job-{n}/ref-{k}.png" for k in range(4)]
            fh.write(json.dumps({"images": urls, "prompt": f"scale job {n}: a calm sea"}) + "\n")


def _command(name: str, argv: list[str], work: Path, env: dict[str, str]) -> Step:
    """Run one CLI command in a measured child (exit code 0 or RuntimeError)."""
    result, log = work / f"{name}.json", work / f"{name}.log"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "benchmarks._cli_child", str(result), str(log), "--", *argv],
        cwd=ROOT,
        env=env,
        check=True,
    )
    wall = time.perf_counter() - started
    measured: dict[str, Any] = json.loads(result.read_text())
    if measured["exit_code"] != 0:
        tail = log.read_text(encoding="utf-8")[-2000:]
        raise RuntimeError(f"{name} exited {measured['exit_code']}:\n{tail}")
    return Step(name, wall, measured["cpu_s"], measured["peak_rss_mb"])


def _check_journal(out: Path, jobs: int, name: str) -> None:
    """Every job downloaded, by the journal itself (not by the CLI's wording)."""
    db = sqlite3.connect(f"file:{out / 'journal.sqlite3'}?mode=ro", uri=True)
    try:
        counts = dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
    finally:
        db.close()
    if counts != {"downloaded": jobs}:
        raise RuntimeError(f"after {name}: journal holds {counts}, not {jobs} downloaded")


def run_scale(jobs: int, work: Path) -> Scale:
    """Build the job file under `work`, then run, rerun and status one folder; check each."""
    work.mkdir(parents=True, exist_ok=True)
    job_file, out = work / "jobs.jsonl", work / "out"
    make_jobs(job_file, jobs)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")}
    env.update(KLING_ACCESS_KEY=ACCESS_KEY, KLING_SECRET_KEY=SECRET_KEY)
    scale = Scale(jobs)
    with SimProcess(
        concurrency=CAP, gen_seconds=GEN_SECONDS, log_path=work / "simulator.log"
    ) as sim:
        run = [
            "run",
            str(job_file),
            "--out",
            str(out),
            "--base-url",
            sim.url,
            "--concurrency",
            str(CAP),
            "--rps",
            f"{10 / _SCALE:g}",
            "--poll-interval",
            "0.05",
            "--no-progress",
        ]
        for name in ("run", "rerun"):
            scale.steps[name] = _command(name, run, work, env)
            _check_journal(out, jobs, name)
        scale.creates = int(sim.stats()["accepted_creates"])
        scale.sim_peak_rss_mb = sim.peak_rss_mb()
    if scale.creates != jobs:
        raise RuntimeError(f"{scale.creates} creates for {jobs} jobs")
    scale.steps["status"] = _command("status", ["status", str(out)], work, env)
    return scale


def scale_rows(scale: Scale) -> list[Row]:
    """The benchmark table's rows for this scenario (kling-async only: no baseline resumes)."""
    sec = f"7 resume and status at scale ({scale.jobs:,} URL-image jobs, cap {CAP}, "
    sec += f"T={GEN_SECONDS:g} s)"
    rows: list[Row] = []
    for step in scale.steps.values():
        label = {"run": "`run`", "rerun": "rerun of the finished batch", "status": "`status`"}
        rows.append(
            Row(
                f"client peak RSS MB, {label[step.name]}",
                step.peak_rss_mb,
                None,
                RSS_LIMIT_MB,
                "<=",
                digits=1,
                section=sec,
            )
        )
        rows.append(Row("  wall s (spawn to exit)", step.wall_s, None, digits=2, section=sec))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=JOBS, help=f"jobs (default {JOBS:,})")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--work-dir", type=Path, help="scratch dir, kept (default: a temp dir)")
    args = parser.parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="kling-scale-"))
    try:
        result = run_scale(args.jobs, work)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(result.describe())
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
