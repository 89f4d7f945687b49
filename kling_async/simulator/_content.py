"""Video bodies: the shipped sample MP4, or N deterministic bytes generated while streaming."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "SAMPLE_PATH",
    "RangeNotSatisfiable",
    "VideoContent",
    "parse_range",
    "pattern_block",
    "sample_bytes",
]

SAMPLE_PATH = Path(__file__).with_name("assets") / "sample.mp4"
BLOCK_SIZE = 64 * 1024
# An ISO-BMFF "ftyp" box, so generated bodies at least start like an MP4 file.
_FTYP = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"


@functools.cache
def sample_bytes() -> bytes:
    """The tiny playable MP4 shipped with the package."""
    return SAMPLE_PATH.read_bytes()


@functools.lru_cache(maxsize=64)
def pattern_block(name: str) -> bytes:
    """The 64 KiB block that a generated video repeats: ftyp box + sha256 chain of ``name``."""
    seed = hashlib.sha256(name.encode()).digest()
    parts = [_FTYP]
    size = len(_FTYP)
    counter = 0
    while size < BLOCK_SIZE:
        digest = hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        parts.append(digest)
        size += len(digest)
        counter += 1
    return b"".join(parts)[:BLOCK_SIZE]


class VideoContent:
    """What the video origin serves for a video name (video id, or id + "-wm")."""

    def __init__(self, video_bytes: int | None = None) -> None:
        self.video_bytes = video_bytes

    def size(self, name: str) -> int:
        """Body length in bytes."""
        return len(sample_bytes()) if self.video_bytes is None else self.video_bytes

    def iter_range(self, name: str, start: int, end: int) -> Iterator[bytes]:
        """Yield bytes ``start`` to ``end`` (inclusive) in chunks of at most 64 KiB."""
        if self.video_bytes is None:
            data = sample_bytes()
            for pos in range(start, end + 1, BLOCK_SIZE):
                yield data[pos : min(pos + BLOCK_SIZE, end + 1)]
            return
        block = pattern_block(name)
        pos = start
        while pos <= end:
            offset = pos % BLOCK_SIZE
            chunk = block[offset : offset + min(BLOCK_SIZE - offset, end + 1 - pos)]
            yield chunk
            pos += len(chunk)

    def sha256(self, name: str) -> str:
        """Hex sha256 of the whole body served for ``name``."""
        digest = hashlib.sha256()
        size = self.size(name)
        for chunk in self.iter_range(name, 0, size - 1):
            digest.update(chunk)
        return digest.hexdigest()


class RangeNotSatisfiable(Exception):
    """The Range header cannot be served (answer 416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single ``bytes=`` range, None to serve the whole body.

    Syntactically invalid or multi-range headers are ignored (RFC 9110 allows it);
    a range starting at or past the end raises RangeNotSatisfiable.
    """
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, sep, last = spec.strip().partition("-")
    if not sep:
        return None
    first, last = first.strip(), last.strip()
    if not first:  # suffix range: the last N bytes
        if not last.isdigit():
            return None
        if int(last) == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - int(last)), size - 1
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    if last and int(last) < start:
        return None
    end = int(last) if last else size - 1
    if start >= size:
        raise RangeNotSatisfiable(header)
    return start, min(end, size - 1)
