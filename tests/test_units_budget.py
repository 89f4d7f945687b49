"""The units budget (`--max-units`, `run_batch(max_units=)`): never exceeded across kills and
reruns, owned by the folder's journal, raised by real deductions, shown by `status`.

Counted where it matters: the simulator's accepted creates (what Kling would bill) times its
price, against the cap.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import (
    CLI,
    SimProcess,
    assert_no_duplicate_creates,
    collect,
    job_line,
    make_client,
    make_requests,
    manifest,
    run_cli,
    summary_counts,
    wait_for,
    write_jobs,
)
from fault_helpers import StartSim, simulators

from kling_async import ConfigurationError, Event, UnitsOvershoot, batch_status, run_batch
from kling_async._journal import Journal

SIM_ARGS = ["--concurrency", "20", "--gen-seconds", "0.3", "--video-bytes", "20000", "--seed", "5"]
RUN_ARGS = ["--concurrency", "3", "--poll-interval", "0.05", "--no-progress"]


@pytest.fixture
async def start_sim() -> AsyncIterator[StartSim]:
    """`await start_sim(**config)`: a running simulator, stopped at teardown."""
    async with simulators() as start:
        yield start


def run(sim: SimProcess, jobs: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`kling-async run JOBS --out OUT` against `sim`, to its end."""
    return run_cli(["run", str(jobs), "--out", str(out), *RUN_ARGS, *extra], sim.env(), 60)  # type: ignore[no-any-return]


def stats(sim: SimProcess) -> dict[str, Any]:
    return sim.get("/__sim/stats")["stats"]  # type: ignore[no-any-return]


def creates(sim: SimProcess) -> int:
    return int(stats(sim)["accepted_creates"])


def manifest_units(out: Path) -> Decimal:
    return sum((Decimal(str(row["units"] or 0)) for row in manifest(out)), Decimal(0))


# -- through the CLI, as a user runs it ---------------------------------------------------------


def test_cap_reached_then_same_cap_adds_nothing_then_higher_cap_goes_on(tmp_path: Path) -> None:
    # 4 std-5 jobs (1 unit) and 2 pro-5 jobs (3.5 units): 11 units in all.
    lines = [job_line(i) for i in range(4)]
    lines += [job_line(i + 4, mode="pro") for i in range(2)]
    jobs, out = write_jobs(tmp_path / "jobs.jsonl", lines), tmp_path / "out"
    with SimProcess(*SIM_ARGS) as sim:
        first = run(sim, jobs, out, "--max-units", "6")
        made = creates(sim)
        # Units are checked before each create: 4 × 1 + 3.5 would be 7.5 > 6.
        assert first.returncode == 1, first.stderr
        assert made == 4, first.stderr
        assert "units budget reached: 4 spent, 0 reserved (0 in flight), 6 budget (units)" in (
            first.stderr
        )
        assert "2 job(s) not submitted (over budget)" in first.stderr
        counts = summary_counts(first.stdout.strip().splitlines()[-1])
        assert counts["downloaded"] == 4 and counts["over budget"] == 2, first.stdout
        rows = manifest(out)
        assert [row["units"] for row in rows] == [1, 1, 1, 1, None, None]
        assert {row["state"] for row in rows[4:]} == {"pending"}
        assert {row["error"]["type"] for row in rows[4:]} == {"OverBudget"}
        assert "would exceed the units budget" in rows[4]["error"]["message"]

        status = run_cli(["status", str(out)], sim.env())
        assert "units: 4 spent, 0 reserved, 6 budget (units)" in status.stdout, status.stdout
        assert "over budget" in status.stdout

        again = run(sim, jobs, out, "--max-units", "6")
        assert again.returncode == 1 and "budget" in again.stderr
        assert creates(sim) == made  # the budget is the folder's: nothing more

        more = run(sim, jobs, out, "--max-units", "11")
        assert more.returncode == 0, more.stderr
        assert creates(sim) == 6
        assert manifest_units(out) == Decimal("11")
        status = run_cli(["status", str(out)], sim.env())
        assert "units: 11 spent, 0 reserved, 11 budget (units)" in status.stdout
        assert_no_duplicate_creates(stats(sim))


def test_never_exceeded_across_kill_9_and_reruns(tmp_path: Path) -> None:
    """SIGKILL at random moments with a cap, rerun with the same cap: Kling's creates × price
    never pass it (lost create answers included); then a higher cap finishes the rest."""
    cap, price, n = 7, 1, 12
    rng = random.Random(13)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job_line(i) for i in range(n)])
    out = tmp_path / "out"
    cmd = [*CLI, "run", str(jobs), "--out", str(out), *RUN_ARGS, "--max-units", str(cap)]
    kills = in_flight = 0
    with SimProcess(*SIM_ARGS, "--fault-rate", "create:lost=0.2") as sim:
        env = sim.env()
        for _ in range(4):
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
            try:
                wait_for(lambda p=proc: (out / "journal.sqlite3").exists() or p.poll() is not None)
                time.sleep(rng.uniform(0.05, 0.8))
            finally:
                kills += proc.poll() is None
                proc.kill()
                _, err = proc.communicate(timeout=10)
            assert b"Traceback" not in err, err.decode()
            assert creates(sim) * price <= cap
            held = batch_status(out)  # what the journal holds right after the kill
            assert held.units_spent + held.units_reserved <= cap
            in_flight += held.units_reserved > 0
        for _ in range(4):  # rerun with the same cap until nothing is in flight
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
            assert creates(sim) * price <= cap
            if "0 reserved" in done.stderr:
                break
        assert done.returncode == 1 and "budget" in done.stderr, done.stderr
        assert creates(sim) == cap  # up to the cap, not short of it: reservations settled
        assert manifest_units(out) == cap
        assert batch_status(out).units_spent == cap
        finish = [*cmd[:-1], str(n)]
        done = subprocess.run(finish, capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        final = stats(sim)
        assert final["accepted_creates"] == n
        assert_no_duplicate_creates(final)
    assert kills >= 2  # real kills, not runs that had already ended
    print(f"\n{kills} kills ({in_flight} with units reserved in flight); {cap} creates under")
    print(f"a cap of {cap}, then {n} with {n}")


def test_a_deduction_above_the_estimate_raises_it_and_is_reported(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job_line(i) for i in range(6)])
    out = tmp_path / "out"
    # Kling charges 2 for std-5; our table says 1. One submitter at a time: the first task
    # settles at 2 while the second is reserved at the old 1; every later one reserves 2.
    with SimProcess(*SIM_ARGS, "--price", "std-5=2") as sim:
        first = run(sim, jobs, out, "--max-units", "6", "--concurrency", "1")
        assert first.returncode == 1, first.stderr
        line = "units: a kling-v1-6 std 5 s task cost 2 (estimated 1): its estimate is now 2"
        assert first.stderr.count(line) == 1, first.stderr
        assert "budget" in first.stderr
        made = creates(sim)
        rows = manifest(out)
        assert all(row["units"] == 2 for row in rows[:made])
        db = sqlite3.connect(out / "journal.sqlite3")
        try:
            reserved = [
                json.loads(u)["reserved"]
                for (u,) in db.execute("SELECT units FROM jobs WHERE units IS NOT NULL")
            ]
        finally:
            db.close()
        assert made == 3  # 1 + 1 reserved, then 2: 2 + 1 + 2 = 5 ≤ 6; then 4 + 2 + 2 > 6
        assert sorted(reserved) == ["1", "1", "2"]
        # Spent may pass the cap only by what the table under-estimated, never by a create
        # made knowing the higher figure.
        assert batch_status(out).units_spent == 6
        again = run(sim, jobs, out, "--max-units", "6", "--concurrency", "1")
        assert creates(sim) == made and again.returncode == 1
        # A rerun starts from the raised estimate: the journal's deductions restore it.
        assert "estimated 1" not in again.stderr


def test_price_flag_applies_to_real_runs(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job_line(i) for i in range(3)])
    out = tmp_path / "out"
    with SimProcess(*SIM_ARGS) as sim:
        proc = run(sim, jobs, out, "--max-units", "5", "--price", "std-5=2")
        assert proc.returncode == 1, proc.stderr
        assert creates(sim) == 2  # estimated 2 each: the third would make 6 > 5
        assert "2 spent" in proc.stderr and "5 budget" in proc.stderr  # charged what Kling said


def test_bad_max_units_is_a_usage_error(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job_line(0)])
    proc = run_cli(["run", str(jobs), "--out", str(tmp_path / "o"), "--max-units", "-1"], {})
    assert proc.returncode == 2 and "--max-units '-1'" in proc.stderr


# -- the Python API -----------------------------------------------------------------------------


async def test_run_batch_max_units(start_sim: StartSim, tmp_path: Path) -> None:
    sim = await start_sim()
    requests = make_requests(3) + make_requests(1, "pro", mode="pro")
    async with make_client(sim, concurrency=2) as client:
        results = await collect(run_batch(client, requests, tmp_path, max_units=Decimal("5.5")))
    by_outcome = sorted(r.outcome for r in results)
    assert by_outcome == ["downloaded"] * 3 + ["over budget"]  # 3 × 1 + 3.5 > 5.5
    assert sim.stats.as_dict()["accepted_creates"] == 3
    status = batch_status(tmp_path)
    assert (status.units_spent, status.units_reserved, status.max_units) == (3, 0, Decimal("5.5"))
    assert status.units == "3 spent, 0 reserved, 5.5 budget (units)"
    assert {r.units for r in results if r.ok} == {Decimal(1)}
    over = next(r for r in results if not r.ok)
    assert over.error is not None and over.error.type == "OverBudget" and over.units is None
    async with make_client(sim, concurrency=2) as client:  # a higher cap: the rest goes on
        results = await collect(run_batch(client, requests, tmp_path, max_units=7))
    assert sim.stats.as_dict()["accepted_creates"] == 4
    assert batch_status(tmp_path).units_spent == Decimal("6.5")


async def test_run_batch_overshoot_event(start_sim: StartSim, tmp_path: Path) -> None:
    sim = await start_sim(prices={"pro-5": "4"})
    events: list[Event] = []
    requests = make_requests(2, "pro", mode="pro")
    async with make_client(sim, concurrency=2, event_hook=events.append) as client:
        batch = run_batch(client, requests, tmp_path, prices={"pro-5": 3})
        results = await collect(batch)
    assert all(r.ok and r.units == 4 for r in results)
    over = [e for e in events if isinstance(e, UnitsOvershoot)]
    assert len(over) == 2 and {(e.units, e.estimate) for e in over} == {("4", "3")}
    assert {e.raised_to for e in over} <= {"4", None} and over[0].raised_to == "4"
    assert [str(s.kind) for s in batch.overshoots] == ["kling-v1-6 pro 5 s"]
    assert batch.budget.estimate(requests[0]) == 4


async def test_bad_max_units_in_python(start_sim: StartSim, tmp_path: Path) -> None:
    sim = await start_sim()
    async with make_client(sim) as client:
        with pytest.raises(ConfigurationError, match="max_units=-1"):
            run_batch(client, make_requests(1), tmp_path, max_units=-1)


def test_a_journal_from_before_units_reads_and_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    Journal(path).close_sync()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE jobs DROP COLUMN units")
    db.execute(
        "INSERT INTO jobs (key, line, external_id, state, updated)"
        " VALUES ('k', 1, 'e', 'pending', 0)"
    )
    db.commit()
    db.close()
    status = batch_status(tmp_path)  # read-only: no column, no units
    assert status.units_spent == 0 and status.max_units is None and status.total == 1
    Journal(path).close_sync()
    db = sqlite3.connect(path)
    try:
        assert "units" in [row[1] for row in db.execute("PRAGMA table_info(jobs)")]
    finally:
        db.close()
