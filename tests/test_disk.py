"""The output disk fills up mid-batch: the batch stops cleanly, no partial file passes for a
video, and a rerun after space is freed finishes (resuming the partial files with Range)."""

from __future__ import annotations

import errno
import hashlib
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fault_helpers
import pytest
from batch_helpers import (
    SimProcess,
    assert_no_duplicate_creates,
    assert_videos_complete,
    job_line,
    journal_rows,
    make_client,
    make_requests,
    manifest,
    run_cli,
    video_ids,
    write_jobs,
)
from fault_helpers import StartSim, not_ok, run, tally

from kling_async import _download_stream, run_batch
from kling_async.simulator import VideoContent

start_sim = fault_helpers.start_sim  # the fixture, shared with the other fault tests

SIZE = 40_000


class FillingDisk:
    """Stands in for `_download_stream._write`: the disk holds `room` more bytes, then every write
    fails with ENOSPC (after writing what still fitted, as a real disk does)."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.full_errors = 0
        self.writes_after_full = 0
        self._lock = threading.Lock()  # each download writes on its own worker thread
        self._real: Callable[..., None] = _download_stream._write

    def write(self, fh: Any, batch: list[bytes]) -> None:
        with self._lock:
            if self.full_errors:
                self.writes_after_full += 1
            data = b"".join(batch)
            fits, self.room = data[: self.room], max(0, self.room - len(data))
            if len(fits) < len(data):
                self.full_errors += 1
        self._real(fh, [fits])
        if len(fits) < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def served_prefix(content: VideoContent, video_id: str, data: bytes) -> bool:
    """`data` is the start of the video the simulator serves for `video_id`."""
    return not data or data == b"".join(content.iter_range(video_id, 0, len(data) - 1))


async def test_disk_fills_mid_batch_then_rerun(
    start_sim: StartSim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n, parallel = 12, 2
    sim = await start_sim(concurrency=4, gen_seconds=0.1)
    disk = FillingDisk(room=int(3.5 * SIZE))
    monkeypatch.setattr(_download_stream, "_write", disk.write)
    requests = make_requests(n)
    async with make_client(sim, concurrency=4) as client:
        batch = run_batch(client, requests, tmp_path, download_concurrency=parallel)
        results = {r.line: r async for r in batch}
    first = sim.stats.as_dict()
    # Stopped cleanly: the reason says why, and nothing new was sent once the disk was full.
    assert batch.stop_reason is not None and batch.stop_reason.startswith("disk full"), results
    assert "No space left" in batch.stop_reason
    # Once full, no further download was tried: only transfers already running hit the wall.
    assert 1 <= disk.full_errors <= parallel
    assert disk.writes_after_full <= parallel - 1
    assert first["requests"]["video"] <= 3 + parallel + 1
    downloaded = [r for r in results.values() if r.ok]
    assert len(downloaded) == 3
    for result in results.values():
        if not result.ok:
            assert result.state in ("succeeded", "submitting"), not_ok(results)
            assert result.error is not None and "disk" in result.error.message
    rows = {row["line"]: row for row in manifest(tmp_path)}
    assert {line for line, row in rows.items() if row["state"] == "downloaded"} == {
        r.line for r in downloaded
    }
    # No partial file passes for a video: every .mp4 is a verified, journalled download...
    videos = tmp_path / "videos"
    content = VideoContent(SIZE)
    recorded = {}
    for row in journal_rows(tmp_path):
        if row.state == "downloaded":
            assert row.files is not None
            (record,) = row.files
            recorded[Path(record.path).name] = content.sha256(video_ids(row)[0])
    assert {p.name: sha256(p) for p in videos.glob("*.mp4")} == recorded
    # ... and what is left over is a .part holding a prefix of the served video.
    parts = list(videos.glob("*.part"))
    assert 1 <= len(parts) <= parallel
    by_ext = {row.external_id: row for row in journal_rows(tmp_path)}
    kept = 0
    for part in parts:
        (vid,) = video_ids(by_ext[part.name.removesuffix(".mp4.part")])
        data = part.read_bytes()
        assert served_prefix(content, vid, data)
        kept += len(data)

    # Space is freed: a rerun submits the rest and finishes every job, resuming the parts.
    monkeypatch.undo()
    sim.reset_stats()
    async with make_client(sim, concurrency=4) as client:
        again = await run(client, requests, tmp_path)
    stats = sim.stats.as_dict()
    assert len(again) == n and not not_ok(again), not_ok(again)
    assert_no_duplicate_creates(stats)
    assert stats["accepted_creates"] == n - first["accepted_creates"]
    assert stats["video_bytes_served"] == (n - 3) * SIZE - kept
    assert assert_videos_complete(tmp_path, sim.video_sha256, expect=n) == n


async def test_disk_full_at_fsync_leaves_no_file(
    start_sim: StartSim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC surfacing only at flush/fsync time (delayed allocation): never renamed."""
    real = _download_stream._finish
    done = 0

    def finish(fh: Any) -> None:
        nonlocal done
        done += 1
        if done > 2:
            fh.close()
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fh)

    monkeypatch.setattr(_download_stream, "_finish", finish)
    sim = await start_sim(concurrency=3)
    requests = make_requests(5)
    async with make_client(sim, concurrency=3) as client:
        batch = run_batch(client, requests, tmp_path, download_concurrency=1)
        results = {r.line: r async for r in batch}
    assert batch.stop_reason is not None and "disk full" in batch.stop_reason
    assert sum(r.ok for r in results.values()) == 2
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 2
    assert done == 3  # the one that failed; nothing was tried after it
    monkeypatch.undo()
    async with make_client(sim, concurrency=3) as client:
        again = await run(client, requests, tmp_path)
    assert not not_ok(again)
    stats = sim.stats.as_dict()
    assert_no_duplicate_creates(stats)
    assert assert_videos_complete(tmp_path, sim.video_sha256, expect=5) == 5


# -- a real process, a real limit ---------------------------------------------------------

#: Runs the CLI with a file-size limit (RLIMIT_FSIZE; SIGXFSZ ignored, so writes past it fail
#: with EFBIG): the same "nothing more fits" a full disk gives, without root or a tmpfs.
LIMITED = (
    "import resource, signal, sys\n"
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    "limit = int(sys.argv.pop(1))\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n"
    "from kling_async.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource limits")
def test_file_size_limit_in_a_real_process_then_rerun(tmp_path: Path) -> None:
    import subprocess

    size, limit, n = 1_500_000, 1_000_000, 6
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job_line(i) for i in range(n)])
    out = tmp_path / "out"
    args = ["run", str(jobs), "--out", str(out), "--concurrency", "3"]
    args += ["--poll-interval", "0.05", "--no-progress", "--download-concurrency", "2"]
    sim_args = ["--concurrency", "3", "--gen-seconds", "0.2", "--video-bytes", str(size)]
    with SimProcess(*sim_args) as sim:
        env = sim.env()
        full = subprocess.run(
            [sys.executable, "-c", LIMITED, str(limit), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            check=False,
        )
        assert full.returncode == 1, full.stderr
        assert "batch stopped submitting: disk full" in full.stderr
        assert "Traceback" not in full.stderr
        rows = journal_rows(out)
        assert not [r for r in rows if r.state == "downloaded"]
        assert not list((out / "videos").glob("*.mp4"))
        parts = list((out / "videos").glob("*.part"))
        assert 1 <= len(parts) <= 2 and {p.stat().st_size for p in parts} == {limit}
        first = sim.get("/__sim/stats")["stats"]
        assert first["requests"]["video"] <= 2  # stopped at once, no retry of a full disk
        again = run_cli(args, env)
        assert again.returncode == 0, again.stderr
        stats = tally(sim.get("/__sim/stats")["stats"])
    assert_no_duplicate_creates(stats)
    assert stats["accepted_creates"] == n
    served = stats["video_bytes_served"] - first["video_bytes_served"]
    assert served == n * size - len(parts) * limit  # the parts were resumed, not refetched
    content = VideoContent(size)
    assert assert_videos_complete(out, content.sha256, expect=n) == n
