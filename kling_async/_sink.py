"""Write and sha256 a download on two worker threads, overlapped with the network read.

sha256 is the slowest stage of a download (one core: ~0.7 s per GB with SHA-NI, ~2.5 s
without), so it gets a thread of its own instead of sharing one with the file writes: hashlib
and file writes both release the GIL, so hashing, writing and the event loop's reads run at the
same time. Each stage is a single-thread executor, which runs its batches in submission order;
at most `depth` batches are in flight, so memory stays flat whatever the file size. A small batch
with nothing in flight (a whole short video) is written and hashed in one job on the writer: two
hand-offs to threads cost the event loop more than hashing a few KB.

What callers rely on:
- the file always holds a prefix of the bytes handed in: once a write fails nothing after it is
  written, and a cancellation never drops a batch that was already handed off (it is still
  written, so a later call can resume from it);
- once `drain()` returns, every byte handed in has been written and hashed, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import IO, Any

__all__ = ["WRITEBACK_EVERY", "Chunk", "Pipeline", "append", "checkin", "checkout"]

#: A piece of the body: as aiohttp delivered it, or a view of one (never a copy).
Chunk = bytes | memoryview

#: Start writing dirty pages to disk every this many bytes, so the final fsync finds little left
#: (measured: fsync of 1 GB written without it took ~0.4 s, with it ~0.03 s).
WRITEBACK_EVERY = 64 << 20

#: Idle single-thread workers, reused: a thread per 2 KB video cost more than the video.
_IDLE: list[ThreadPoolExecutor] = []
_MAX_IDLE = 16  # two per download
_IOV_MAX = 1024  # IOV_MAX (buffers per writev) on Linux, macOS and the BSDs
#: Up to this many bytes, a batch with nothing in flight is written and hashed in one job.
JOINT_MAX = 256 << 10


def checkout() -> ThreadPoolExecutor:
    """A single-thread worker: reused if one is idle."""
    return _IDLE.pop() if _IDLE else ThreadPoolExecutor(1, thread_name_prefix="kling-download")


def checkin(pool: ThreadPoolExecutor) -> None:
    """Give a worker back; anything still queued on it runs before the next user's work."""
    if len(_IDLE) < _MAX_IDLE:
        _IDLE.append(pool)
    else:
        pool.shutdown(wait=False)


def append(fh: IO[bytes], batch: list[Chunk]) -> None:
    """Append `batch` to `fh` in as few system calls as it takes (each one retakes the GIL)."""
    if not hasattr(os, "writev"):  # Windows
        for chunk in batch:
            fh.write(chunk)
        return
    fh.flush()  # normally empty; the raw appends below must land after anything it held
    fd = fh.fileno()
    todo = [chunk for chunk in batch if chunk]
    first = 0
    while first < len(todo):
        done = os.writev(fd, todo[first : first + _IOV_MAX])
        while done:  # skip what was written; a short write resumes mid-chunk
            size = len(todo[first])
            if done < size:
                todo[first] = memoryview(todo[first])[done:]
                break
            done -= size
            first += 1


def _hash(hasher: hashlib._Hash, batch: list[Chunk]) -> None:
    for chunk in batch:
        hasher.update(chunk)


def _hash_after(joint: Future[Any] | None, hasher: hashlib._Hash, batch: list[Chunk]) -> None:
    """Hash `batch` once the joint job before it has hashed its own (the digest is in order)."""
    if joint is not None:
        wait([joint])
    _hash(hasher, batch)


def _writeback(fh: IO[bytes], start: int, end: int) -> None:
    """Ask the kernel to start writing [start, end) to disk now (PostgreSQL's pg_flush_data).

    On Linux POSIX_FADV_DONTNEED starts asynchronous writeback of the range's dirty pages (and
    drops its clean ones: here there are none yet), so the final fsync finds little left to do
    and a slow disk slows this thread down gradually instead of one long wait at the end.
    """
    fh.flush()  # a write error surfaces here, not in the hint below
    with contextlib.suppress(OSError):  # only a hint: a file system may not take it
        os.posix_fadvise(fh.fileno(), start, end - start, os.POSIX_FADV_DONTNEED)


class _FileStage:
    """The writer thread's side: appends batches and stops at the first failure."""

    def __init__(
        self, fh: IO[bytes], start: int, write: Callable[[IO[bytes], list[Chunk]], None]
    ) -> None:
        self.fh = fh
        self.write = write
        self.failed = False
        self.end = self.hinted = start  # the file's size: appends go to its end

    def run(self, batch: list[Chunk]) -> None:
        if self.failed:
            return  # writing after a failed batch would leave a gap: the .part stays a prefix
        try:
            self.write(self.fh, batch)
            self.end += sum(map(len, batch))
            if hasattr(os, "posix_fadvise") and self.end - self.hinted >= WRITEBACK_EVERY:
                _writeback(self.fh, self.hinted, self.end)
                self.hinted = self.end
        except BaseException:
            self.failed = True
            raise


async def _settle(job: Future[Any]) -> None:
    """Wait for one job; a cancelled waiter never cancels the job (handed-off bytes are kept)."""
    if not job.done():
        await asyncio.shield(asyncio.wrap_future(job))
    job.result()  # raises what the worker raised


class Pipeline:
    """Append batches to `fh` (`start` bytes long) on `writer`; sha256 them on `hashing`."""

    def __init__(
        self,
        fh: IO[bytes],
        start: int,
        hasher: hashlib._Hash,
        writer: ThreadPoolExecutor,
        hashing: ThreadPoolExecutor,
        *,
        write: Callable[[IO[bytes], list[Chunk]], None],
        depth: int,
    ) -> None:
        self._file = _FileStage(fh, start, write)
        self._hasher = hasher
        self._writer = writer
        self._hashing = hashing
        self._depth = depth
        self._jobs: deque[Future[Any]] = deque()  # oldest first, write and hash of each batch
        self._joint: Future[Any] | None = None  # the last joint job: later hashes follow it

    async def put(self, batch: list[Chunk]) -> None:
        """Hand off one batch; waits while `depth` batches are still being written or hashed."""
        if self._file.failed:
            await self.drain()  # raises the write's error without reading further
        if not self._jobs and sum(map(len, batch)) <= JOINT_MAX:
            self._joint = self._writer.submit(self._write_and_hash, batch)
            self._jobs.append(self._joint)
            return
        self._jobs.append(self._writer.submit(self._file.run, batch))
        self._jobs.append(self._hashing.submit(_hash_after, self._joint, self._hasher, batch))
        while len(self._jobs) > 2 * self._depth:
            await _settle(self._jobs[0])
            self._jobs.popleft()

    def _write_and_hash(self, batch: list[Chunk]) -> None:
        self._file.run(batch)
        _hash(self._hasher, batch)

    async def drain(self) -> None:
        """Wait until every batch handed off is written and hashed; raise the first failure."""
        while self._jobs:
            await _settle(self._jobs[0])
            self._jobs.popleft()
