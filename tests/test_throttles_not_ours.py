"""1302s that are not ours (another process on the account, random faults): against the
simulator, with no real rate limit and 5 % of API answers a random 1302, no job is lost and
the adaptive rate is not cut by each of them (`RateRules.ignore_below` / `ignore_share`)."""

from __future__ import annotations

import time
from pathlib import Path

from batch_helpers import (
    SimThread,
    assert_videos_complete,
    clean_env,
    job_line,
    make_client,
    make_requests,
    run_cli,
    write_jobs,
)
from fault_helpers import StartSim, run, start_sim  # noqa: F401  (fixture)

from kling_async.simulator import FaultConfig, VideoContent

#: A random 1302 on 5 % of the API's answers: creates, queries and list pages alike.
RANDOM_1302 = {kind: {"1302": 0.05} for kind in ("create", "query", "list")}


async def test_sparse_random_1302s_do_not_cut_a_rate_learnt_earlier(
    start_sim: StartSim,  # noqa: F811
    tmp_path: Path,
) -> None:
    sim = await start_sim(
        concurrency=10, gen_seconds=0.3, faults=FaultConfig(rates=RANDOM_1302, seed=1)
    )
    async with make_client(sim, concurrency=10) as client:
        # A limit learnt at 1,000 requests/s (an earlier burst's cut, or another process's),
        # long recovered from: this batch sends far below it.
        controller = client.request_rate.controller
        now = time.monotonic()
        controller.adopt(now, 1000.0, now - 600)
        results = await run(client, make_requests(60), tmp_path, timeout=60)
        state = client.request_rate.state().rate
    assert all(r.ok for r in results.values()) and len(results) == 60
    assert state.throttled == sim.stats.faults_injected["1302"] >= 3  # the faults were met
    # None of them cut: the rate stays free, its reference where it was. (With the rule off,
    # ignore_share=0, the same run cut 5 times and ended at 8 requests/s, 4x the makespan.)
    assert state.cuts == 0, state
    assert state.w_max == 1000.0 and not state.limited


def test_random_1302s_cost_no_job_through_the_cli(tmp_path: Path) -> None:
    faults = FaultConfig(rates=RANDOM_1302, seed=2)
    with SimThread(concurrency=5, gen_seconds=0.2, faults=faults) as st:
        jobs = write_jobs(tmp_path / "jobs.jsonl", [job_line(i) for i in range(20)])
        out = tmp_path / "out"
        args = ["run", str(jobs), "--out", str(out), "--poll-interval", "0.05", "--no-progress"]
        proc = run_cli(args, clean_env(**st.env()), 120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        stats = st.stats()
        assert stats["faults_injected"]["1302"] >= 1
        assert stats["accepted_creates"] == 20
        assert assert_videos_complete(out, VideoContent(40_000).sha256, expect=20) == 20
