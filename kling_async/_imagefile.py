"""An image file as it was checked: read a chunk at a time, refused once it changed since."""

from __future__ import annotations

import base64
import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

from ._encoding import CHUNK
from ._errors import InvalidRequestError
from ._probe import Truncated, probe_image

__all__ = ["CheckedFile", "image_error"]


def image_error(
    index: int, label: str, msg: str, limit: str | None, value: object
) -> InvalidRequestError:
    """The error for images[index]: names the image, the rule broken and the value."""
    where = f"images[{index}]"
    return InvalidRequestError(f"{where} ({label}): {msg}", field=where, limit=limit, value=value)


@dataclass(frozen=True, slots=True)
class CheckedFile:
    """A file with what parse() saw of it: size, modification time, (format, width, height)."""

    path: Path
    size: int
    mtime_ns: int
    header: tuple[str, int, int]
    at: tuple[int, str]  # (index, label) for messages

    def check_unchanged(self, when: str = "") -> None:
        """Raise InvalidRequestError if size or modification time differ now (one stat)."""
        try:
            self._same_stat(os.stat(self.path), when)
        except OSError as exc:
            raise self._unreadable(exc) from None

    def encode(self) -> bytes:
        """The whole file's base64 (for small files, which are cached)."""
        return b"".join(base64.b64encode(data) for data in self.chunks())

    def chunks(self) -> Generator[bytes, None, None]:
        """The bytes, CHUNK at a time, checked against what parse() saw; the last chunk only
        once the file is known unchanged (size, mtime, header, no byte missing or extra)."""
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - closed below, also if the caller stops
        except OSError as exc:
            raise self._unreadable(exc) from None
        with f:
            self._same_stat(os.fstat(f.fileno()), "")
            done, size = 0, self.size
            while done < size:
                data = f.read(min(CHUNK, size - done))
                if not data:
                    raise self._changed(f"it shrank while being sent ({done:,} of {size:,} bytes)")
                if done == 0:
                    self._same_header(data)
                done += len(data)
                if done == size:
                    if f.read(1):
                        raise self._changed(f"it grew while being sent (past {size:,} bytes)")
                    self._same_stat(os.fstat(f.fileno()), " while being sent")
                yield data

    def _unreadable(self, exc: OSError) -> InvalidRequestError:
        why = f"cannot read file: {exc.strerror or exc}"
        return image_error(*self.at, why, "readable", str(self.path))

    def _same_stat(self, st: os.stat_result, when: str) -> None:
        if st.st_size != self.size:
            raise self._changed(f"size {self.size:,} → {st.st_size:,} bytes{when}")
        if st.st_mtime_ns != self.mtime_ns:
            raise self._changed(f"modified{when} (same size, new modification time)")

    def _same_header(self, head: bytes) -> None:
        was = "{} {}x{}".format(*self.header)
        try:
            fmt, w, h = probe_image(head)
        except Truncated:
            if self.size > len(head):
                return  # metadata past the first chunk: size and mtime still vouch for it
            raise self._changed(f"header no longer readable, was {was}") from None
        except ValueError as exc:
            raise self._changed(f"header no longer readable ({exc}), was {was}") from None
        if (fmt, w, h) != self.header:
            raise self._changed(f"header says {fmt} {w}x{h}, was {was}")

    def _changed(self, what: str) -> InvalidRequestError:
        msg = f"file changed since it was checked: {what}"
        return image_error(*self.at, msg, "unchanged since checked", what)
