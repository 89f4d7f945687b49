"""`--job-timeout`: a job stuck on a transient condition ends as timed out; the others finish.

Through the CLI in a subprocess against the built-in simulator, which refuses every create
with 1302 once three were accepted: the fourth job keeps being throttled.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from batch_helpers import (
    SimThread,
    assert_no_duplicate_creates,
    assert_videos_complete,
    clean_env,
    job_line,
    run_cli,
    write_jobs,
)

from kling_async.simulator import VideoContent


def throttle_creates_after(st: SimThread, accepted: int) -> threading.Thread:
    """From a thread: every create refused with 1302 once `accepted` were accepted."""

    def flip() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and st.stats()["accepted_creates"] < accepted:
            time.sleep(0.01)
        st.call(st.sim.faults.set_rates, "create", {"1302": 1.0})

    watcher = threading.Thread(target=flip)
    watcher.start()
    return watcher


def test_a_job_throttled_forever_times_out_and_a_rerun_resumes_it(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job_line(i) for i in range(4)])
    out = tmp_path / "out"
    # Three slots: the fourth create waits for one (gen 0.5 s), long after the flip.
    args = ["run", str(jobs), "--out", str(out), "--concurrency", "3", "--no-progress"]
    args += ["--poll-interval", "0.05"]
    with SimThread(concurrency=3, gen_seconds=0.5) as st:
        watcher = throttle_creates_after(st, 3)
        started = time.monotonic()
        proc = run_cli([*args, "--job-timeout", "2"], clean_env(**st.env()), 60)
        took = time.monotonic() - started
        watcher.join()
        assert proc.returncode == 1, proc.stdout + proc.stderr
        lines = proc.stdout.splitlines()
        assert sum(": downloaded " in line for line in lines) == 3, proc.stdout
        (late,) = [line for line in lines if line.startswith("line 4 ")]
        assert "not submitted: timed out (no progress for 2 s)" in late, late
        assert "1302" in late  # and what kept it waiting
        assert took < 30, took  # not waited out: the 1302s never end
        assert st.stats()["rejected_rate"] >= 2

        st.call(st.sim.faults.clear)
        proc = run_cli(args, clean_env(**st.env()), 60)  # the same command again
        assert proc.returncode == 0, proc.stdout + proc.stderr
        stats = st.stats()
        assert stats["accepted_creates"] == 4
        assert_no_duplicate_creates(stats)
        assert assert_videos_complete(out, VideoContent(40_000).sha256, expect=4) == 4
