"""Download throughput and memory: kling-async's `stream_to_file` against plain reads of one file.

Each method runs in its own child process (``python -m benchmarks._download MODE URL DEST OUT``),
so its CPU and peak RSS are its own. What each does:

- ``kling-async``: `stream_to_file` — 1 MiB chunks, sha256 of every byte and the file writes on
  two worker threads overlapped with the read, Content-Length check, fsync, atomic rename of
  ``.part``.
- ``raw-disk``: ``async for chunk in resp.content.iter_chunked(1 MiB): f.write(chunk)``
  (writes on the event loop, no hash, no fsync) — the bare read to disk.
- ``sha256``: no network, no disk: hashlib.sha256 over the same number of bytes in 1 MiB slices
  of an in-memory buffer, on one thread — the single-core hash rate. A download that hashes every
  byte cannot beat it, so ``download_limit_ratio`` = kling-async ÷ min(raw-disk, sha256).
- ``raw-discard``: the same read, bytes thrown away (the network/loop ceiling).
- ``raw-same-work``: the raw read plus what `stream_to_file` adds — sha256 of every byte and an
  fsync at the end — all inline on the loop: separates the cost of those guarantees from the
  cost of how they are done.
- ``baseline``: ``data = await resp.read()`` then one write (what the baseline client does).
- ``curl`` (if installed): ``curl -sS -o DEST URL``, run by the parent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

from ._common import ROOT, Meter
from ._sim import SimProcess

__all__ = ["MODES", "DownloadRun", "download_limit", "run_downloads"]

MODES = ("kling-async", "raw-disk", "raw-discard", "raw-same-work", "baseline", "sha256")
CHUNK = 1 << 20


@dataclass(slots=True)
class DownloadRun:
    """One method's best attempt at the file."""

    mode: str
    bytes: int
    seconds: float
    cpu_s: float
    peak_rss_mb: float

    @property
    def mb_per_s(self) -> float:
        """Throughput in MB/s (10^6 bytes)."""
        return self.bytes / self.seconds / 1e6 if self.seconds else 0.0


async def _fetch(mode: str, url: str, dest: Path) -> int:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        if mode == "kling-async":
            from kling_async._download_stream import stream_to_file

            return (await stream_to_file(session, url, dest)).bytes
        async with session.get(url) as resp:
            resp.raise_for_status()
            if mode == "baseline":
                data = await resp.read()
                dest.write_bytes(data)  # noqa: ASYNC240 - the plain way, on purpose
                return len(data)
            size = 0
            if mode == "raw-discard":
                async for chunk in resp.content.iter_chunked(CHUNK):
                    size += len(chunk)
                return size
            digest = hashlib.sha256() if mode == "raw-same-work" else None
            with open(dest, "wb") as fh:  # noqa: ASYNC230 - the plain way, on purpose
                async for chunk in resp.content.iter_chunked(CHUNK):
                    fh.write(chunk)
                    size += len(chunk)
                    if digest is not None:
                        digest.update(chunk)
                if digest is not None:
                    fh.flush()
                    os.fsync(fh.fileno())
            return size


def _hash_only(buf: memoryview, size: int) -> int:
    """sha256 of `size` bytes of `buf` (cycled), 1 MiB per update: hashlib's C loop, one core."""
    block = 1 << 20
    hasher = hashlib.sha256()
    done = 0
    while done < size:
        for off in range(0, len(buf), block):
            piece = buf[off : off + min(block, size - done)]
            hasher.update(piece)
            done += len(piece)
            if done >= size:
                break
    return done


def _child(mode: str, url: str, dest: str, out: str) -> None:
    # sha256 gets the byte count instead of a URL; its buffer is larger than the L2 cache, like
    # streamed data, and made before the clock starts.
    buf = memoryview(os.urandom(64 << 20)) if mode == "sha256" else None
    meter = Meter()
    meter.start()
    if buf is not None:
        size = _hash_only(buf, int(url))
    else:
        size = asyncio.run(_fetch(mode, url, Path(dest)))
    result = meter.result(1, 0)
    run = DownloadRun(mode, size, result.wall_s, result.cpu_s, result.peak_rss_mb)
    Path(out).write_text(json.dumps(asdict(run)))


def _run_child(mode: str, url: str, dest: Path, work: Path) -> DownloadRun:
    out = work / f"download-{mode}.json"
    cmd = [sys.executable, "-m", "benchmarks._download", mode, url, str(dest), str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, timeout=900)
    return DownloadRun(**json.loads(out.read_text()))


def _run_curl(url: str, dest: Path) -> DownloadRun | None:
    curl = shutil.which("curl")
    if curl is None:
        return None
    before = os.times()
    started = time.perf_counter()
    subprocess.run([curl, "-sS", "-o", str(dest), url], check=True, timeout=900)
    seconds = time.perf_counter() - started
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return DownloadRun("curl", dest.stat().st_size, seconds, cpu, float("nan"))


def run_downloads(video_bytes: int, work: Path, *, repeats: int = 1) -> dict[str, DownloadRun]:
    """Every method on the same simulated video; the fastest of `repeats` attempts each."""
    work.mkdir(parents=True, exist_ok=True)
    best: dict[str, DownloadRun] = {}
    with SimProcess(
        concurrency=1, gen_seconds=0.05, video_bytes=video_bytes, log_path=work / "sim.log"
    ) as sim:
        url = sim.create_ready_task()["task_result"]["videos"][0]["url"]
        for _ in range(repeats):
            for mode in (*MODES, "curl"):
                dest = work / f"video-{mode}.mp4"
                os.sync()  # start every attempt without someone else's dirty pages
                if mode == "curl":
                    run = _run_curl(url, dest)
                else:
                    source = str(video_bytes) if mode == "sha256" else url
                    run = _run_child(mode, source, dest, work)
                dest.unlink(missing_ok=True)
                if run is not None and (mode not in best or run.seconds < best[mode].seconds):
                    best[mode] = run
    return best


def download_limit(runs: dict[str, DownloadRun]) -> tuple[float, float, float, float] | None:
    """(ours, bare read to disk, sha256 on one core, ours ÷ the slower of the two) in MB/s."""
    if not all(mode in runs for mode in ("kling-async", "raw-disk", "sha256")):
        return None
    ours, bare, sha = (runs[m].mb_per_s for m in ("kling-async", "raw-disk", "sha256"))
    return ours, bare, sha, ours / min(bare, sha)


if __name__ == "__main__":
    _child(*sys.argv[1:5])
