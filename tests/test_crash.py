"""Process death: `kling-async run` killed with SIGKILL at random moments, then rerun until done.

Each seed gets its own batch (jobs file and out dir) against one shared simulator process; the
kill delays are spread over a run (stratified over the seeds), so kills land while jobs are
being submitted, polled and downloaded. What the journal shows right after each kill is
recorded. After the reruns: no job created twice, every job downloaded, every file's sha256
equal to what the simulator served, no `.part` left.

By default a few seeds run (`QUICK_SEEDS`, spread over the whole run); all 16 run with the
`exhaustive` marker (`pytest -m exhaustive`, as `.ci/run` does), which also asserts that the
kills hit every phase (submit, poll, download, mid-transfer).
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import (
    CLI,
    SimProcess,
    assert_no_duplicate_creates,
    assert_videos_complete,
    job_line,
    journal_rows,
    manifest,
    wait_for,
    write_jobs,
)
from fault_helpers import tally

from kling_async.simulator import VideoContent

SEEDS = range(16)
#: One seed from each quarter of the run, two of them killed twice (odd seeds).
QUICK_SEEDS = (1, 6, 9, 14)
JOBS = 6
SIZE = 300_000
#: A clean run of one batch takes about this long once its journal exists (6 jobs, cap 3,
#: 0.3 s generation, half of the downloads delayed 0.15 s): first kills are spread over it.
SPAN = 1.0
SIM_ARGS = [
    "--concurrency", "20", "--gen-seconds", "0.3", "--video-bytes", str(SIZE), "--seed", "3",
    "--fault-rate", "video:latency:0.15=0.5",  # keeps transfers open long enough to be hit
    "--fault-rate", "create:lost=0.1",  # a kill may also land between a lost answer and the lookup
]  # fmt: skip
RUN_ARGS = ["--concurrency", "3", "--poll-interval", "0.05", "--no-progress"]


@dataclass
class Outcome:
    """What happened to one seed's batch."""

    seed: int
    phases: list[set[str]] = field(default_factory=list)  # per kill, what was in progress
    runs: int = 0


def phase_at_kill(out: Path) -> set[str]:
    """What the batch was doing when it died, read from its journal and its videos folder."""
    path = out / "journal.sqlite3"
    if not path.exists():
        return {"startup"}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
        try:
            states = [row[0] for row in db.execute("SELECT state FROM jobs")]
        finally:
            db.close()
    except sqlite3.Error:
        return {"unreadable"}
    phases = set()
    if len(states) < JOBS or "submitting" in states:
        phases.add("submit")
    if "submitted" in states:
        phases.add("poll")
    if "succeeded" in states:
        phases.add("download")
    if list((out / "videos").glob("*.part")):
        phases.add("mid-transfer")
    if not phases:
        phases.add("finishing")
    return phases


def under_way(out: Path, proc: subprocess.Popen[bytes]) -> Callable[[], bool]:
    """True once the batch has opened its journal (or the process is gone)."""
    return lambda: (out / "journal.sqlite3").exists() or proc.poll() is not None


def one_seed(sim: SimProcess, root: Path, seed: int, stratum: int, strata: int) -> Outcome:
    """Run `seed`'s batch, killing it first within the `stratum`-th of `strata` equal slices of
    a run."""
    rng = random.Random(seed)
    outcome = Outcome(seed)
    jobs = write_jobs(
        root / f"jobs-{seed}.jsonl",
        [job_line(i, prompt=f"seed {seed} job {i}") for i in range(JOBS)],
    )
    out = root / f"out-{seed}"
    cmd = [*CLI, "run", str(jobs), "--out", str(out), *RUN_ARGS]
    env = sim.env()
    kills = 1 + seed % 2
    for k in range(kills):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        outcome.runs += 1
        try:
            if k == 0:  # spread over the run, measured from the moment the batch is under way
                wait_for(under_way(out, proc))
                time.sleep(SPAN * (stratum + rng.random()) / strata)
            else:  # anywhere in a rerun, its start-up (~0.4 s) included
                time.sleep(rng.uniform(0.2, 1.0))
        finally:
            finished = proc.poll() is not None
            proc.kill()  # SIGKILL: no cleanup of any kind
            _, err = proc.communicate(timeout=10)
        assert b"Traceback" not in err, err.decode()
        outcome.phases.append({"finished"} if finished else phase_at_kill(out))
    for _ in range(4):  # rerun until done
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=40)
        outcome.runs += 1
        if done.returncode == 0:
            break
    assert done.returncode == 0, (seed, done.stderr)
    return outcome


def check_batch(out: Path, stats: dict[str, Any], content: VideoContent) -> None:
    rows = journal_rows(out)
    assert len(rows) == JOBS and {r.state for r in rows} == {"downloaded"}, rows
    for row in rows:  # created exactly once, by this batch's own key
        assert stats["creates_by_external_id"].get(row.external_id) == 1, row
    assert assert_videos_complete(out, content.sha256, expect=JOBS) == JOBS
    assert sorted(p.name for p in (out / "videos").iterdir()) == sorted(
        Path(r.files[0].path).name for r in rows if r.files
    )
    assert [row["state"] for row in manifest(out)] == ["downloaded"] * JOBS
    assert not (out / "results.jsonl.tmp").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "seeds",
    [
        pytest.param(QUICK_SEEDS, id="quick"),
        pytest.param(tuple(SEEDS), id="all-seeds", marks=pytest.mark.exhaustive),
    ],
)
def test_sigkill_at_random_moments_then_rerun(tmp_path: Path, seeds: tuple[int, ...]) -> None:
    started = time.monotonic()
    with SimProcess(*SIM_ARGS) as sim:
        # Three batches at a time: they share the simulator (and a 2-core machine).
        # The i-th seed's first kill lands in the i-th of len(seeds) slices of a run.
        with ThreadPoolExecutor(max_workers=3) as pool:
            outcomes = list(
                pool.map(lambda s: one_seed(sim, tmp_path, s, seeds.index(s), len(seeds)), seeds)
            )
        stats = tally(sim.get("/__sim/stats")["stats"])
    assert_no_duplicate_creates(stats)
    content = VideoContent(SIZE)
    for seed in seeds:
        check_batch(tmp_path / f"out-{seed}", stats, content)
    assert stats["accepted_creates"] == JOBS * len(seeds)
    kills = [phases for o in outcomes for phases in o.phases]
    hit = set().union(*kills)
    # A kill mid-transfer costs at most the bytes not yet written: .part files are resumed.
    assert stats["video_bytes_served"] <= (JOBS * len(seeds) + 4 * len(kills)) * SIZE
    assert sum("finished" not in p for p in kills) >= len(seeds)  # real kills, not late ones
    if len(seeds) == len(SEEDS):  # enough kills that every phase is hit, whatever the load
        assert {"submit", "poll", "download", "mid-transfer"} <= hit, kills
    seen = Counter(phase for phases in kills for phase in phases)
    print(f"\n{len(kills)} kills over {len(seeds)} seeds; phases hit: {dict(seen)}")
    print(f"runs: {sum(o.runs for o in outcomes)}, {time.monotonic() - started:.1f} s")
