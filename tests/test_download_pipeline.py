"""The download pipeline (kling_async._sink): writes and sha256 on two worker threads.

Whatever the threads' relative speed, or wherever a failure or a cancellation strikes, the .part
must hold a prefix of the video that a later call resumes from, and a digest must cover exactly
the bytes in the file.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import itertools
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import cdn_helpers
import pytest

from kling_async import _download_stream, _sink
from kling_async._download_stream import stream_to_file
from kling_async._errors import DownloadError

server = cdn_helpers.server
session = cdn_helpers.session
BODY, sha = cdn_helpers.BODY, cdn_helpers.sha
SMALL = 16 << 10  # chunk_size: ~19 batches for the 300 KB body


class Writes:
    """Stands in for `_download_stream._write`: records each batch, can lag or fail at the n-th."""

    def __init__(self, *, delay: float = 0.0, fail_at: int | None = None) -> None:
        self.delay, self.fail_at = delay, fail_at
        self.sizes: list[int] = []  # bytes of each batch written
        self.after_failure = 0
        self.lock = threading.Lock()
        self.real = _download_stream._write

    def __call__(self, fh: IO[bytes], batch: list[Any]) -> None:
        time.sleep(self.delay)
        with self.lock:
            if self.fail_at is not None and len(self.sizes) >= self.fail_at:
                self.after_failure += 1
                raise OSError(errno.EIO, "Input/output error")
            self.sizes.append(sum(map(len, batch)))
        self.real(fh, batch)


def part_of(dest: Path) -> bytes:
    """The .part left for `dest`, which must not exist: it is published only when complete."""
    assert not dest.exists()
    return dest.with_name(dest.name + ".part").read_bytes()


def file_sha(path: Path) -> str:
    return sha(path.read_bytes())


async def resumes(session: Any, url: str, dest: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """After a failed attempt: no `dest`, the .part is a prefix, and with the stand-ins gone a
    second call resumes from exactly that prefix to the right file and digest. Returns it."""
    kept = part_of(dest)
    assert BODY.startswith(kept)
    monkeypatch.undo()
    result = await stream_to_file(session, url, dest)
    assert (result.resumed_from, result.sha256) == (len(kept), sha(BODY))
    assert result.bytes == len(BODY) and file_sha(dest) == sha(BODY)
    return kept


async def test_failed_write_stops_later_writes_and_leaves_a_prefix(
    server, session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _ = server
    dest = tmp_path / "v.mp4"
    writes = Writes(delay=0.01, fail_at=2)  # slow: later batches queue up behind the failure
    monkeypatch.setattr(_download_stream, "_write", writes)
    with pytest.raises(DownloadError, match="cannot write") as info:
        await stream_to_file(session, f"{base}/video", dest, chunk_size=SMALL)
    assert isinstance(info.value.__cause__, OSError)
    assert writes.after_failure == 1  # the queued batches after it were never written
    kept = await resumes(session, f"{base}/video", dest, monkeypatch)
    assert len(kept) == sum(writes.sizes)


async def test_failed_hash_fails_the_download_and_leaves_a_prefix(
    server, session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _ = server
    dest = tmp_path / "v.mp4"
    calls = 0
    real = _sink._hash

    def broken(hasher: Any, batch: list[Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise MemoryError("no room to hash")
        real(hasher, batch)

    monkeypatch.setattr(_sink, "_hash", broken)
    with pytest.raises(MemoryError, match="no room to hash"):
        await stream_to_file(session, f"{base}/video", dest, chunk_size=SMALL)
    # Never published with a digest that skipped a batch; the bytes written are still good.
    await resumes(session, f"{base}/video", dest, monkeypatch)


async def test_cancel_while_batches_are_queued_keeps_every_handed_off_batch(
    server, session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, st = server
    st.stall_at = 250_000
    dest = tmp_path / "v.mp4"
    writes = Writes(delay=0.02)  # the disk lags: the loop waits on the pipeline when cancelled
    monkeypatch.setattr(_download_stream, "_write", writes)
    progress: list[int] = []
    task = asyncio.create_task(
        stream_to_file(
            session,
            f"{base}/video",
            dest,
            chunk_size=SMALL,
            on_progress=lambda done, _: progress.append(done),
        )
    )
    await asyncio.wait_for(st.stalled.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Read after stream_to_file returned: every write queued when it was cancelled has run.
    kept = await resumes(session, f"{base}/video", dest, monkeypatch)
    assert len(kept) == sum(writes.sizes) >= (progress[-1] if progress else 0)


async def test_a_cancelled_wait_never_cancels_a_queued_write(tmp_path: Path) -> None:
    writer, hashing = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
    gate = threading.Event()
    writer.submit(gate.wait)  # the writer is busy: the batches below queue up behind this
    with open(tmp_path / "f", "ab") as fh:  # noqa: ASYNC230 - a local test file
        sink = _sink.Pipeline(fh, 0, hashlib.sha256(), writer, hashing, write=_sink.append, depth=1)

        async def feed() -> None:
            for k in range(3):
                await sink.put([bytes([k]) * 10])

        task = asyncio.create_task(feed())
        for _ in range(5):
            await asyncio.sleep(0)  # the second put now waits for batch 0 (queued, not started)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.set()
        writer.shutdown(wait=True)
        hashing.shutdown(wait=True)
    assert (tmp_path / "f").read_bytes() == bytes(10) + b"\x01" * 10


@pytest.mark.parametrize("seed", range(4))
async def test_digest_covers_exactly_the_bytes_written_whatever_the_timing(
    server, session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    base, st = server
    st.body = os.urandom(200_000 + seed * 12_345)
    st.chunked = seed % 2 == 1
    st.cut_at = cut = 70_000 + seed * 9_999  # the first attempt is cut: the second resumes
    rng = random.Random(seed)
    real_write, real_hash = _download_stream._write, _sink._hash

    def jittery_write(fh: IO[bytes], batch: list[Any]) -> None:
        time.sleep(rng.random() * 0.003)
        real_write(fh, batch)

    def jittery_hash(hasher: Any, batch: list[Any]) -> None:
        time.sleep(rng.random() * 0.003)
        real_hash(hasher, batch)

    monkeypatch.setattr(_download_stream, "_write", jittery_write)
    monkeypatch.setattr(_sink, "_hash", jittery_hash)
    dest = tmp_path / "v.mp4"
    with pytest.raises(DownloadError, match="truncated"):
        await stream_to_file(session, f"{base}/video", dest, chunk_size=4096 << seed)
    kept = part_of(dest)  # what aiohttp delivered before it saw the cut (it may hold some back)
    assert len(kept) <= cut and st.body.startswith(kept)
    result = await stream_to_file(session, f"{base}/video", dest, chunk_size=4096 << seed)
    assert result.resumed_from == len(kept)
    assert result.sha256 == file_sha(dest) == sha(st.body)


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise here")
async def test_writeback_hints_cover_the_new_bytes_in_order(
    server, session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, st = server
    st.cut_at = 50_000
    hints: list[tuple[int, int]] = []
    real = os.posix_fadvise

    def record(fd: int, offset: int, length: int, advice: int) -> None:
        hints.append((offset, length))
        real(fd, offset, length, advice)

    monkeypatch.setattr(_sink, "WRITEBACK_EVERY", 64 << 10)
    monkeypatch.setattr(os, "posix_fadvise", record)
    dest = tmp_path / "v.mp4"
    with pytest.raises(DownloadError):
        await stream_to_file(session, f"{base}/video", dest, chunk_size=SMALL)
    hints.clear()
    result = await stream_to_file(session, f"{base}/video", dest, chunk_size=SMALL)
    assert result.sha256 == sha(BODY)
    # Contiguous from where the resumed part ended, each at least WRITEBACK_EVERY long.
    assert hints[0][0] == 50_000
    assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(hints))
    assert all(n >= 64 << 10 for _, n in hints)
    assert hints[-1][0] + hints[-1][1] <= len(BODY)


@pytest.mark.skipif(not hasattr(os, "writev"), reason="no writev here")
def test_append_survives_short_writes_and_many_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.writev
    calls: list[int] = []  # buffers per call
    limit: int | None = None  # bytes per call, as a signal or a nearly full disk may cut it

    def writev(fd: int, buffers: list[Any]) -> int:
        calls.append(len(buffers))
        if limit is None:
            return real(fd, buffers)
        return real(fd, [bytes(buffers[0])[:limit]])

    monkeypatch.setattr(os, "writev", writev)
    data = os.urandom(50_000)
    pieces: list[_sink.Chunk] = [data[i : i + 7] for i in range(0, 20_006, 7)]  # > IOV_MAX
    pieces += [b"", memoryview(data)[20_006:]]
    with open(tmp_path / "f", "ab") as fh:
        _sink.append(fh, pieces)
    assert (tmp_path / "f").read_bytes() == data
    assert len(calls) > 1 and max(calls) <= 1024
    limit = 1000
    with open(tmp_path / "g", "ab") as fh:
        fh.write(b"head")  # still buffered: must land before the appended batch
        _sink.append(fh, [data[:2500], memoryview(data)[2500:6000]])
    assert (tmp_path / "g").read_bytes() == b"head" + data[:6000]
