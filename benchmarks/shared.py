"""Several `kling-async run` processes on one account, with and without the Redis coordinator.

    python benchmarks/shared.py            # 3 and 6 processes, 210 jobs, N=10, T=2 s (~5 min)
    python benchmarks/shared.py --quick    # 48 jobs, N=4, T=1 s, 3 processes only (~1 min)
    python benchmarks/run.py --only shared # the same, as rows of the benchmark table

Each process is told `--concurrency N` on an account of N slots and gets an equal share of the
jobs (real CLI processes, one simulator process, one redis-server). As in every other scenario,
the client's time constants are scaled by T / 120 s (generation runs ~60× faster than Kling's):
`--rps` ÷ that factor when `Limits` has a default ceiling (10 before issue 15: `--rps 600`;
none since), `--poll-interval`, and the retry waits (`_shared_child`). Measured on
the simulator:
- refused creates (1303) per job;
- makespan ÷ bound: from the first create to the last video on disk, over the ideal
  max(ΣT/N, max T) for the generation times the simulator actually drew (`fluid_bound`, the
  other scenarios' bound);
- status requests (list + query) per job, over those of ONE process running all the jobs;
- where the time goes (`Timing`): first create after start, the refill gap (a task's end to
  the create that took its slot), the last wave, last end to last video on disk, and what a
  zero-latency greedy client would reach on the same durations (the last wave's share).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import REAL_GEN_SECONDS, ROOT
from benchmarks._rows import Row
from benchmarks._scenarios import fluid_bound, greedy_makespan
from benchmarks._sim import ACCESS_KEY, SECRET_KEY, SimProcess
from kling_async import Limits, PollPolicy

__all__ = ["Shared", "run_shared", "shared_rows"]

#: (jobs, N, T): the full run as the main benchmark's 200-job scenarios (N = 10, T = 2 s), the
#: quick one small (its last wave alone keeps makespan ÷ bound well above 1.05).
FULL, QUICK = (210, 10, 2.0), (48, 4, 1.0)
#: The full run shows 3 and 6 processes; the CI smoke run (--quick) only 3, to keep CI short.
PROCS, QUICK_PROCS = (3, 6), (3,)
DEFAULTS = Limits()


@dataclass
class Outcome:
    """One run: `procs` processes (coordinated or not) on one fresh account."""

    procs: int
    coordinated: bool
    jobs: int
    cap: int
    refused: int
    status_requests: int
    creates: int
    peak_running: int
    makespan_s: float
    bound_s: float
    timing: Timing = field(default_factory=lambda: Timing())

    @property
    def refused_per_job(self) -> float:
        """1303 answers per job."""
        return self.refused / self.jobs

    @property
    def makespan_ratio(self) -> float:
        """Makespan over the ideal one."""
        return self.makespan_s / self.bound_s

    @property
    def status_per_job(self) -> float:
        """List and query requests per job."""
        return self.status_requests / self.jobs


@dataclass
class Timing:
    """Where the time goes, in seconds (from the simulator's per-task timestamps)."""

    first_create: float = 0.0  # the first create after the processes were started
    refill_mean: float = 0.0  # a task's end to the next create (the (N+j)-th after the j-th end)
    refill_p90: float = 0.0
    lost_slot_s: float = 0.0  # Σ refill gaps ÷ N: the makespan those gaps cost
    last_wave: float = 0.0  # the last create to the last task's end
    to_disk: float = 0.0  # the last task's end to the last video on disk
    greedy_ratio: float = 0.0  # a zero-latency greedy client's makespan ÷ the bound

    def describe(self) -> str:
        """One line."""
        return (
            f"first create {self.first_create:.2f} s after start, refill {self.refill_mean:.3f} s "
            f"mean / {self.refill_p90:.3f} p90 (costs {self.lost_slot_s:.2f} s), last wave "
            f"{self.last_wave:.2f} s, last end → on disk {self.to_disk:.2f} s, greedy ÷ bound "
            f"{self.greedy_ratio:.3f}"
        )


def timing(
    started: float, spans: list[tuple[float, float]], cap: int, on_disk: float, bound: float
) -> Timing:
    """The breakdown of one run: `spans` (created, ended) in creation order, Unix seconds."""
    creates = sorted(start for start, _ in spans)
    ends = sorted(end for _, end in spans)
    gaps = sorted(creates[cap + j] - ends[j] for j in range(len(creates) - cap))
    t0 = creates[0]
    return Timing(
        first_create=t0 - started,
        refill_mean=sum(gaps) / len(gaps) if gaps else 0.0,
        refill_p90=gaps[int(0.9 * (len(gaps) - 1))] if gaps else 0.0,
        lost_slot_s=sum(gaps) / cap,
        last_wave=ends[-1] - creates[-1],
        to_disk=on_disk - ends[-1],
        greedy_ratio=greedy_makespan([e - s for s, e in spans], [(0.0, cap)]) / bound,
    )


@dataclass
class Shared:
    """Every run of the scenario."""

    jobs: int
    cap: int
    gen_seconds: float
    runs: list[Outcome] = field(default_factory=list)

    @property
    def procs(self) -> list[int]:
        """The process counts run beside the one-process reference, in order."""
        return sorted({r.procs for r in self.runs if r.procs > 1})

    def get(self, procs: int, coordinated: bool) -> Outcome:
        """The run with this many processes, with or without the coordinator."""
        return next(r for r in self.runs if r.procs == procs and r.coordinated == coordinated)

    def describe(self) -> str:
        """One line per run."""
        return "\n".join(
            f"shared: {r.procs} process(es) {'with' if r.coordinated else 'without'} coordinator: "
            f"{r.creates} creates for {r.jobs} jobs, {r.refused_per_job:.3f} refused/job, "
            f"peak running {r.peak_running}/{r.cap}, makespan {r.makespan_s:.1f} s = "
            f"{r.makespan_ratio:.3f} × bound, {r.status_per_job:.2f} status requests/job\n"
            f"  {r.timing.describe()}"
            for r in self.runs
        )


def _redis(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    sys.path.insert(0, str(ROOT / "tests"))
    from redis_helpers import RedisServer  # the tests' throwaway server: free port, no disk

    work.mkdir(parents=True, exist_ok=True)  # redis-server refuses a --dir that does not exist
    server = RedisServer(work)
    server.start()
    assert server.proc is not None
    return server.proc, server.url


def _one(procs: int, url: str | None, size: tuple[int, int, float], work: Path) -> Outcome:
    jobs, cap, gen = size
    # Time constants (request rate, first poll pause) scaled by T / 120 s, as in every other
    # scenario (benchmarks/_ours.py): the real defaults would throttle a run 60× compressed.
    scale = gen / REAL_GEN_SECONDS
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")}
    env |= {"KLING_ACCESS_KEY": ACCESS_KEY, "KLING_SECRET_KEY": SECRET_KEY}
    with SimProcess(concurrency=cap, gen_seconds=gen, video_bytes=20_000) as sim:
        env["KLING_BASE_URL"] = sim.url
        children = []
        started = time.time()
        for k in range(procs):
            lines = [
                f'{{"images": ["https://example.com/ref.png"], "prompt": "job {k}-{i}"}}\n'
                for i in range(jobs // procs)
            ]
            (work / f"jobs{k}.jsonl").write_text("".join(lines))
            argv = [sys.executable, "-m", "benchmarks._shared_child", f"{scale:g}"]
            argv += ["run", str(work / f"jobs{k}.jsonl")]
            argv += ["--out", str(work / f"out{k}"), "--concurrency", str(cap), "--no-progress"]
            if DEFAULTS.rps is not None:  # a ceiling (none by default: the rate adapts to 1302)
                argv += ["--rps", f"{DEFAULTS.rps / scale:g}"]
            argv += ["--poll-interval", f"{PollPolicy().interval * scale:g}"]
            argv += ["--coordinator", url] if url else []
            log = open(work / f"log{k}", "w")  # noqa: SIM115  # closed when the child exits
            child = subprocess.Popen(argv, stdout=log, stderr=log, env=env, cwd=ROOT)
            children.append((child, log))
        for proc, log in children:
            if proc.wait(timeout=600) != 0:
                raise RuntimeError(f"run failed: {(work / 'log0').read_text()[-2000:]}")
            log.close()
        stats = sim.stats()
        spans = sim.task_spans()
    requests = stats["requests"]
    on_disk = _last_download(work, procs)
    bound = fluid_bound([end - start for start, end in spans], [(0.0, cap)])
    return Outcome(
        procs=procs,
        coordinated=url is not None,
        jobs=jobs,
        cap=cap,
        refused=stats["rejected_concurrency"],
        status_requests=requests.get("list", 0) + requests.get("query", 0),
        creates=stats["accepted_creates"],
        peak_running=stats["peak_running"],
        makespan_s=on_disk - min(start for start, _ in spans),
        bound_s=bound,
        timing=timing(started, spans, cap, on_disk, bound),
    )


def _last_download(work: Path, procs: int) -> float:
    """When the last video was on disk (its journal row's time), over every process."""
    last = 0.0
    for k in range(procs):
        with contextlib.closing(sqlite3.connect(work / f"out{k}" / "journal.sqlite3")) as db:
            (when,) = db.execute(
                "SELECT MAX(updated) FROM jobs WHERE state='downloaded'"
            ).fetchone()
            last = max(last, when)
    return last


def run_shared(quick: bool, work: Path) -> Shared:
    """1 process alone, then 3 and 6 (--quick: 3) processes with and without the coordinator."""
    size = QUICK if quick else FULL
    result = Shared(*size)
    redis, url = _redis(work)
    try:
        result.runs.append(_one(1, None, size, work / "alone"))
        for procs in QUICK_PROCS if quick else PROCS:
            for coordinated in (False, True):
                tag = f"{procs}-{'redis' if coordinated else 'alone'}"
                result.runs.append(_one(procs, url if coordinated else None, size, work / tag))
                print("\n".join(result.describe().splitlines()[-2:]), file=sys.stderr, flush=True)

                redis_flush(url)
    finally:
        redis.kill()
        redis.wait()
    return result


def redis_flush(url: str) -> None:
    """A fresh account for the next run (its learned limit must not carry over)."""
    import redis

    with redis.Redis.from_url(url) as client:
        client.flushall()


def shared_rows(shared: Shared) -> list[Row]:
    """The benchmark table's rows: kling-async = with the coordinator, baseline = without."""
    sec = f"8 several processes on one account ({shared.jobs} jobs, T={shared.gen_seconds:g} s, "
    sec += f"each told N={shared.cap} of N)"
    sec += "; kling-async column: with --coordinator, baseline column: without"
    rows: list[Row] = []
    for procs in shared.procs:
        on, off = shared.get(procs, True), shared.get(procs, False)
        rows.append(
            Row(
                f"{procs} processes: refused creates per job",
                on.refused_per_job,
                off.refused_per_job,
                0.05,
                "<=",
                section=sec,
            )
        )
        rows.append(
            Row(
                f"{procs} processes: makespan ÷ bound",
                on.makespan_ratio,
                off.makespan_ratio,
                1.05,
                "<=",
                section=sec,
            )
        )
        alone = shared.get(1, False).makespan_s
        rows.append(
            Row(
                f"  makespan ÷ one process's running all the jobs ({alone:.1f} s)",
                on.makespan_s / alone,
                off.makespan_s / alone,
                section=sec,
            )
        )
    alone = shared.get(1, False).status_per_job
    three_on, three_off = shared.get(3, True), shared.get(3, False)
    rows.append(
        Row(
            "status requests per job, 3 processes ÷ one process",
            three_on.status_per_job / alone,
            three_off.status_per_job / alone,
            1.3,
            "<=",
            section=sec,
        )
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="48 jobs, N=4, T=1 s")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="kling-shared-"))
    try:
        print(run_shared(args.quick, work).describe())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
