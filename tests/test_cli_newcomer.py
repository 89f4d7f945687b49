"""The command line as a newcomer first meets it, each point run as the user runs it (a process)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import CLI, clean_env, interrupt_when, job_line, manifest, run_cli, write_jobs

import kling_async as kling

pytestmark = pytest.mark.slow


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_missing_credentials_point_at_simulate(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job_line(0)])
    for env in (clean_env(), clean_env(KLING_ACCESS_KEY="AK-only")):
        done = run_cli(["run", str(jobs), "--out", str(tmp_path / "out")], env, timeout=30)
        assert done.returncode == 2, done.stderr
        assert "KLING_" in done.stderr and "add --simulate" in done.stderr
        assert "Traceback" not in done.stderr
    # The library's own error stays about the library: no command-line flag in it.
    with pytest.raises(kling.ConfigurationError) as info:
        kling.Client(environ={})
    assert "KLING_ACCESS_KEY" in str(info.value) and "--simulate" not in str(info.value)


@pytest.mark.parametrize("flag", ["--port", "--video-port"])
def test_simulate_on_a_busy_port_names_it_and_suggests_port_0(flag: str, busy_port: int) -> None:
    ports = {"--port": "0", "--video-port": "0", flag: str(busy_port)}
    args = ["simulate", *(x for pair in ports.items() for x in pair)]
    done = run_cli(args, clean_env(), timeout=30)
    assert done.returncode == 2, done.stderr
    assert f"port {busy_port} on 127.0.0.1 is already in use" in done.stderr
    assert f"{flag} 0" in done.stderr and "Traceback" not in done.stderr


# -- small truths about the job file ------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n\n   \n", "\ufeff\n"])
def test_a_job_file_without_jobs_says_so_and_exits_1(tmp_path: Path, text: str) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(text, encoding="utf-8")
    done = run_cli(["run", str(jobs), "--out", str(tmp_path / "out"), "--simulate"], clean_env())
    assert done.returncode == 1, done.stderr
    assert f"no jobs in {jobs}" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_directory_as_the_job_file_is_named_a_directory(tmp_path: Path) -> None:
    done = run_cli(["run", str(tmp_path), "--out", str(tmp_path / "out")], clean_env())
    assert done.returncode == 2, done.stderr
    assert f"{tmp_path} is a directory" in done.stderr and "not found" not in done.stderr


def test_a_watermark_that_is_not_a_json_boolean_is_refused(tmp_path: Path) -> None:
    bad = [
        ("watermark", "yes"),
        ("watermark", 1),
        ("watermark", "true"),
        ("watermark_info", {"enabled": "false"}),
    ]
    lines = [job_line(0)] + [job_line(i, **{key: value}) for i, (key, value) in enumerate(bad, 1)]
    jobs, out = write_jobs(tmp_path / "jobs.jsonl", lines), tmp_path / "out"
    done = run_cli(
        ["run", str(jobs), "--out", str(out), "--simulate", "--no-progress"], clean_env()
    )
    assert done.returncode == 1, done.stderr  # the bad lines are reported, the good one is done
    for line, (key, value) in enumerate(bad, 2):
        named = "watermark_info.enabled: " if key == "watermark_info" else "watermark: "
        shown = repr(value["enabled"] if isinstance(value, dict) else value)
        assert f"line {line} (" in done.stdout
        assert f"{named}expected true or false (a JSON boolean), got {shown}" in done.stdout
    states = {row["line"]: row["state"] for row in manifest(out)}
    assert states == {1: "downloaded", 2: "rejected", 3: "rejected", 4: "rejected", 5: "rejected"}


# -- the --simulate demo resumes like a real account --------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
DEMO_JOBS = ROOT / "examples" / "jobs.jsonl"
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def _demo_counts() -> tuple[int, int]:
    """How many jobs the demo file holds, and how many video files they make."""
    lines = DEMO_JOBS.read_text(encoding="utf-8").splitlines()
    jobs = [json.loads(line) for line in lines if line.strip() and not line.startswith("#")]
    watermarked = sum(
        bool(job.get("watermark") or (job.get("watermark_info") or {}).get("enabled"))
        for job in jobs
    )
    return len(jobs), len(jobs) + watermarked


def test_readme_counts_what_the_demo_writes() -> None:
    jobs, files = _demo_counts()
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    claim = f"the {NUMBERS[jobs]} jobs of `examples/jobs.jsonl` become {NUMBERS[files]} videos"
    assert claim in readme


def _saved_tasks(out: Path) -> list[dict[str, Any]]:
    """The demo account's tasks, as the simulator saved them in DIR."""
    lines = (out / "simulator-state.jsonl").read_text(encoding="utf-8").splitlines()
    return [record["task"] for record in map(json.loads, lines) if "task" in record]


def _states(out: Path) -> dict[int, tuple[str, str | None]]:
    return {row["line"]: (row["state"], row["task_id"]) for row in manifest(out)}


def test_simulate_demo_resumes_after_ctrl_c(tmp_path: Path) -> None:
    out = tmp_path / "out"
    demo = [*CLI, "run", str(DEMO_JOBS), "--out", str(out), "--simulate", "--no-progress"]
    # Ctrl-C once the first video is on disk: the other jobs are queued, running or waiting.
    code, err = interrupt_when(demo, clean_env(), lambda: any(out.glob("videos/*.mp4")), 30)
    assert code == 130, err
    first = _saved_tasks(out)
    before = _states(out)
    assert first and sum(s == "downloaded" for s, _ in before.values()) < len(before)

    # `download --simulate` finds the same account: nothing it knew goes back to "submitting".
    fetched = run_cli(["download", str(out), "--simulate", "--no-progress"], clean_env(), 60)
    assert "Traceback" not in fetched.stderr, fetched.stderr
    assert "1203" not in fetched.stdout + fetched.stderr, fetched.stdout
    after = _states(out)
    for line, (state, task_id) in before.items():
        if task_id is not None:
            assert after[line][1] == task_id and after[line][0] != "submitting", (line, state)

    again = run_cli(demo[len(CLI) :], clean_env(), timeout=60)
    assert again.returncode == 0, again.stderr
    rows = manifest(out)
    n_jobs, n_files = _demo_counts()  # what the README promises: 8 jobs, 9 files
    assert len(rows) == n_jobs and {row["state"] for row in rows} == {"downloaded"}
    files = [out / f["path"] for row in rows for f in row["files"]]
    assert len(files) == n_files and all(f.is_file() and f.stat().st_size > 0 for f in files)
    assert sorted(p.name for p in (out / "videos").iterdir()) == sorted(f.name for f in files)
    # No job created twice: one task per job, and the first run's tasks kept as they were.
    tasks = _saved_tasks(out)
    assert len(tasks) == n_jobs and tasks[: len(first)] == first
    assert len({t["request"]["external_task_id"] for t in tasks}) == n_jobs
    assert {row["task_id"] for row in rows} == {t["task_id"] for t in tasks}
