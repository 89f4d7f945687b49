"""What the command line prints, run as a user runs it (a process): results on stdout and
diagnostics on stderr, flag errors that name the flag, help for every argument, and words that
say what became of each job (issue 14)."""

from __future__ import annotations

import argparse
import os
import pty
import subprocess
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import (
    CLI,
    SimProcess,
    clean_env,
    interrupt_when,
    job_line,
    journal_rows,
    run_cli,
    summary_counts,
    write_jobs,
)

from kling_async._cli_parser import build_parser
from kling_async._config import DEFAULT_LIMITS, DEFAULT_POLL

pytestmark = pytest.mark.slow

SIM = ["--concurrency", "3", "--gen-seconds", "0.2", "--video-bytes", "2000"]
FAST = ["--concurrency", "3", "--poll-interval", "0.05"]


def jobs_file(tmp_path: Path, n: int, *extra: str) -> Path:
    return write_jobs(tmp_path / "jobs.jsonl", [job_line(i) for i in range(n)] + list(extra))


def status_counts(text: str) -> dict[str, int]:
    """The label/count table of `kling-async status`."""
    found = {}
    for line in text.splitlines()[1:]:
        word, _, n = line.strip().rpartition(" ")
        if n.isdigit() and not line.strip().startswith("line "):
            found[word.strip()] = int(n)
    return found


# -- 1. results on stdout, progress and diagnostics on stderr ------------------------------------


def test_run_into_a_log_file_captures_every_result(tmp_path: Path) -> None:
    jobs, out, log = jobs_file(tmp_path, 6, "{oops"), tmp_path / "out", tmp_path / "log.txt"
    with SimProcess(*SIM) as sim, log.open("w") as fh:
        args = [*CLI, "run", str(jobs), "--out", str(out), *FAST]  # no --no-progress: no tty
        done = subprocess.run(args, stdout=fh, stderr=subprocess.PIPE, text=True, env=sim.env())
    assert done.returncode == 1, done.stderr
    results = log.read_text().splitlines()
    assert sum(": downloaded videos/" in line for line in results) == 6
    assert any(
        line.startswith("line 7 (") and "rejected: not valid JSON" in line for line in results
    )
    assert results[-1] == f"7 jobs: 6 downloaded, 1 rejected; manifest: {out / 'results.jsonl'}"
    assert "line " not in done.stderr and "jobs:" not in done.stderr  # nothing of the results

    status = run_cli(["status", str(out)], clean_env())
    assert status.returncode == 0 and status.stderr == ""
    assert status.stdout.startswith(f"{out}: 7 jobs\n")


def test_bars_on_the_terminal_results_in_the_file(tmp_path: Path) -> None:
    """`run … > log.txt` on a terminal: the bars are drawn on stderr (the terminal), while the
    file gets every result line, successes included, and no bar."""
    jobs, out, log = jobs_file(tmp_path, 4), tmp_path / "out", tmp_path / "log.txt"
    with SimProcess(*SIM) as sim, log.open("w") as fh:
        screen, terminal = pty.openpty()
        args = [*CLI, "run", str(jobs), "--out", str(out), *FAST]
        proc = subprocess.Popen(args, stdout=fh, stderr=terminal, env=sim.env())
        os.close(terminal)
        drawn = b""
        while chunk := _read(screen):
            drawn += chunk
        assert proc.wait(timeout=60) == 0
        os.close(screen)
    bars = drawn.decode(errors="replace")
    assert "━" in bars and "4/4" in bars and "line " not in bars
    results = log.read_text()
    assert results.count(": downloaded videos/") == 4 and "━" not in results
    assert results.splitlines()[-1].startswith("4 jobs: 4 downloaded;")


def test_a_reader_that_goes_away_does_not_stop_the_batch(tmp_path: Path) -> None:
    """`kling-async run … | head -1`: the batch still finishes, without a traceback."""
    jobs, out = jobs_file(tmp_path, 6), tmp_path / "out"
    with SimProcess(*SIM) as sim:
        args = [*CLI, "run", str(jobs), "--out", str(out), *FAST, "--no-progress"]
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=sim.env()
        )
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().startswith("line ")
        proc.stdout.close()  # what `head -1` does after its line
        with proc.stderr:
            err = proc.stderr.read()
        assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert len(list((out / "videos").glob("*.mp4"))) == 6
    assert run_cli(["status", str(out)], clean_env()).stdout.startswith(f"{out}: 6 jobs\n")


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # the child closed the terminal (EIO)
        return b""


# -- 2. flag errors name the flag ----------------------------------------------------------------

BAD_FLAGS = [
    ("run", "--concurrency", "0", "--concurrency must be ≥ 1 (got 0)"),
    ("run", "--concurrency", "2.5", "--concurrency must be a whole number (got '2.5')"),
    ("run", "--rps", "0", "--rps must be > 0 (got 0)"),
    ("run", "--rps", "-1", "--rps must be > 0 (got -1)"),
    ("run", "--rps", "inf", "--rps must be a finite number (got 'inf')"),
    ("run", "--outage-limit", "0", "--outage-limit must be > 0 (got 0)"),
    ("run", "--job-timeout", "0", "--job-timeout must be > 0 (got 0)"),
    ("run", "--job-timeout", "later", "--job-timeout must be a number (got 'later')"),
    ("download", "--job-timeout", "-5", "--job-timeout must be > 0 (got -5)"),
    ("run", "--poll-interval", "0", "--poll-interval must be > 0 (got 0)"),
    ("run", "--poll-interval", "soon", "--poll-interval must be a number (got 'soon')"),
    ("run", "--download-concurrency", "0", "--download-concurrency must be ≥ 1 (got 0)"),
    ("download", "--download-concurrency", "-3", "--download-concurrency must be ≥ 1 (got -3)"),
    ("simulate", "--port", "70000", "--port must be ≤ 65535 (got 70000)"),
    ("simulate", "--video-port", "-1", "--video-port must be ≥ 0 (got -1)"),
    ("simulate", "--concurrency", "-1", "--concurrency must be ≥ 0 (got -1)"),
    ("simulate", "--gen-seconds", "-1", "--gen-seconds must be ≥ 0 (got -1)"),
    ("simulate", "--gen-spread", "2", "--gen-spread must be ≤ 1 (got 2)"),
    ("simulate", "--fail-rate", "1.5", "--fail-rate must be ≤ 1 (got 1.5)"),
    ("simulate", "--seed", "x", "--seed must be a whole number (got 'x')"),
    ("simulate", "--rate-limit", "-2", "--rate-limit must be ≥ 0 (got -2)"),
    ("simulate", "--video-bytes", "-5", "--video-bytes must be ≥ 0 (got -5)"),
    ("simulate", "--retention-days", "0", "--retention-days must be > 0 (got 0)"),
    ("simulate", "--url-ttl", "-1", "--url-ttl must be ≥ 0 (got -1)"),
    ("simulate", "--clock-offset", "soon", "--clock-offset must be a number (got 'soon')"),
    ("simulate", "--secret-key", "short", "--secret-key must be at least 32 bytes (got 5)"),
]


@pytest.mark.parametrize(("command", "flag", "value", "message"), BAD_FLAGS)
def test_a_bad_number_names_the_flag(
    tmp_path: Path, command: str, flag: str, value: str, message: str
) -> None:
    where = {"run": [str(jobs_file(tmp_path, 1)), "--out", str(tmp_path / "out")]}
    where["download"] = [str(tmp_path / "out")]
    args = [command, *where.get(command, []), f"{flag}={value}"]
    done = run_cli(args, clean_env(), timeout=30)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.rstrip().endswith(f"error: {message}"), done.stderr
    for internal in ("Limits.", "PollPolicy", "SimulatorConfig", "Traceback", "invalid int"):
        assert internal not in done.stderr
    assert not (tmp_path / "out").exists()


def _actions(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    """Every argument of every command, with the command's name."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [(name, a) for a in sub._actions]
    return found


def test_every_numeric_flag_has_a_checking_converter_and_every_argument_a_help() -> None:
    """Plain `type=int`/`float` would let "invalid int value" or a config class's wording
    through; every number goes through a converter that names its flag."""
    for command, action in _actions(build_parser()):
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{command} {action.dest}: no help"
        assert action.type not in (int, float), f"{command} {action.option_strings}"
        if getattr(action.type, "__name__", "") in ("int", "float"):  # one of ours
            flag = action.option_strings[0]
            assert any(flag in bad[1] for bad in BAD_FLAGS if bad[0] == command), flag
    run = {a.dest: a.default for c, a in _actions(build_parser()) if c == "run"}
    assert run["concurrency"] == DEFAULT_LIMITS.concurrency and run["rps"] == DEFAULT_LIMITS.rps
    assert run["download_concurrency"] == DEFAULT_LIMITS.download_concurrency
    assert run["poll_interval"] == DEFAULT_POLL.interval


# -- 3. help ---------------------------------------------------------------------------------


def test_bare_command_prints_the_help_and_v_is_version() -> None:
    bare = run_cli([], clean_env())
    assert bare.returncode == 2
    assert "usage: kling-async" in bare.stderr
    for command in ("run", "status", "download", "simulate", "--simulate"):
        assert command in bare.stderr
    short, long = run_cli(["-V"], clean_env()), run_cli(["--version"], clean_env())
    assert short.returncode == long.returncode == 0
    assert short.stdout == long.stdout and short.stdout.startswith("kling-async ")


def test_help_shows_defaults_and_describes_every_argument() -> None:
    text = run_cli(["run", "--help"], clean_env()).stdout
    flat = " ".join(text.split())
    assert "--concurrency N the account's concurrent tasks" in flat
    assert f"(default: {DEFAULT_LIMITS.concurrency})" in flat
    assert "--rps R a ceiling on API requests per second (default: none;" in flat
    assert f"(default: {DEFAULT_POLL.interval})" in flat
    assert f"(default: {DEFAULT_LIMITS.download_concurrency})" in flat
    status = " ".join(run_cli(["status", "--help"], clean_env()).stdout.split())
    assert "DIR output folder of a `run`" in status and "--all list every problem line" in status
    download = " ".join(run_cli(["download", "--help"], clean_env()).stdout.split())
    assert "--download-concurrency K videos downloaded at once (default: 4)" in download
    assert "--verify also re-hash" in download and "--no-progress no progress bars" in download
    simulate = " ".join(run_cli(["simulate", "--help"], clean_env()).stdout.split())
    assert "API port (default 8080" in simulate and "(default 3.0)" in simulate


# -- 4. words that say what became of each job ------------------------------------------------


def test_a_wrong_key_on_200_lines_accounts_for_every_job(tmp_path: Path) -> None:
    jobs, out = jobs_file(tmp_path, 200), tmp_path / "out"
    with SimProcess(*SIM) as sim:
        env = {**sim.env(), "KLING_SECRET_KEY": "not-the-right-secret-key-0123456789abcdef"}
        done = run_cli(["run", str(jobs), "--out", str(out), *FAST, "--no-progress"], env)
        stats = sim.get("/__sim/stats")["stats"]
    assert done.returncode == 1, done.stderr
    assert stats["accepted_creates"] == 0
    lines = done.stdout.splitlines()
    sent = [line for line in lines if line.startswith("line ")]
    assert sent and all(": not submitted: Authorization is invalid" in s for s in sent)
    assert "submitting" not in done.stdout
    counts = summary_counts(lines[-1])
    assert lines[-1].startswith("200 jobs: ")
    assert f"{len(sent)} not submitted (AuthenticationError)" in lines[-1]
    assert counts == {"not submitted": len(sent), "not reached": 200 - len(sent)}
    assert "batch stopped submitting: AuthenticationError" in done.stderr

    status = run_cli(["status", str(out)], clean_env())
    assert status.stdout.startswith(f"{out}: 200 jobs\n")
    assert status_counts(status.stdout) == counts
    assert "submitting" not in status.stdout


def test_status_counts_the_jobs_of_the_file_not_the_journal_rows(tmp_path: Path) -> None:
    """Ctrl-C early in a 30-line run: the journal has rows for a few jobs; `status` (and the
    summary printed on the way out) still count 30."""
    jobs, out = jobs_file(tmp_path, 30), tmp_path / "out"
    with SimProcess("--concurrency", "3", "--gen-seconds", "0.5", "--video-bytes", "2000") as sim:
        cmd = [*CLI, "run", str(jobs), "--out", str(out), *FAST, "--no-progress"]
        code, _ = interrupt_when(cmd, sim.env(), lambda: any(out.glob("videos/*.mp4")), 30)
    assert code == 130
    rows = journal_rows(out)
    assert 0 < len(rows) < 30
    status = run_cli(["status", str(out)], clean_env())
    assert status.stdout.startswith(f"{out}: 30 jobs\n"), status.stdout
    counts = status_counts(status.stdout)
    assert sum(counts.values()) == 30 and counts["not reached"] == 30 - len(rows)
    assert "submitting" not in status.stdout


def test_status_lists_20_problems_then_a_count(tmp_path: Path) -> None:
    bad = [f'{{"prompt": "bad line {i}"}}' for i in range(25)]
    jobs, out = jobs_file(tmp_path, 2, *bad), tmp_path / "out"
    with SimProcess(*SIM) as sim:
        done = run_cli(["run", str(jobs), "--out", str(out), *FAST, "--no-progress"], sim.env())
    assert done.returncode == 1
    assert done.stdout.splitlines()[-1].startswith("27 jobs: 2 downloaded, 25 rejected;")
    short = run_cli(["status", str(out)], clean_env()).stdout.splitlines()
    listed = [line for line in short if ": rejected: " in line]
    assert [line.split(":")[0].strip() for line in listed] == [f"line {n}" for n in range(3, 23)]
    assert short[-1] == "  … and 5 more (--all to list every one)"
    every = run_cli(["status", str(out), "--all"], clean_env()).stdout.splitlines()
    assert sum(": rejected: " in line for line in every) == 25 and "more" not in every[-1]


def test_a_rerun_says_already_done(tmp_path: Path) -> None:
    jobs, out = jobs_file(tmp_path, 5, '{"prompt": "no images"}'), tmp_path / "out"
    args = ["run", str(jobs), "--out", str(out), *FAST, "--no-progress"]
    with SimProcess(*SIM) as sim:
        first = run_cli(args, sim.env())
        again = run_cli(args, sim.env())
        fetched = run_cli(["download", str(out), "--no-progress"], sim.env())
    assert first.returncode == again.returncode == fetched.returncode == 1  # the bad line
    assert first.stdout.count(": downloaded videos/") == 5
    for done in (again, fetched):
        assert "downloaded videos/" not in done.stdout
        assert done.stdout.count(": already done: videos/") == 5
        assert done.stdout.splitlines()[-1].startswith("6 jobs: 5 already done, 1 rejected;")
    assert "line 6 (" in again.stdout and ": rejected: " in again.stdout


def test_python_users_see_the_same_outcomes(tmp_path: Path) -> None:
    """`BatchResult.outcome` and `.from_earlier_run` tell a rerun's results apart."""
    import asyncio

    from batch_helpers import collect, make_client, make_requests

    from kling_async import run_batch
    from kling_async.simulator import Simulator

    async def twice() -> list[list[Any]]:
        async with Simulator(concurrency=2, gen_seconds=0.05) as sim:
            runs = []
            for _ in range(2):
                async with make_client(sim, concurrency=2) as client:
                    runs.append(await collect(run_batch(client, make_requests(3), tmp_path)))
            return runs

    first, second = asyncio.run(twice())
    assert {(r.outcome, r.from_earlier_run) for r in first} == {("downloaded", False)}
    assert {(r.outcome, r.from_earlier_run) for r in second} == {("already done", True)}
    assert all(r.ok and r.state == "downloaded" for r in second)
