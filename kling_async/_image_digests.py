"""Content digests of image inputs, for job identity: sha256 of the bytes, or a URL's text."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from ._imagefile import image_error as _err
from ._images import ImageInput, _stat

__all__ = ["ContentDigests"]


class ContentDigests:
    """What an image is, for job identity: sha256 of its bytes (files, bytes and base64 alike:
    the same bytes go on the wire), or its text for a URL.

    A file is hashed once per (realpath, size, mtime_ns): a 10,000-line job file sharing a few
    images reads each image once. The `max_files` most recently hashed are remembered (a file
    of 100,000 jobs with images of their own must not keep 400,000 digests). `digest` blocks
    (run it off the event loop); `cached` answers at once when no work is needed.
    """

    def __init__(self, max_files: int = 4096) -> None:
        self._files: dict[tuple[str, int, int], str] = {}
        self._max = max_files

    def __len__(self) -> int:
        return len(self._files)

    def cached(self, image: ImageInput) -> str | None:
        """The digest when it costs nothing (a URL, a file hashed before), else None."""
        p = image._payload
        if image.kind == "url" and isinstance(p, str):
            return f"url:{p}"
        if isinstance(p, Path) and (st := _stat(p)) is not None:
            return self._files.get((str(p), st.st_size, st.st_mtime_ns))
        return None

    def digest(self, image: ImageInput) -> str:
        """The digest, reading or decoding the image as needed (blocking; 1 MiB at a time)."""
        p = image._payload
        if image.kind == "url" and isinstance(p, str):
            return f"url:{p}"
        digest = hashlib.sha256()
        if isinstance(p, bytes):
            digest.update(p)
        elif isinstance(p, str):  # base64, already stripped of whitespace: decode in slices
            for start in range(0, len(p), 1 << 20):  # 2**20 is a multiple of 4
                digest.update(base64.b64decode(p[start : start + (1 << 20)]))
        else:
            try:
                with open(p, "rb") as fh:
                    st = os.fstat(fh.fileno())
                    key = (str(p), st.st_size, st.st_mtime_ns)
                    if (known := self._files.get(key)) is not None:
                        return known
                    while block := fh.read(1 << 20):
                        digest.update(block)
            except OSError as exc:  # vanished or unreadable since it was parsed
                why = f"cannot read file: {exc.strerror or exc}"
                raise _err(*image._at, why, "readable", str(p)) from None
            self._files[key] = found = f"sha256:{digest.hexdigest()}"
            if len(self._files) > self._max:  # the oldest first: hashing is one at a time
                del self._files[next(iter(self._files))]
            return found
        return f"sha256:{digest.hexdigest()}"
