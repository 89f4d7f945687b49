"""Stream a finished video from Kling's CDN to disk: atomic, sha256-verified and resumable.

The body goes to `<dest>.part`; `dest` appears only through `os.replace` once every byte has
arrived and been fsynced, so a crash or error never leaves a half-written `dest`. A leftover
`.part` is resumed with a Range request. Memory stays flat: chunks are handed in >= `chunk_size`
batches to `_sink.Pipeline`, which writes and hashes them on two worker threads while the next
batches are read from the network.

Hand `stream_to_file` a session WITHOUT default auth headers: the CDN is a third party and must
never see our API token (a session carrying `Authorization` is refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import aiohttp

from ._config import DEFAULT_TIMEOUTS, Timeouts
from ._errors import (
    ConfigurationError,
    DiskFullError,
    DownloadError,
    DownloadHTTPError,
    VideoGoneError,
    VideoUnavailableError,
)
from ._names import redact_url, safe_filename
from ._saver import fsync_dir
from ._saver import run as saved
from ._server_time import ServerClock
from ._sink import JOINT_MAX, Chunk, Pipeline, append, checkin, checkout

__all__ = [
    "DownloadResult",
    "ProgressCallback",
    "http_url",
    "redact_url",
    "safe_filename",
    "stream_to_file",
]

ProgressCallback = Callable[[int, "int | None"], None]

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
_VIDEO_TYPES = frozenset(["application/octet-stream", "binary/octet-stream", "application/mp4"])
_QUERY = re.compile(r"\?\S*")
#: Batches in flight per download (each >= chunk_size): enough that the hashing thread always
#: finds the next batch waiting, few enough to keep memory flat.
_DEPTH = 2


@dataclass(frozen=True, slots=True)
class DownloadResult:
    """A finished download: final path, size, sha256 hex digest and bytes reused from a .part."""

    path: Path
    bytes: int
    sha256: str
    resumed_from: int


def http_url(url: str) -> str:
    """`url` as shown in messages (query redacted); DownloadError unless http(s) with a host.

    file:, ftp:, javascript:, a URL without a host…: refused at once, never retried.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        usable = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:
        usable = False
    if not usable:  # bounded: whatever a server sends as a "URL"
        raise DownloadError(
            f"refusing to download a non-http(s) URL: {shown[:200]}", url=shown[:200]
        )
    return shown


def _open_part(part: Path, opened: list[IO[bytes]]) -> tuple[IO[bytes], hashlib._Hash, int]:
    """Open (or create) the .part for appending and hash what an earlier attempt left in it."""
    part.parent.mkdir(parents=True, exist_ok=True)
    fh = open(part, "a+b")  # noqa: SIM115 - closed through `opened` on every path
    opened.append(fh)
    hasher = hashlib.sha256()
    fh.seek(0)
    while block := fh.read(1 << 20):
        hasher.update(block)
    return fh, hasher, fh.tell()


def _new_part(part: Path, opened: list[IO[bytes]]) -> IO[bytes]:
    """Create (or empty) the .part for a body that starts at byte zero."""
    part.parent.mkdir(parents=True, exist_ok=True)
    fh = open(part, "wb")  # noqa: SIM115 - closed through `opened` on every path
    opened.append(fh)
    return fh


def _close(opened: list[IO[bytes]]) -> None:
    for fh in opened:
        fh.close()  # a no-op after _finish


_write = append  # module-level so tests can stand in a full disk


def _drop_if_empty(part: Path) -> None:
    """An attempt that wrote nothing leaves no `.part` behind (nothing to resume from)."""
    with contextlib.suppress(FileNotFoundError):
        if part.stat().st_size == 0:
            part.unlink()


def _clean_up(opened: list[IO[bytes]], part: Path) -> tuple[None, None]:
    _close(opened)
    _drop_if_empty(part)
    return None, None


def _finish(fh: IO[bytes]) -> None:
    """Make the bytes durable before the rename can publish them."""
    fh.flush()
    os.fsync(fh.fileno())
    fh.close()


def _publish(fh: IO[bytes], part: Path, dest: Path) -> None:
    """`_finish`, then `_commit`: the bytes are durable before the rename publishes them."""
    _finish(fh)
    _commit(part, dest)


def _commit(part: Path, dest: Path) -> None:
    """Publish the .part as `dest` atomically, then persist the rename itself (best effort)."""
    os.replace(part, dest)
    fsync_dir(dest.parent)


@dataclass(slots=True)
class _Whole:
    """A small body read into memory whole, then saved by one job on the writer."""

    chunks: list[Chunk]
    size: int
    total: int
    failure: Exception | None  # the network error that cut it short
    digest: str = ""  # set by `_save_whole`

    @property
    def complete(self) -> bool:
        return self.failure is None and self.size == self.total


async def _read_whole(
    resp: aiohttp.ClientResponse, total: int, on_progress: ProgressCallback | None
) -> _Whole:
    chunks: list[Chunk] = []
    failure: Exception | None = None
    try:
        async for data, _ in resp.content.iter_chunks():
            chunks.append(data)
    except (aiohttp.ClientError, TimeoutError) as exc:
        failure = exc  # still save what did arrive: a prefix a later call can resume from
    whole = _Whole(chunks, sum(map(len, chunks)), total, failure)
    if whole.size and on_progress is not None:
        on_progress(whole.size, total)
    return whole


def _save_whole(
    part: Path, dest: Path, whole: _Whole, expected: str | None, opened: list[IO[bytes]]
) -> tuple[bool, Path | None]:
    """Write, hash and fsync the .part in one job on the saver; publish it (True) only if
    complete and as expected (the saver then fsyncs the folder, with those of the jobs run
    beside it). Otherwise a durable prefix stays to resume from (a wrong digest removes it)."""
    fh = _new_part(part, opened)
    _write(fh, whole.chunks)
    hasher = hashlib.sha256()
    for chunk in whole.chunks:
        hasher.update(chunk)
    whole.digest = hasher.hexdigest()
    matches = expected is None or whole.digest == expected.lower()
    _finish(fh)
    if whole.complete and matches:
        os.replace(part, dest)
        return True, dest.parent
    if whole.complete:
        part.unlink()
    return False, None


def _check_whole(whole: _Whole, shown: str, expected: str | None, dest: Path) -> DownloadResult:
    """The result of a body saved whole, or the error `stream_to_file` raises for it."""
    if whole.failure is not None:
        msg = f"download of {shown} truncated after {whole.size} of {whole.total} bytes"
        failure = whole.failure
        raise DownloadError(f"{msg}: {type(failure).__name__}", url=shown) from failure
    if whole.size != whole.total:
        raise _size_error(shown, whole.size, whole.total)
    if expected is not None and whole.digest != expected.lower():
        raise DownloadError(f"sha256 mismatch for {shown}: got {whole.digest}", url=shown)
    return DownloadResult(path=dest, bytes=whole.size, sha256=whole.digest, resumed_from=0)


def _size_error(shown: str, received: int, total: int) -> DownloadError:
    what = "truncated" if received < total else "longer than declared"
    return DownloadError(f"download of {shown} {what} after {received} of {total} bytes", url=shown)


def _plan(resp: aiohttp.ClientResponse, offset: int, shown: str) -> tuple[int, int | None] | None:
    """(first byte of the body, expected file size) — or None: drop the .part, ask without Range."""
    status = resp.status
    match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
    if offset and (status == 416 or (status == 206 and (not match or int(match[1]) != offset))):
        return None
    if status in (403, 404, 410):
        cls = VideoGoneError if status == 410 else VideoUnavailableError
        raise cls(f"video unavailable (HTTP {status}): {shown}", url=shown, status=status)
    if status not in (200, 206):
        raise DownloadHTTPError(f"HTTP {status} from {shown}", url=shown, status=status)
    media = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if media and not media.startswith("video/") and media not in _VIDEO_TYPES:
        raise DownloadError(f"not a video: {media} from {shown}", url=shown)
    if status == 200:
        return 0, resp.content_length
    if match is None or int(match[1]) != offset:  # 206 to a request without Range
        raise DownloadHTTPError(f"unexpected partial content from {shown}", url=shown, status=206)
    if match[3] != "*":
        return offset, int(match[3])
    return offset, None if resp.content_length is None else offset + resp.content_length


async def stream_to_file(
    session: aiohttp.ClientSession,
    url: str,
    dest: Path,
    *,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
    chunk_size: int = 1 << 20,
    expected_sha256: str | None = None,
    on_progress: ProgressCallback | None = None,
    server_clock: ServerClock | None = None,
) -> DownloadResult:
    """Download `url` to `dest` through `<dest>.part`, resuming a leftover part when allowed.

    Each answer's `Date` goes to `server_clock`; an attempt that wrote nothing leaves no `.part`.
    """
    shown = http_url(url)
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    if "Authorization" in session.headers or session.auth is not None:
        raise ConfigurationError("download session must not carry credentials: the CDN is public")
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    # The default total=300 s would kill a large download; bound each connect and read instead.
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=timeouts.connect, sock_read=timeouts.download_read
    )
    loop = asyncio.get_running_loop()
    # The writer keeps open, writes, fsync and close in submission order, even after a
    # cancellation; the hashing worker only ever hashes.
    pool, hashing = checkout(), checkout()
    opened: list[IO[bytes]] = []  # filled on the worker, so even a cancelled open gets closed
    published = saver = False
    fh: IO[bytes] | None = None
    hasher, offset = hashlib.sha256(), 0
    try:
        # Without a .part (one stat, cheaper than a hop to a thread) the request goes first:
        # a small body is then saved whole in one job on the writer.
        if part.exists():
            fh, hasher, offset = await loop.run_in_executor(pool, _open_part, part, opened)
        while True:
            # Headers are explicit and carry no Authorization: the CDN must not see our token.
            # identity: byte counts and ranges must refer to the stored bytes, not a gzip stream.
            headers = {"Accept-Encoding": "identity"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            sent = server_clock.wall() if server_clock is not None else 0.0
            async with session.get(
                url, headers=headers, timeout=timeout, read_bufsize=chunk_size
            ) as resp:
                if server_clock is not None:
                    server_clock.observe(resp.headers.get("Date"), sent, server_clock.wall())
                plan = _plan(resp, offset, shown)
                if plan is None or (offset and plan[0] == 0):  # the server will not resume
                    # Drop the .part; append mode then writes from zero.
                    assert fh is not None  # offset > 0: the .part is open
                    await loop.run_in_executor(pool, fh.truncate, 0)
                    hasher, offset = hashlib.sha256(), 0
                if plan is None:
                    continue
                total = plan[1]
                if fh is None and total is not None and total <= JOINT_MAX:
                    whole = await _read_whole(resp, total, on_progress)
                    saver = True  # from here the cleanup, if any, queues behind the save
                    job = partial(_save_whole, part, dest, whole, expected_sha256, opened)
                    published = await saved(job)
                    return _check_whole(whole, shown, expected_sha256, dest)
                if fh is None:  # no .part was there: start one (offset and hasher are fresh)
                    # Here, not on the writer: an await before the first read lets aiohttp drop
                    # what arrived before a connection error (it raises before buffered data).
                    fh = _new_part(part, opened)
                sink = Pipeline(fh, offset, hasher, pool, hashing, write=_write, depth=_DEPTH)
                received = await _pump(resp, sink, offset, total, chunk_size, on_progress, shown)
            break
        assert fh is not None  # opened before the pump
        digest = hasher.hexdigest()  # every byte is hashed once the pump has drained
        if total is not None and received != total:
            await loop.run_in_executor(pool, _finish, fh)  # a durable prefix to resume from
            raise _size_error(shown, received, total)
        if expected_sha256 is not None and digest != expected_sha256.lower():
            await loop.run_in_executor(pool, _finish, fh)
            await loop.run_in_executor(pool, part.unlink)
            raise DownloadError(f"sha256 mismatch for {shown}: got {digest}", url=shown)
        # fsync, then rename: one hop to the writer (each hop costs the loop a wake-up).
        await loop.run_in_executor(pool, _publish, fh, part, dest)
        published = True  # _publish closed the file: no closing hop needed
        return DownloadResult(path=dest, bytes=received, sha256=digest, resumed_from=offset)
    except (aiohttp.ClientError, TimeoutError) as exc:  # before OSError: both subclass it
        detail = _QUERY.sub("?…", str(exc))  # aiohttp may quote a signed URL
        raise DownloadError(f"download of {shown} failed: {detail}", url=shown) from exc
    except OSError as exc:  # EFBIG (a file-size limit) is full too: no later video fits
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        cls, what = (DiskFullError, "disk full") if full else (DownloadError, "cannot write")
        raise cls(f"{what} while saving {shown} to {part}: {exc}", url=shown) from exc
    finally:
        if not published:  # queued behind any pending open, write or save
            with contextlib.suppress(OSError):
                if saver:
                    await saved(partial(_clean_up, opened, part))
                else:
                    await loop.run_in_executor(pool, _close, opened)
                    await loop.run_in_executor(pool, _drop_if_empty, part)
        checkin(pool)
        checkin(hashing)


async def _pump(
    resp: aiohttp.ClientResponse,
    sink: Pipeline,
    received: int,
    total: int | None,
    chunk_size: int,
    on_progress: ProgressCallback | None,
    shown: str,
) -> int:
    """Copy the body into `sink` in >= `chunk_size` batches; return the file size."""
    batch: list[Chunk] = []
    size = 0

    async def hand_off() -> None:
        nonlocal batch, size, received
        if batch:
            await sink.put(batch)
            received += size
            if on_progress is not None:
                on_progress(received, total)
            batch, size = [], 0

    failure: Exception | None = None
    try:
        # Chunks as they arrived: iter_chunked would join (copy) whatever piled up meanwhile.
        async for data, _ in resp.content.iter_chunks():
            for start in range(0, len(data), chunk_size):
                # A chunk bigger than chunk_size is handed off in views (no copy), so progress
                # still comes every chunk_size bytes.
                end = start + chunk_size
                chunk = data if len(data) <= chunk_size else memoryview(data)[start:end]
                batch.append(chunk)
                size += len(chunk)
                if size >= chunk_size:
                    await hand_off()
    except (aiohttp.ClientError, TimeoutError) as exc:
        failure = exc  # still write what did arrive: a valid prefix a later call can resume from
    await hand_off()
    await sink.drain()
    if failure is not None:
        of = "an unknown number of" if total is None else total
        msg = f"download of {shown} truncated after {received} of {of} bytes"
        raise DownloadError(f"{msg}: {type(failure).__name__}", url=shown) from failure
    return received
