"""Issue 10: the disk is the truth (deleted or damaged videos are noticed and fetched again) and
bad output folders fail fast — exit 2 naming the path and the reason, never a hang."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import CLI, SimThread, clean_env, make_client, make_requests, simulators
from ownership_helpers import World, line

from kling_async import JournalError, OutputFolderError, cli, run_batch
from kling_async._journal import Journal

pytestmark = pytest.mark.slow


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with SimThread(concurrency=4) as st:
        yield World(st, tmp_path)


def files_of(world: World) -> list[Path]:
    return [world.out / row["files"][0]["path"] for row in world.check()]


def test_deleted_and_damaged_videos_are_fetched_again(world: World) -> None:
    world.write([line(f"job {i}") for i in range(4)])
    assert world.run().returncode == 0
    gone, cut, flipped, _intact = files_of(world)
    gone.unlink()
    with cut.open("r+b") as fh:
        fh.truncate(1000)
    data = bytearray(flipped.read_bytes())
    data[100] ^= 0xFF  # same size, other bytes: only a re-hash sees it
    flipped.write_bytes(bytes(data))

    status = world.cli("status", str(world.out))
    assert status.returncode == 1
    assert f"{gone.relative_to(world.out)} missing" in status.stdout
    assert f"{cut.relative_to(world.out)} damaged (1,000 bytes on disk" in status.stdout
    assert flipped.name not in status.stdout and "2 of 4 downloaded file(s)" in status.stdout
    verify = world.cli("status", str(world.out), "--verify")
    assert verify.returncode == 1 and flipped.name in verify.stdout
    assert "3 of 4 downloaded file(s) (re-hashed)" in verify.stdout

    before = world.stats()["requests"].get("video", 0)
    done = world.cli("download", str(world.out), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert world.stats()["requests"]["video"] - before == 2  # the size check found two
    done = world.cli("download", str(world.out), "--verify", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert world.stats()["requests"]["video"] - before == 3  # the re-hash found the third
    assert world.cli("status", str(world.out), "--verify").returncode == 0
    world.check()
    assert world.creates() == 4

    gone.unlink()  # a rerun of `run` notices too
    done = world.run()
    assert done.returncode == 0 and gone.exists(), done.stderr
    world.check()


def test_a_lost_video_past_retention_is_reported(world: World) -> None:
    world.write([line("old job")])
    assert world.run().returncode == 0
    (path,) = files_of(world)
    path.unlink()
    world.st.call(world.st.sim.advance, 31 * 86_400)
    done = world.cli("download", str(world.out), "--no-progress")
    assert done.returncode == 1
    assert "expired" in done.stdout and f"{path.relative_to(world.out)} missing" in done.stdout
    assert world.cli("status", str(world.out)).returncode == 0  # expired: nothing claims a file
    assert world.creates() == 1


# -- bad folders --------------------------------------------------------------------------------


def _file_as_out(root: Path) -> tuple[Path, str]:
    (root / "out").write_text("not a folder")
    return root / "out", "is a file, not a folder"


def _file_as_videos(root: Path) -> tuple[Path, str]:
    (root / "out").mkdir()
    (root / "out" / "videos").write_text("not a folder")
    return root / "out", "videos is a file, not a folder"


def _journal(data: bytes) -> Callable[[Path], tuple[Path, str]]:
    def make(root: Path) -> tuple[Path, str]:
        (root / "out").mkdir()
        (root / "out" / "journal.sqlite3").write_bytes(data)
        return root / "out", "journal.sqlite3"

    return make


def _foreign(root: Path) -> tuple[Path, str]:
    (root / "out").mkdir()
    db = sqlite3.connect(root / "out" / "journal.sqlite3")
    db.execute("CREATE TABLE photos (id INTEGER)")
    db.commit()
    db.close()
    return root / "out", "is not a kling-async journal"


def _newer(root: Path) -> tuple[Path, str]:
    (root / "out").mkdir()
    Journal(root / "out" / "journal.sqlite3").close_sync()
    db = sqlite3.connect(root / "out" / "journal.sqlite3")
    db.execute("PRAGMA user_version = 7")
    db.commit()
    db.close()
    return root / "out", "written by a newer kling-async (schema 7"


BAD = {
    "out-is-a-file": _file_as_out,
    "videos-is-a-file": _file_as_videos,
    "corrupt-journal": _journal(b"\x00garbage" * 500),
    "truncated-journal": _journal(b"SQLite format 3\x00" + b"\x01" * 200),
    "foreign-sqlite": _foreign,
    "newer-schema": _newer,
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_folders_exit_2_at_once(tmp_path: Path, case: str) -> None:
    out, reason = BAD[case](tmp_path)
    jobs = World.write(World.__new__(World), [line("x")], tmp_path / "jobs.jsonl")
    env = clean_env(
        KLING_ACCESS_KEY="AKtest0123456789abcdefAK",
        KLING_SECRET_KEY="SKtest-0123456789abcdef0123456789abcdef-secret",
        KLING_BASE_URL="http://127.0.0.1:9",  # never reached: the folder is checked first
    )
    commands = [["run", str(jobs), "--out", str(out), "--no-progress"], ["download", str(out)]]
    if case != "videos-is-a-file":  # `status` only reads the journal
        commands.append(["status", str(out)])

    def attempt(args: list[str]) -> tuple[list[str], Any, float]:
        started = time.monotonic()
        done = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=30)
        return args, done, time.monotonic() - started

    # One after another: run and download both lock the folder, so side by side the loser
    # could report the lock instead of what is wrong with the folder.
    outcomes = [attempt(args) for args in commands]
    for args, done, took in outcomes:
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr
        if case == "videos-is-a-file" and args[0] == "download":
            assert "no batch journal" in done.stderr
            continue
        assert str(out) in done.stderr and reason in done.stderr, (args, done.stderr)
        assert took < 10, f"{args[0]} took {took:.1f} s"  # a second, plus interpreter start


def test_unwritable_folder_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder we may not write to (root may write anywhere, so as root the folder is a
    read-only tmpfs in a private mount namespace)."""
    jobs = World.write(World.__new__(World), [line("x")], tmp_path / "jobs.jsonl")
    env = clean_env(KLING_ACCESS_KEY="a" * 32, KLING_SECRET_KEY="b" * 32)
    ro = tmp_path / "ro"
    ro.mkdir()
    for out, reason in ((ro, f"output folder {ro} is not writable"), (ro / "sub", "cannot create")):
        args = [*CLI, "run", str(jobs), "--out", str(out)]
        if os.geteuid() != 0:
            ro.chmod(0o555)
            done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=30)
        elif shutil.which("unshare"):
            script = 'mount -t tmpfs -o ro tmpfs "$0" || exit 97; exec "$@"'
            done = subprocess.run(
                ["unshare", "-m", "sh", "-c", script, str(ro), *args],
                capture_output=True,
                text=True,
                env=env,
                timeout=30,
            )
        else:
            done = None
        if done is None or done.returncode == 97:  # no mount namespace here: fake the refusal
            monkeypatch.setattr(os, "access", lambda *a, **k: False)
            monkeypatch.setattr(Path, "mkdir", _refuse)
            for key, value in env.items():
                monkeypatch.setenv(key, value)
            assert cli.main(args[3:]) == 2
            err = capsys.readouterr().err
        else:
            assert done.returncode == 2, done.stderr
            err = done.stderr
        assert reason in err and str(out) in err and "Traceback" not in err


def _refuse(*args: object, **kwargs: object) -> None:
    raise PermissionError(13, "Read-only file system")


async def test_python_api_raises_instead_of_hanging(tmp_path: Path) -> None:
    """An engine that fails before its first result ends the loop with the error."""
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "journal.sqlite3").write_bytes(b"nope" * 300)
    async with simulators() as start:
        sim = await start()
        async with make_client(sim) as client:
            for out, error in (
                (tmp_path / "a-file", OutputFolderError),
                (tmp_path / "bad", JournalError),
            ):
                with pytest.raises(error, match=str(out)):
                    await asyncio.wait_for(_drain(run_batch(client, make_requests(1), out)), 5)


async def _drain(batch: Any) -> None:
    async for _ in batch:
        pass


def test_status_reads_while_a_batch_holds_the_folder(world: World) -> None:
    world.write([line("a")])
    assert world.run().returncode == 0
    code = (
        "from pathlib import Path; from kling_async._folder import FolderLock; "
        f"FolderLock.acquire(Path({str(world.out)!r})); print('locked', flush=True); input()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline()
        assert world.cli("status", str(world.out)).returncode == 0
        busy = world.cli("download", str(world.out))
        assert busy.returncode == 2 and f"PID {holder.pid}" in busy.stderr
    finally:
        holder.kill()
        holder.communicate(timeout=10)
