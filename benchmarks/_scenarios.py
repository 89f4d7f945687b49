"""One client run against a fresh simulated account, and the ideal makespan it is held to."""

from __future__ import annotations

import heapq
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._common import ROOT, ClientResult, RunSpec
from ._sim import ACCESS_KEY, SECRET_KEY, SimProcess

__all__ = ["CLIENTS", "Run", "Scenario", "fluid_bound", "greedy_makespan", "run_client"]

#: Client name → the module its child process runs.
CLIENTS = {
    "kling-async": "benchmarks._ours",
    "baseline": "benchmarks._baseline",
    "floor": "benchmarks._floor",  # bare aiohttp: the CPU per job no aiohttp client goes below
}


@dataclass(frozen=True, slots=True)
class Scenario:
    """The account and the work: M jobs, the real cap, what the user configures, changes."""

    name: str
    jobs: int
    account_cap: int
    client_cap: int
    gen_seconds: float
    gen_spread: float = 0.2
    held_slots: int = 0
    #: (seconds after the client started, control settings) applied by the harness.
    schedule: tuple[tuple[float, dict[str, int]], ...] = ()
    image_paths: tuple[tuple[str, ...], ...] = ()
    rps: float | None = None  # kling-async's request-rate ceiling (None: adaptive only)
    callbacks: bool = False  # the simulator POSTs status callbacks to each task's callback_url
    #: The account's request-rate limit (requests/s over all API routes, 1302 above it).
    rate_limit: float | None = None


@dataclass(slots=True)
class Run:
    """One client's run of one scenario, with the simulator's view of it."""

    client: str
    scenario: Scenario
    result: ClientResult
    stats: dict[str, Any]
    gen_times: list[float] = field(default_factory=list)
    bound_s: float = 0.0
    greedy_s: float = 0.0
    sim_peak_rss_mb: float | None = None
    #: (created, ended) of each task in seconds from the client's start, creation order.
    spans: list[tuple[float, float]] = field(default_factory=list)
    started_at: float = 0.0  # the client's start, Unix seconds

    def per_job(self, kind: str) -> float:
        """Requests of one kind (create, query, list, video) per job, as the server counted."""
        return float(self.stats["requests"].get(kind, 0)) / self.scenario.jobs

    @property
    def status_per_job(self) -> float:
        """Status requests (single queries + list pages) per job."""
        return self.per_job("query") + self.per_job("list")

    @property
    def rejected_per_job(self) -> float:
        """1303 answers per job."""
        return float(self.stats.get("rejected_concurrency", 0)) / self.scenario.jobs

    @property
    def makespan_ratio(self) -> float:
        """Wall time over the ideal makespan."""
        return self.result.wall_s / self.bound_s if self.bound_s else float("nan")

    @property
    def greedy_ratio(self) -> float:
        """Wall time over the zero-latency greedy schedule of the same durations."""
        return self.result.wall_s / self.greedy_s if self.greedy_s else float("nan")

    @property
    def throttled_per_job(self) -> float:
        """1302 answers per job."""
        return float(self.stats.get("rejected_rate", 0)) / self.scenario.jobs

    @property
    def rate_bound_s(self) -> float:
        """What the request rate R allows: the simulator admits R requests in any sliding
        second, so the k-th create (k = 0, 1, …) leaves no sooner than ⌊k/R⌋ (bursts of R a
        second are the fastest any client can send), and its task then takes the generation
        time the simulator gives the k-th create (the same in every run, `gen_times` being in
        creation order): max over k of ⌊k/R⌋ + T_k. Status requests are not counted (a client
        needs some: this is a floor, not what any client can reach). 0 without a rate limit."""
        rate = self.scenario.rate_limit
        if not rate or not self.gen_times:
            return 0.0
        per_second = max(1, math.floor(rate))
        return max(k // per_second + took for k, took in enumerate(self.gen_times))

    @property
    def rate_ratio(self) -> float:
        """Wall time over max(what the rate allows, the concurrency bound)."""
        bound = max(self.rate_bound_s, self.bound_s)
        return self.result.wall_s / bound if bound else float("nan")

    @property
    def cpu_ms_per_job(self) -> float:
        """Client CPU (user + system, all threads) per job, in milliseconds."""
        return self.result.cpu_s * 1000 / self.scenario.jobs


def capacity_segments(sc: Scenario) -> list[tuple[float, int]]:
    """(from time, slots available to us) as the schedule changes the account."""
    cap, held = sc.account_cap, sc.held_slots
    segments = [(0.0, cap - held)]
    for at, settings in sc.schedule:
        cap = settings.get("concurrency", cap)
        held = settings.get("held_slots", held)
        segments.append((at, cap - held))
    return segments


def fluid_bound(times: Sequence[float], segments: Sequence[tuple[float, int]]) -> float:
    """Ideal makespan: max(ΣT_i / capacity integrated over time, max T_i).

    With a constant cap N this is the issue's max(ΣT_i/N, max T_i).
    """
    if not times:
        return 0.0
    remaining = sum(times)
    for k, (start, cap) in enumerate(segments):
        end = segments[k + 1][0] if k + 1 < len(segments) else float("inf")
        if cap > 0 and remaining <= cap * (end - start):
            return max(start + remaining / cap, max(times))
        remaining -= max(cap, 0) * (end - start)
    return float("inf")


def greedy_makespan(times: Sequence[float], segments: Sequence[tuple[float, int]]) -> float:
    """Makespan of a zero-latency greedy client: each slot refilled the instant it frees.

    `times` in creation order (the simulator draws the k-th accepted create's duration the
    same way in every run). No online client can beat it without knowing durations ahead;
    it sits above the fluid bound by the tail of the last wave, ≈ N / (2M) of the makespan.
    """
    changes = [at for at, _ in segments[1:]]
    running: list[float] = []
    t, k, end = 0.0, 0, 0.0
    while k < len(times) or running:
        cap = next(c for at, c in reversed(segments) if at <= t)
        while running and running[0] <= t + 1e-12:
            heapq.heappop(running)
        while k < len(times) and len(running) < cap:
            heapq.heappush(running, t + times[k])
            end = max(end, t + times[k])
            k += 1
        upcoming = [at for at in changes if at > t]
        nxt = min([*running[:1], *upcoming[:1]], default=None)
        if nxt is None:
            break
        t = nxt
    return end


def run_client(client: str, sc: Scenario, work: Path, *, timeout: float = 1800.0) -> Run:
    """Run `client` on `sc` against a fresh simulator; the out dir is removed afterwards."""
    work.mkdir(parents=True, exist_ok=True)
    tag = f"{sc.name}-{client}"
    out_dir = work / f"out-{tag}"
    shutil.rmtree(out_dir, ignore_errors=True)
    spec = RunSpec(
        api_url="",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        jobs=sc.jobs,
        concurrency=sc.client_cap,
        gen_seconds=sc.gen_seconds,
        out_dir=str(out_dir),
        result_path=str(work / f"result-{tag}.json"),
        image_paths=[list(p) for p in sc.image_paths],
        rps=sc.rps,
        callbacks=sc.callbacks,
        real_time_rate=sc.rate_limit is not None,
    )
    sim = SimProcess(
        concurrency=sc.account_cap,
        gen_seconds=sc.gen_seconds,
        gen_spread=sc.gen_spread,
        log_path=work / "simulator.log",
        callbacks=sc.callbacks,
        rate_limit=sc.rate_limit,
    )
    log = work / f"child-{tag}.log"
    with sim:
        if sc.held_slots:
            sim.control(held_slots=sc.held_slots)
        spec_path = work / f"spec-{tag}.json"
        spec = RunSpec(**{**_fields(spec), "api_url": sim.url})
        spec.dump(spec_path)
        with open(log, "w") as err:
            # BENCH_WRAP="py-spy record -o x.txt --format raw --" profiles the client child.
            wrap = shlex.split(os.environ.get("BENCH_WRAP", ""))
            proc = subprocess.Popen(
                [*wrap, sys.executable, "-m", CLIENTS[client], str(spec_path)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
            assert proc.stdout is not None
            proc.stdout.readline()  # "READY": the child's clock starts now
            t0, t0_wall = time.monotonic(), time.time()
            for at, settings in sc.schedule:
                delay = t0 + at - time.monotonic()
                if proc.poll() is None and delay > 0:
                    time.sleep(delay)
                sim.control(**settings)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                rc = -9
            proc.stdout.close()
        if rc != 0:
            raise RuntimeError(
                f"{client} run {sc.name!r} failed ({rc}):\n{log.read_text()[-3000:]}"
            )
        stats = sim.stats()
        spans = [(a - t0_wall, b - t0_wall) for a, b in sim.task_spans()]
        sim_rss = sim.peak_rss_mb()
    gen_times = [b - a for a, b in spans]
    result = ClientResult(**json.loads(Path(spec.result_path).read_text()))
    shutil.rmtree(out_dir, ignore_errors=True)
    segments = capacity_segments(sc)
    bound = fluid_bound(gen_times, segments)
    greedy = greedy_makespan(gen_times, segments)
    return Run(
        client,
        sc,
        result,
        stats,
        gen_times,
        bound,
        greedy,
        sim_peak_rss_mb=sim_rss,
        spans=spans,
        started_at=t0_wall,
    )


def _fields(spec: RunSpec) -> dict[str, Any]:
    return {name: getattr(spec, name) for name in spec.__dataclass_fields__}
