"""Units against a folder's history: `--dry-run --max-units` (read-only, counting what the
folder already spent), older journals priced from their tasks' `final_unit_deduction`,
over-budget jobs under their own heading in `status`, and units in the live progress."""

from __future__ import annotations

import io
import json
import sqlite3
from decimal import Decimal
from pathlib import Path

import test_units_budget
from batch_helpers import (
    SimProcess,
    clean_env,
    collect,
    job_line,
    make_client,
    make_requests,
    run_cli,
    write_jobs,
)
from fault_helpers import StartSim
from test_units_budget import RUN_ARGS, SIM_ARGS

from kling_async import batch_status, run_batch
from kling_async._journal import Journal
from kling_async._progress import Reporter

start_sim = test_units_budget.start_sim  # the fixture: a simulator per test


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder`: size and mtime (ns) — a dry run must change none. The WAL
    index (-shm) is SQLite's shared memory, where any reader (`status` too) takes its read
    marks: its size, not its mtime, is compared."""
    return {
        str(p.relative_to(folder)): (
            p.stat().st_size,
            0 if p.name.endswith("-shm") else p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
    }


def dry(jobs: Path, out: Path, env: dict[str, str], *extra: str) -> tuple[int, str]:
    proc = run_cli(["run", str(jobs), "--out", str(out), "--dry-run", *extra], env)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout


def test_dry_run_says_whether_a_new_batch_fits(tmp_path: Path) -> None:
    lines = [job_line(i) for i in range(4)] + [job_line(9, mode="pro", duration="10")]
    jobs, out = write_jobs(tmp_path / "jobs.jsonl", lines), tmp_path / "out"
    rc, text = dry(jobs, out, clean_env(), "--max-units", "11")  # 4 × 1 + 7
    assert rc == 0, text
    assert "budget 11 units; 5 job(s) to create, estimated 11 units: fits" in text
    rc, text = dry(jobs, out, clean_env(), "--max-units", "10.5")
    assert rc == 1, text
    assert (
        "budget 10.5 units; 5 job(s) to create, estimated 11 units: does not fit — 1 job(s)"
        " would be left unsubmitted (over budget)" in text
    )
    rc, text = dry(jobs, out, clean_env(), "--max-units", "6", "--price", "std-5=2")
    assert rc == 1 and "estimated 15 units" in text and "2 job(s) would be left" in text
    assert not out.exists()


def test_dry_run_counts_the_folder_and_status_lists_over_budget_apart(tmp_path: Path) -> None:
    lines = [job_line(i) for i in range(4)] + [job_line(i + 4, mode="pro") for i in range(2)]
    jobs, out = write_jobs(tmp_path / "jobs.jsonl", lines), tmp_path / "out"
    with SimProcess(*SIM_ARGS) as sim:
        env = sim.env()
        first = run_cli(["run", str(jobs), "--out", str(out), *RUN_ARGS, "--max-units", "6"], env)
        assert first.returncode == 1, first.stderr
        before, requests = snapshot(out), sim.get("/__sim/stats")["stats"]["requests"]

        rc, text = dry(jobs, out, env, "--max-units", "6")
        assert rc == 1, text
        assert (
            "budget 6 units; the folder holds 4 spent, 0 reserved; 2 job(s) to create,"
            " estimated 7 units: does not fit — 2 job(s) would be left unsubmitted" in text
        )
        rc, text = dry(jobs, out, env, "--max-units", "11")
        assert rc == 0 and "2 job(s) to create, estimated 7 units: fits" in text, text
        rc, text = dry(jobs, out, env)  # no cap: what the folder holds, what is left to do
        assert rc == 0 and "the folder holds 4 spent" in text, text
        assert snapshot(out) == before  # read-only: nothing written, not even a -shm file
        assert sim.get("/__sim/stats")["stats"]["requests"] == requests  # nothing sent

        # `status`: the two jobs the budget held back are listed apart, not as problems.
        status = run_cli(["status", str(out)], env)
        assert status.returncode == 0, status.stderr
        text = status.stdout
        assert "not submitted, over budget: 2 job(s) — rerun with a higher --max-units" in text
        assert "line 5: its estimate (3.5 units, kling-v1-6 pro 5 s)" in text
        assert "over budget: not sent" not in text  # not among the errors
        held = batch_status(out)
        assert held.problem_count == 0 and held.problems == []
        assert held.over_budget_count == 2 and [r.line for r in held.over_budget] == [5, 6]

        # An older folder: units not recorded; one task's deduction is garbled. The dry run
        # reads that job's line, so its kind is known: it is estimated (1), not lost.
        forget_units(out, garble=1)
        held = batch_status(out)
        assert (held.units_spent, held.units_unknown) == (3, 1)
        status = run_cli(["status", str(out)], env)
        assert (
            "units: 3 spent, 0 reserved, 6 budget (units); 1 finished job(s) of unknown cost"
            in (status.stdout)
        )
        rc, text = dry(jobs, out, env, "--max-units", "6")
        assert "the folder holds 3 spent" in text and "unknown cost" not in text, text
        assert rc == 1 and "2 job(s) would be left unsubmitted" in text  # 3 + 1 + 3.5 > 6
        rc, text = dry(jobs, out, env, "--max-units", "7.5")
        assert rc == 1 and "1 job(s) would be left" in text, text  # 4 + 3.5 fits, 7.5 more not

        # A run on the older folder counts the same: 3 backfilled (the unknown one is not
        # counted, and said so), so one pro job fits under 7.5 (3 + 3.5), the other not.
        again = run_cli(["run", str(jobs), "--out", str(out), *RUN_ARGS, "--max-units", "7.5"], env)
        assert again.returncode == 1, again.stderr
        assert sim.get("/__sim/stats")["stats"]["accepted_creates"] == 5
        assert "1 finished job(s) from before units were recorded have an unknown cost" in (
            again.stderr
        )
        assert "units budget reached: 6.5 spent" in again.stderr


def forget_units(out: Path, *, garble: int) -> None:
    """Make `out` look written before units were recorded: no units column; the first
    `garble` finished tasks carry an unreadable `final_unit_deduction`."""
    db = sqlite3.connect(out / "journal.sqlite3")
    try:
        rows = db.execute("SELECT key, task FROM jobs WHERE task IS NOT NULL ORDER BY line")
        for n, (key, text) in enumerate(rows.fetchall()):
            if n < garble:
                task = json.loads(text)
                task["final_unit_deduction"] = "n/a"
                db.execute("UPDATE jobs SET task = ? WHERE key = ?", (json.dumps(task), key))
        db.execute("ALTER TABLE jobs DROP COLUMN units")
        db.commit()
    finally:
        db.close()


async def test_older_journal_rows_are_priced_from_their_tasks(
    start_sim: StartSim, tmp_path: Path
) -> None:
    """A journal from before the units column: finished rows priced from the stored task,
    missing or garbage deductions counted as unknown, a rejected job never; a resumed run
    starts from that spending."""
    path = tmp_path / "journal.sqlite3"
    Journal(path).close_sync()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE jobs DROP COLUMN units")
    rows = [
        ("downloaded", {"final_unit_deduction": "3.5"}),
        ("failed", {"final_unit_deduction": 0}),
        ("expired", {"final_unit_deduction": "1"}),
        ("expired", {"final_unit_deduction": "-2"}),  # garbage
        ("downloaded", {}),  # missing
        ("downloaded", None),  # no task at all
        ("rejected", {"final_unit_deduction": "9"}),  # never billed
    ]
    for n, (state, fields) in enumerate(rows):
        status = "failed" if state == "failed" else "succeed"
        task = (
            None
            if fields is None
            else json.dumps({"task_id": f"t{n}", "task_status": status, **fields})
        )
        db.execute(
            "INSERT INTO jobs (key, line, external_id, state, task, updated)"
            " VALUES (?, NULL, ?, ?, ?, 0)",
            (f"old{n}", f"e{n}", state, task),
        )
    db.execute("UPDATE jobs SET task = '{oops' WHERE key = 'old5'")  # garbled JSON
    db.commit()
    db.close()
    status = batch_status(tmp_path)  # read-only: the column is still missing
    assert (status.units_spent, status.units_unknown) == (Decimal("4.5"), 3)
    assert status.units.endswith(
        "; 3 finished job(s) of unknown cost (recorded before units"
        " were, with no readable final_unit_deduction: not counted)"
    )

    sim = await start_sim()
    async with make_client(sim, concurrency=1) as client:
        # A task still running when the older release stopped: no units on record either.
        old = await client.submit(make_requests(1, "old", mode="pro")[0])
        db = sqlite3.connect(path)
        db.execute(
            "INSERT INTO jobs (key, line, external_id, state, task_id, task, updated)"
            " VALUES ('running', NULL, 'e-run', 'submitted', ?, ?, 0)",
            (old.task_id, old.model_dump_json()),
        )
        db.commit()
        db.close()
        batch = run_batch(client, make_requests(3), tmp_path, max_units=Decimal("10"))
        results = await collect(batch)
    assert batch.units_unknown == 3
    assert sorted(r.outcome for r in results if r.line is not None) == [
        "downloaded",
        "downloaded",
        "over budget",
    ]  # 4.5 spent before + 3.5 (the old pro task, counted when it ends): 2 × 1 fit under 10
    assert sim.stats.as_dict()["accepted_creates"] == 3  # the old task and two new ones
    assert batch_status(tmp_path).units_spent == Decimal("10")


async def test_progress_shows_units_when_a_budget_is_set(
    start_sim: StartSim, tmp_path: Path
) -> None:
    sim = await start_sim()
    async with make_client(sim, concurrency=2) as client:
        batch = run_batch(client, make_requests(3), tmp_path / "a", max_units=2)
        lines = io.StringIO()
        async with Reporter(batch, 3, fancy=False, out=io.StringIO(), log=lines, lines=True):
            await collect(batch)
        bars = io.StringIO()
        batch = run_batch(client, make_requests(3), tmp_path / "b", max_units=5)
        async with Reporter(batch, 3, fancy=True, out=io.StringIO(), log=bars):
            await collect(batch)
        quiet = io.StringIO()
        batch = run_batch(client, make_requests(1), tmp_path / "c")  # no budget: no line
        async with Reporter(batch, 1, fancy=False, out=io.StringIO(), log=quiet, lines=True):
            await collect(batch)
    said = lines.getvalue().splitlines()
    assert said[0].startswith("units: 0 spent") and said[-1] == (
        "units: 2 spent, 0 reserved (0 in flight), 2 budget (units)"
    )
    assert len(said) == len(set(said))  # only when it changes
    assert "units: 3 spent, 0 reserved (0 in flight), 5 budget (units)" in bars.getvalue()
    assert quiet.getvalue() == ""
