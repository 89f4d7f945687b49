"""Image inputs for `image_list`: checked when parsed (sync, cheap), base64-encoded when sent."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import stat
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Literal, TypeAlias
from urllib.parse import urlsplit

from ._encoding import CHUNK, EncodingCache, b64_size, off_loop
from ._errors import InvalidRequestError
from ._imagefile import CheckedFile
from ._imagefile import image_error as _err
from ._probe import HEAD_BYTES, ImageFormat, Truncated, probe_image, sniff

__all__ = [
    "MAX_ASPECT",
    "MAX_IMAGE_BYTES",
    "MIN_ASPECT",
    "MIN_SIDE",
    "EncodingCache",
    "ImageInfo",
    "ImageInput",
    "probe_image",
]

MAX_IMAGE_BYTES = 10 * 1024 * 1024
MIN_SIDE = 300
MIN_ASPECT = 1 / 2.5
MAX_ASPECT = 2.5

_At: TypeAlias = tuple[int, str]  # (index, label) of an image, for error messages
_Value: TypeAlias = "str | os.PathLike[str] | bytes | bytearray | ImageInput"
_DATA_URI = re.compile(r"data:image/(?:png|jpe?g);base64,(.*)", re.I | re.S)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,31})://")  # bounded: no 13 MB scans
_B64_TEXT = re.compile(r"[A-Za-z0-9+/=\s]+")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_B64_BAD = re.compile(r"[^A-Za-z0-9+/=]")
_WS = re.compile(r"\s+")
#: An http(s) URL urlsplit is sure to accept (a plain host name, no port, user or brackets;
#: printable ASCII after it): checked with one match instead of urlsplit and its properties.
_PLAIN_URL = re.compile(r"https?://[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?:[/?#][!-~]*)?")
_WIRE_CHUNK = 256 * 1024  # characters per chunk of base64 already in memory


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What the header says: format, pixel size, and file (or decoded) size in bytes."""

    format: ImageFormat
    width: int
    height: int
    size: int


def _examine(at: _At, size: int, head: bytes, whole: Callable[[], bytes], noun: str) -> ImageInfo:
    if size > MAX_IMAGE_BYTES:  # round up, so 10 MB + 1 byte never reads "10.0 MB"
        mb = -(-size * 10 // 2**20) / 10
        raise _err(*at, f"{noun} is {mb:.1f} MB, limit is 10 MB", "≤ 10 MB", size)
    try:
        try:
            fmt, w, h = probe_image(head)
        except Truncated:
            if size <= len(head):
                raise
            fmt, w, h = probe_image(whole())  # rare: metadata past 64 KiB; whole is ≤ 10 MB
    except InvalidRequestError:  # from whole() re-reading a file: it already names the image
        raise
    except ValueError as exc:
        raise _err(*at, str(exc), "JPEG or PNG", sniff(head)) from None
    if w < MIN_SIDE or h < MIN_SIDE:
        raise _err(*at, f"image is {w}x{h} px, both sides must be ≥ 300 px", "≥ 300 px", (w, h))
    if 2 * w > 5 * h or 2 * h > 5 * w:  # exact integer form of MIN_ASPECT ≤ w/h ≤ MAX_ASPECT
        msg = f"aspect ratio {w / h:.2f} ({w}x{h}) is outside 1:2.5–2.5:1"
        raise _err(*at, msg, "aspect 1:2.5–2.5:1", w / h)
    return ImageInfo(fmt, w, h, size)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except (OSError, ValueError):  # ENAMETOOLONG, NUL bytes…: certainly not a usable file
        return None


def _read(at: _At, path: Path, limit: int) -> tuple[bytes, os.stat_result]:
    try:
        with open(path, "rb") as f:
            return f.read(limit), os.fstat(f.fileno())
    except OSError as exc:  # permissions, vanished…: report it as a bad input, never as OSError
        raise _err(*at, f"cannot read file: {exc.strerror or exc}", "readable", str(path)) from None


@dataclass(frozen=True, slots=True)
class ImageInput:
    """One image for `image_list`: a local path, bytes, http(s) URL or raw base64, pre-checked."""

    kind: Literal["path", "bytes", "url", "base64"]
    info: ImageInfo | None  # None for URLs
    _payload: str | bytes | Path
    _label: str  # what describe() returns
    _index: int = field(default=0, compare=False)
    _stamp: tuple[int, int] | None = field(default=None, compare=False)  # (size, mtime_ns)

    def __repr__(self) -> str:  # the label only: never the bytes or the base64 themselves
        info = f", {i.format} {i.width}x{i.height}" if (i := self.info) else ""
        return f"ImageInput(kind={self.kind!r}, {self._at[1]}{info})"

    @property
    def _at(self) -> _At:
        return self._index, repr(self._label) if self.kind in ("path", "url") else self._label

    @classmethod
    def parse(cls, value: _Value, *, index: int = 0, base_dir: Path | None = None) -> ImageInput:
        """Classify and check one image value now; raise InvalidRequestError naming the rule."""
        if type(value) is str and _PLAIN_URL.fullmatch(value):  # the common case, at once
            label = value if len(value) <= 80 else value[:77] + "..."
            return cls("url", None, value, label, index)
        if isinstance(value, ImageInput):
            return value if value._index == index else replace(value, _index=index)
        if isinstance(value, bytes | bytearray | memoryview):
            data, label = bytes(value), f"<{len(value)} bytes>"
            info = _examine((index, label), len(data), data, lambda: data, "image")
            return cls("bytes", info, data, label, index)
        if isinstance(value, os.PathLike):
            return cls._from_path(os.fsdecode(value), (base_dir or Path()) / value, index)
        if not isinstance(value, str):
            raise _err(index, "?", f"unsupported type {type(value).__name__}", None, type(value))
        text = value.strip()
        label = text if len(text) <= 80 else text[:77] + "..."
        if text[:8].lower().startswith(("http://", "https://")):
            with contextlib.suppress(ValueError):  # urlsplit: a bad port, unbalanced brackets
                if (parts := urlsplit(text)).hostname and parts.port != 0 and not _WS.search(text):
                    return cls("url", None, text, label, index)
            raise _err(index, repr(label), "malformed http(s) URL", "http(s) URL", text)
        if text[:5].lower() == "data:":  # the API forbids the prefix: strip it
            if m := _DATA_URI.fullmatch(text):
                return cls._from_base64(m.group(1), index)
            raise _err(index, repr(label), "not a data:image/png|jpeg;base64 URI", "data URI", None)
        # ≤ PATH_MAX, so 13 MB of base64 is never stat'ed; an absolute value replaces base_dir
        path = (base_dir or Path()) / value if 0 < len(value) <= 4096 else None
        if path and _stat(path):
            return cls._from_path(value, path, index)
        if m := _SCHEME.match(text):
            msg = f"URL scheme {m[1]!r} is not supported; use http(s), base64 or a local file"
            raise _err(index, repr(label), msg, "http(s) URL", m[1])
        if len(text) > 200 and _B64_TEXT.fullmatch(text):
            return cls._from_base64(text, index)
        return cls._from_path(value, path, index)  # raises: file not found

    @classmethod
    def _from_base64(cls, text: str, index: int) -> ImageInput:
        b64 = "".join(text.split())  # wrapped base64 is common; str.split is 15x faster than re
        at = (index, label := f"<base64, {len(b64)} chars>")
        if len(b64) % 4 or not _B64.fullmatch(b64):
            bad = _B64_BAD.search(b64)
            why = f"character {bad.group()!r} at {bad.start()}" if bad else "bad padding or length"
            raise _err(*at, f"invalid base64: {why}", "base64 (RFC 4648)", len(b64))
        size = len(b64) // 4 * 3 - (2 if b64.endswith("==") else 1 if b64.endswith("=") else 0)
        head = base64.b64decode(b64[: HEAD_BYTES // 3 * 4])  # just enough for the header
        info = _examine(at, size, head, lambda: base64.b64decode(b64), "decoded image")
        return cls("base64", info, b64, label, index)

    @classmethod
    def _from_path(cls, given: str, path: Path | None, index: int) -> ImageInput:
        at = (index, repr(given if len(given) <= 80 else given[:77] + "..."))  # may be any text
        if path is None or (st := _stat(path)) is None:
            msg = "file not found (nor an http(s) URL, data: URI or base64)"
            raise _err(*at, msg, "existing file", str(path or given))
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the open below
            what = "is a directory" if stat.S_ISDIR(st.st_mode) else "is not a regular file"
            raise _err(*at, f"{what}, not an image file", "regular file", str(path))
        head, st = _read(at, path, HEAD_BYTES)
        info = _examine(at, st.st_size, head, lambda: _read(at, path, st.st_size)[0], "file")
        real = Path(os.path.realpath(path))
        return cls("path", info, real, given, index, (st.st_size, st.st_mtime_ns))

    def describe(self) -> str:
        """Short human label: the path, the URL (≤ 80 chars), "<N bytes>" or "<base64, N chars>"."""
        return self._label

    @property
    def encoded_size(self) -> int | None:
        """Characters of image_list[i].image: its base64 length (None for a URL, sent as is)."""
        p = self._payload
        if self.kind == "url":
            return None
        if isinstance(p, str):
            return len(p)
        return b64_size(len(p) if isinstance(p, bytes) else self._file.size)

    async def wire_value(self, cache: EncodingCache | None = None) -> str:
        """The whole string for image_list[i].image, in memory (`chunks` streams it instead)."""
        if isinstance(self._payload, str):  # a URL, or base64 already stripped of whitespace
            return self._payload
        return b"".join([chunk async for chunk in self.chunks(cache)]).decode("ascii")

    async def chunks(self, cache: EncodingCache | None = None) -> AsyncGenerator[bytes, None]:
        """The base64 of image_list[i].image, ≤ 256 KiB at a time, encoded off the loop as asked.

        A file is read a chunk at a time (a small one shared by many jobs comes whole from
        `cache`). If it changed since parse() — size, modification time, header, or bytes
        streamed against the size declared — InvalidRequestError is raised before its last
        chunk, so a body with other content than was checked is never completed.
        """
        p = self._payload
        if isinstance(p, str):
            for i in range(0, len(p), _WIRE_CHUNK):
                yield p[i : i + _WIRE_CHUNK].encode("ascii")
        elif isinstance(p, bytes):
            view = memoryview(p)
            for i in range(0, len(p), CHUNK):
                yield await off_loop(partial(base64.b64encode, view[i : i + CHUNK]), cache)
        elif cache is not None and cache.eligible((file := self._file).size):
            file.check_unchanged()  # one stat, on the loop: joins a flight in progress at once
            whole = await cache._get((str(p), file.size, file.mtime_ns), file.encode)
            for i in range(0, len(whole), _WIRE_CHUNK):
                yield whole[i : i + _WIRE_CHUNK]
        else:
            reader = self._file.chunks()
            try:
                while (out := await off_loop(partial(_encode_next, reader), cache)) is not None:
                    yield out
            finally:
                reader.close()

    def check_unchanged(self) -> None:
        """For a file, raise InvalidRequestError if it changed since parse() (one stat)."""
        if self.kind == "path":
            self._file.check_unchanged()

    def encode_now(self) -> bytes:
        """The base64 of the image, whole, in the calling thread (blocking for a file)."""
        p = self._payload
        if self.kind == "url":
            raise ValueError("a URL is sent as is, not encoded")
        if isinstance(p, str):
            return p.encode("ascii")
        return base64.b64encode(p) if isinstance(p, bytes) else self._file.encode()

    @property
    def _file(self) -> CheckedFile:
        assert isinstance(self._payload, Path) and self._stamp is not None and self.info
        info = self.info
        return CheckedFile(
            self._payload, *self._stamp, (info.format, info.width, info.height), self._at
        )


def _encode_next(chunks: Iterator[bytes]) -> bytes | None:
    data = next(chunks, None)
    return None if data is None else base64.b64encode(data)
