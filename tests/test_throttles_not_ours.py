"""1302s that are not ours (another process on the account, random faults): against the
simulator, with no real rate limit and 5 % of API answers a random 1302, no job is lost and
the adaptive rate is not cut by them (`RateRules.ignore_share`, `sample`, `streak`)."""

from __future__ import annotations

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


async def test_sparse_random_1302s_do_not_cut_a_fresh_client(
    start_sim: StartSim,  # noqa: F811
    tmp_path: Path,
) -> None:
    sim = await start_sim(
        concurrency=10, gen_seconds=0.3, faults=FaultConfig(rates=RANDOM_1302, seed=1)
    )
    # A fresh client, no rate learnt before: the first random 1302 comes during the slow start.
    async with make_client(sim, concurrency=10) as client:
        results = await run(client, make_requests(60), tmp_path, timeout=60)
        state = client.request_rate.state().rate
    assert all(r.ok for r in results.values()) and len(results) == 60
    assert state.throttled == sim.stats.faults_injected["1302"] >= 3  # the faults were met
    # None of them cut: the rate is free at the end, no limit learnt. (Before the share rule,
    # the first throttle always cut, from a send rate measured over a whole second 0.2 s
    # after the start, and each later one "near" that low W_max cut again.)
    assert state.cuts == 0, state
    assert state.w_max is None and not state.limited


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
