"""`kling-async run JOBS --out DIR --dry-run`: names every bad line, sends and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from batch_helpers import SimThread, clean_env, run_cli
from conftest import make_png

from kling_async import cli


def job(*images: str, **fields: object) -> str:
    return json.dumps({"images": list(images), "prompt": "a job", **fields})


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "a.png").write_bytes(make_png(320, 320))
    (tmp_path / "tiny.png").write_bytes(make_png(100, 100))
    return tmp_path


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_dry_run_sends_nothing_writes_nothing_and_names_every_bad_line(folder: Path) -> None:
    jobs = write(
        folder / "jobs.jsonl",
        job("a.png"),
        job("tiny.png"),
        "{oops",
        job("a.png", mode="pro", duration="10", external_task_id="k1"),
        job("a.png", external_task_id="k1"),
        job("https://example.com/b.png", "a.png", mode="pro"),
    )
    out = folder / "out"
    with SimThread() as st:  # a live account the environment points at: it must hear nothing
        proc = run_cli(["run", str(jobs), "--out", str(out), "--dry-run"], clean_env(**st.env()))
        stats = st.stats()
    assert proc.returncode == 1, proc.stderr
    assert stats["requests"] == {} and stats["accepted_creates"] == 0
    assert not out.exists()  # not even the folder
    lines = proc.stdout.splitlines()
    bad = [text for text in lines if text.startswith("line ")]
    assert [text.split(":")[0] for text in bad] == ["line 2", "line 3", "line 5"]
    assert "field images[0]; rule: ≥ 300 px; value: (100, 100)" in bad[0]
    assert "not valid JSON" in bad[1] and "field line" in bad[1]
    assert "already used by line 4" in bad[2] and "field external_task_id" in bad[2]
    summary = "\n".join(lines[len(bad) :])
    assert "6 jobs, 3 valid, 3 bad" in summary
    assert "kling-v1-6 std 5 s" in summary and "kling-v1-6 pro 10 s" in summary
    assert "estimated units: 11.5" in summary  # 1 + 3.5 + 7
    assert "1 distinct to upload" in summary and "3 uploads" in summary
    assert "duplicate external_task_id 'k1': lines 4, 5" in summary


def test_a_clean_file_exits_0_without_credentials(folder: Path) -> None:
    jobs = write(folder / "jobs.jsonl", job("a.png"), job("a.png", duration="10"))
    out = folder / "out"
    proc = run_cli(["run", str(jobs), "--out", str(out), "--dry-run"], clean_env())
    assert proc.returncode == 0, proc.stderr
    assert "2 jobs, 2 valid, 0 bad" in proc.stdout and "estimated units: 3" in proc.stdout
    assert not out.exists() and proc.stderr == ""


def test_price_flags_change_the_estimate(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jobs = write(folder / "jobs.jsonl", job("a.png"), job("a.png", mode="pro", duration="10"))
    argv = ["run", str(jobs), "--out", str(folder / "out"), "--dry-run"]
    assert cli.main([*argv, "--price", "std-5=0.5", "--price", "pro-10=9"]) == 0
    out = capsys.readouterr().out
    assert "estimated units: 9.5" in out and "std-5=0.5 std-10=2 pro-5=3.5 pro-10=9" in out


@pytest.mark.parametrize(
    ("flag", "words"),
    [
        ("pro-10", "MODE-DURATION=UNITS"),
        ("pro-10=x", "must be a number"),
        ("pro-11=7", "duration must be one of 5, 10"),
        ("turbo-5=1", "mode must be one of std, pro"),
        ("std-5=-1", ">= 0"),
    ],
)
def test_malformed_price_flags_are_usage_errors(
    folder: Path, capsys: pytest.CaptureFixture[str], flag: str, words: str
) -> None:
    jobs = write(folder / "jobs.jsonl", job("a.png"))
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", str(jobs), "--out", str(folder / "out"), "--dry-run", "--price", flag])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"--price {flag!r}" in err and words in err


def test_a_missing_job_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run", str(tmp_path / "no.jsonl"), "--out", str(tmp_path), "--dry-run"]) == 2
    assert "job file not found" in capsys.readouterr().err
