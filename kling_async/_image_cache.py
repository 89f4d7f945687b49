"""Each local image file opened and probed once, however many jobs name it (for preflight).

`ImageInput.parse` opens a file for every job that names it; a 10,000-line job file that
shares four images would read their headers 40,000 times. `ProbeCache.parse` is a drop-in
replacement that keys each probed file by (realpath, size, mtime_ns): a file that changes gets
probed afresh, and the answers (and errors) are exactly `ImageInput.parse`'s.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Hashable
from pathlib import Path

from ._errors import InvalidRequestError
from ._images import ImageInput

__all__ = ["ProbeCache", "identity"]

_MAX_PATH = 4096  # ImageInput.parse never stats longer values (they are base64, not paths)
_FileKey = tuple[str, int, int]  # (realpath, size, mtime_ns)


class ProbeCache:
    """`parse(value, index, base_dir)` like `ImageInput.parse`, probing each file once."""

    def __init__(self) -> None:
        self._real: dict[str, str] = {}  # path as joined → realpath (resolved once)
        self._good: dict[_FileKey, ImageInput] = {}
        self._bad: dict[tuple[_FileKey, str, int], InvalidRequestError] = {}
        self.probes = 0  # files actually opened

    def parse(self, value: str, index: int, base_dir: Path | None) -> ImageInput:
        """The checked image for one `images[index]` value of a job (see ImageInput.parse)."""
        key = self._file_key(value, base_dir)
        if key is None:  # a URL, base64, data: URI or a missing file: nothing to share
            return ImageInput.parse(value, index=index, base_dir=base_dir)
        if (image := self._good.get(key)) is not None:
            # Same file: the first job's spelling stays its label; only the index differs.
            return ImageInput.parse(image, index=index)
        if (error := self._bad.get((key, value, index))) is not None:
            raise error.with_traceback(None)  # no growing traceback when raised again and again
        self.probes += 1
        try:
            image = ImageInput.parse(value, index=index, base_dir=base_dir)
        except InvalidRequestError as exc:  # the message names index and spelling: keyed so
            self._bad[key, value, index] = exc
            raise
        self._good[key] = image
        return image

    def _file_key(self, value: str, base_dir: Path | None) -> _FileKey | None:
        text = value.strip()
        if not 0 < len(value) <= _MAX_PATH or text[:5].lower() == "data:":
            return None
        if text[:8].lower().startswith(("http://", "https://")):
            return None
        joined = os.fspath((base_dir or Path()) / value)
        try:
            st = os.stat(joined)
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        if (real := self._real.get(joined)) is None:
            real = self._real[joined] = os.path.realpath(joined)
        return real, st.st_size, st.st_mtime_ns


def identity(image: ImageInput) -> Hashable:
    """What makes two images the same upload: file version, URL, or inline content."""
    payload = image._payload  # same package: ImageInput keeps what it will send here
    if image.kind == "path":
        return "path", os.fspath(payload), image._stamp
    if image.kind == "url":
        return "url", payload
    # str/bytes hashes are cached on the object; collisions would only merge two counts
    assert isinstance(payload, str | bytes)
    return "inline", len(payload), hash(payload)
