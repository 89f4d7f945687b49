"""The `kling-async` command line: run / status / download, exit codes, Ctrl-C and kill -9."""

from __future__ import annotations

import io
import os
import random
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import (
    CLI,
    SimProcess,
    SimThread,
    assert_no_duplicate_creates,
    assert_videos_complete,
    collect,
    interrupt_when,
    job_line,
    journal_count,
    journal_rows,
    make_client,
    make_requests,
    manifest,
    run_cli,
    summary_counts,
    wait_for,
    write_jobs,
)

from kling_async import cli, run_batch
from kling_async._progress import Reporter
from kling_async.simulator import Simulator, VideoContent

FAST = ["--concurrency", "3", "--poll-interval", "0.05", "--no-progress"]


@pytest.fixture
def sim_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """`sim_thread(**config)`: a simulator on its own loop, KLING_* pointing at it."""
    started: list[SimThread] = []

    def start(**config: Any) -> SimThread:
        st = SimThread(**config).__enter__()
        started.append(st)
        for key, value in st.env().items():
            monkeypatch.setenv(key, value)
        return st

    monkeypatch.delenv("KLING_API_KEY", raising=False)
    yield start
    for st in started:
        st.__exit__(None, None, None)


def jobs_file(tmp_path: Path, n: int, *extra: str) -> Path:
    return write_jobs(tmp_path / "jobs.jsonl", [job_line(i) for i in range(n)] + list(extra))


# -- exit code 2 --------------------------------------------------------------------------------


def test_usage_errors_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in ("KLING_ACCESS_KEY", "KLING_SECRET_KEY", "KLING_API_KEY", "KLING_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    for argv in (["run"], ["frobnicate"], ["run", "jobs.jsonl"], ["run", "x", "--out"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
    out = tmp_path / "out"
    assert cli.main(["run", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 2
    assert "job file not found" in capsys.readouterr().err
    jobs = jobs_file(tmp_path, 1)
    assert cli.main(["run", str(jobs), "--out", str(out)]) == 2  # no credentials
    assert "KLING_ACCESS_KEY" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", str(jobs), "--out", str(out), "--simulate", "--concurrency", "0"])
    assert exc.value.code == 2
    assert "--concurrency must be ≥ 1 (got 0)" in capsys.readouterr().err
    assert cli.main(["status", str(out)]) == 2
    assert "no batch journal" in capsys.readouterr().err
    assert cli.main(["download", str(out)]) == 2
    assert "no batch journal" in capsys.readouterr().err
    assert not (out / "journal.sqlite3").exists()  # `download` created nothing


@pytest.mark.slow
def test_missing_credentials_in_a_real_process_exit_2(tmp_path: Path) -> None:
    from batch_helpers import clean_env

    jobs = jobs_file(tmp_path, 1)
    proc = run_cli(["run", str(jobs), "--out", str(tmp_path / "o")], clean_env(), timeout=20)
    assert proc.returncode == 2, proc.stderr
    assert "credentials" in proc.stderr and "Traceback" not in proc.stderr


# -- run, status, download (in-process, simulator on a thread) ----------------------------------


def test_run_then_status(
    sim_thread: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    st = sim_thread(concurrency=2)
    jobs = jobs_file(tmp_path, 5, "{oops", "# comment", "")
    out = tmp_path / "out"
    assert cli.main(["run", str(jobs), "--out", str(out), *FAST]) == 1  # one bad line
    results = capsys.readouterr().out
    assert results.count(": downloaded videos/") == 5
    assert "line 6 (" in results and "rejected: not valid JSON" in results
    assert "6 jobs: 5 downloaded, 1 rejected" in results
    stats = st.stats()  # a cap (2) below --concurrency (3): a few 1303s, never above the cap
    assert stats["accepted_creates"] == 5 and stats["peak_running"] <= 2
    assert stats["rejected_concurrency"] <= 3
    assert cli.main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "6 jobs" in text and "downloaded      5" in text and "rejected        1" in text
    assert "line 6: rejected: not valid JSON" in text
    assert len(manifest(out)) == 6


def test_failures_exit_1_with_klings_message(
    sim_thread: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim_thread(concurrency=3, fail_rate=0.4, seed=2)
    out = tmp_path / "out"
    assert cli.main(["run", str(jobs_file(tmp_path, 8)), "--out", str(out), *FAST]) == 1
    results = capsys.readouterr().out
    failed = [r for r in journal_rows(out) if r.state == "failed"]
    assert failed
    for row in failed:
        assert row.error is not None
        assert f"line {row.line} (" in results
        assert f"failed: {row.error.message}" in results
    cli.main(["status", str(out)])
    text = capsys.readouterr().out
    assert f"failed          {len(failed)}" in text
    assert "Image pixel is invalid" in text or "content moderation failed" in text


def test_account_error_exit_1_then_rerun(
    sim_thread: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    st = sim_thread(concurrency=3, gen_seconds=0.15)  # no 1303: each create takes one script
    st.call(st.sim.faults.script, "create", "none", "none", "none", *["1102"] * 20)
    jobs, out = jobs_file(tmp_path, 8), tmp_path / "out"
    assert cli.main(["run", str(jobs), "--out", str(out), *FAST]) == 1
    printed = capsys.readouterr()
    assert "batch stopped submitting: AccountError" in printed.err
    assert "not submitted: resource pack depleted" in printed.out
    assert "code=1102" in printed.out and "request_id=" in printed.out
    # what was running finished and downloaded
    assert printed.out.count(": downloaded videos/") == 3
    summary = printed.out.splitlines()[-1]  # every job counted, never "submitting"
    assert summary.startswith("8 jobs: 3 downloaded, ") and "submitting" not in summary
    # submitters that met 1102 say so; one that was waiting for a slot says "batch stopped"
    assert re.search(r"not submitted \([^)]*AccountError", summary)
    assert sum(summary_counts(summary).values()) == 8
    cli.main(["status", str(out)])
    assert "not submitted: resource pack depleted" in capsys.readouterr().out
    st.call(st.sim.faults.clear)
    assert cli.main(["run", str(jobs), "--out", str(out), *FAST]) == 0
    stats = st.stats()
    assert stats["accepted_creates"] == 8
    assert_no_duplicate_creates(stats)
    assert_videos_complete(out, lambda v: VideoContent(40_000).sha256(v), expect=8)


def test_download_command_and_status_expiry(
    sim_thread: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    st = sim_thread(concurrency=3)
    # Every download fails at once (404, re-query, 404…): the run ends with videos not on disk.
    st.call(st.sim.faults.set_rate, "video", "404", 1.0)
    jobs, out = jobs_file(tmp_path, 4), tmp_path / "out"
    assert cli.main(["run", str(jobs), "--out", str(out), *FAST]) == 1
    capsys.readouterr()
    st.call(st.sim.faults.clear)
    assert cli.main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "download failed 4" in text
    assert "4 finished video(s) not on disk; soonest expires" in text and "(in 29 d)" in text
    assert f"kling-async download {out}" in text
    # Fetch two of them now; the other two only after Kling's retention has passed.
    st.call(st.sim.faults.script, "video", "none", "none")
    st.call(st.sim.faults.set_rate, "video", "404", 1.0)
    assert cli.main(["download", str(out), "--no-progress"]) == 1
    capsys.readouterr()
    st.call(st.sim.faults.clear)
    downloaded = {r.line for r in journal_rows(out) if r.state == "downloaded"}
    assert len(downloaded) == 2
    st.call(st.sim.advance, 31 * 86_400)
    before = st.stats()["requests"].get("create", 0)
    assert cli.main(["download", str(out), "--no-progress"]) == 1
    printed = capsys.readouterr()
    assert printed.out.count(": expired:") == 2 and "Traceback" not in printed.err
    assert "2 already done, 2 expired" in printed.out
    assert st.stats()["requests"].get("create", 0) == before  # download never creates
    cli.main(["status", str(out)])
    text = capsys.readouterr().out
    assert "expired         2" in text and "not on disk" not in text


def test_fancy_progress_renders(tmp_path: Path) -> None:
    """The rich bars (on a terminal) go to the log stream; the results to theirs, all of
    them when that is no terminal (`run … > log.txt` with bars on the screen)."""
    import asyncio

    async def go() -> tuple[str, str]:
        results, bars = io.StringIO(), io.StringIO()
        async with (
            Simulator(concurrency=2, gen_seconds=0.05) as sim,
            make_client(sim, concurrency=2) as client,
        ):
            batch = run_batch(client, make_requests(3), tmp_path)
            async with Reporter(batch, 3, fancy=True, out=results, log=bars) as reporter:
                for result in await collect(batch):
                    reporter.result(result)
        return results.getvalue(), bars.getvalue()

    results, bars = asyncio.run(go())
    assert "downloaded" in bars and "3/3" in bars and "line " not in bars
    assert results.count(": downloaded videos/") == 3 and "━" not in results


# -- real processes: Ctrl-C and kill -9 -----------------------------------------------------


def sim_args(cap: int = 3) -> list[str]:
    return ["--concurrency", str(cap), "--gen-seconds", "0.3", "--video-bytes", "40000"]


def run_args(jobs: Path, out: Path) -> list[str]:
    return [*CLI, "run", str(jobs), "--out", str(out), *FAST]


def check_finished(sim: SimProcess, out: Path, n: int) -> dict[str, Any]:
    stats = sim.get("/__sim/stats")["stats"]
    assert_no_duplicate_creates(stats)
    assert stats["accepted_creates"] == n
    content = VideoContent(40_000)
    assert assert_videos_complete(out, content.sha256, expect=n) == n
    assert len(list((out / "videos").iterdir())) == n
    return stats  # type: ignore[no-any-return]


def downloaded_rows(out: Path) -> int:
    return journal_count(out, "state='downloaded'")


@pytest.mark.slow
def test_ctrl_c_then_resume(tmp_path: Path) -> None:
    n = 15
    jobs, out = jobs_file(tmp_path, n), tmp_path / "out"
    with SimProcess(*sim_args()) as sim:
        env = sim.env()
        code, err = interrupt_when(run_args(jobs, out), env, lambda: downloaded_rows(out) >= 2)
        assert code == 130, err
        assert "resume with the same command" in err and "Traceback" not in err
        assert downloaded_rows(out) < n
        again = run_cli(run_args(jobs, out)[len(CLI) :], env, timeout=30)
        assert again.returncode == 0, again.stderr
        stats = check_finished(sim, out, n)
        assert stats["video_bytes_served"] <= (n + 3) * 40_000


@pytest.mark.slow
def test_kill_9_then_resume(tmp_path: Path) -> None:
    n, kills = 15, 3
    rng = random.Random(1234)
    jobs, out = jobs_file(tmp_path, n), tmp_path / "out"
    with SimProcess(*sim_args()) as sim:
        env = sim.env()
        for _ in range(kills):
            proc = subprocess.Popen(
                run_args(jobs, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
            )
            try:
                wait_for(lambda: (out / "journal.sqlite3").exists(), timeout=15)
                time.sleep(rng.uniform(0.1, 0.9))
            finally:
                proc.kill()  # SIGKILL: no cleanup of any kind
                proc.communicate(timeout=10)
        for _ in range(3):  # rerun until done
            done = run_cli(run_args(jobs, out)[len(CLI) :], env, timeout=30)
            if done.returncode == 0:
                break
        assert done.returncode == 0, done.stderr
        stats = check_finished(sim, out, n)
        # nothing downloaded twice: at most the transfers a kill interrupted are repeated
        assert stats["requests"]["video"] <= n + kills
        assert stats["video_bytes_served"] <= (n + kills) * 40_000
        before = sim.get("/__sim/stats")["stats"]["requests"]
        final = run_cli(run_args(jobs, out)[len(CLI) :], env, timeout=30)
        assert final.returncode == 0
        assert sim.get("/__sim/stats")["stats"]["requests"] == before  # nothing left to do
        assert {row["state"] for row in manifest(out)} == {"downloaded"}
    assert not os.path.exists(out / "results.jsonl.tmp")
