"""Names from server data: file names that cannot escape a folder, URLs without secrets.

Video file names are collision-free by construction (see `video_name`): no two (id, video
index, watermarked) triples map to one name, compared case-insensitively, for any set of ids.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_url", "safe_filename", "video_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_RUNS = re.compile(r"([._-])\1+")
_WINDOWS_DEVICE = re.compile(r"(CON|PRN|AUX|NUL|COM[1-9]|LPT[1-9])(\..*)?", re.IGNORECASE)
#: Ids used as file names as they are: lower case (so case-insensitive file systems cannot fold
#: two of them together), no "." (the separator of the parts below), at most 100 characters.
_PLAIN = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,98}[a-z0-9])?")
_TAG_HEX = 16  # hex digits of sha256(id) in a tagged name: 64 bits


def redact_url(url: str) -> str:
    """Return `url` without user info, query string or fragment (CDNs put signatures there)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def safe_filename(
    name: str, *, default: str = "video", suffix: str = ".mp4", max_len: int = 120
) -> str:
    """Turn server-supplied text into one harmless file name (no separators, no `..`)."""
    if max_len < len(suffix) + 12:
        raise ValueError(f"max_len must be >= {len(suffix) + 12}, got {max_len}")
    stem = _RUNS.sub(r"\1", _UNSAFE.sub("_", name)).strip("._-") or default
    if suffix and stem.lower().endswith(suffix.lower()):
        stem = stem[: -len(suffix)]
    if _WINDOWS_DEVICE.fullmatch(stem):
        stem = "_" + stem  # "NUL.mp4" still names a device on Windows
    if len(stem) + len(suffix) > max_len:
        # Hash the original name so two long names sharing a prefix stay distinct.
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
        stem = f"{stem[: max_len - len(suffix) - 11]}_{digest}"
    return stem + suffix


def video_name(
    ident: str, index: int | None = None, *, watermarked: bool = False, tagged: bool = False
) -> str:
    """The file name of one video of the task known as `ident` (an external or task id).

    `<id>[.N][.wm].mp4` when the id is plain (`_PLAIN`), else `<readable>.<tag>[.N][.wm].mp4`
    with `tag` = 16 hex digits of sha256(id). `N` (1-based) only when a task has several videos.
    Why no two names can meet: plain ids and readable parts contain no ".", so the parts are
    read back from the right unambiguously — "wm", then a short number, then (if 16 hex
    digits follow the first part) the tag. Two plain names are equal only for equal ids (lower
    case, so also on case-insensitive file systems); two tagged names only for equal tags;
    a plain name's second part is never 16 hex digits. `tagged=True` forces the tagged form
    (for a plain name already taken by a file another release named).
    """
    if index is not None and index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    parts = "" if index is None else f".{index + 1}"
    if watermarked:
        parts += ".wm"
    if not tagged and _PLAIN.fullmatch(ident) and not _WINDOWS_DEVICE.fullmatch(ident):
        return f"{ident}{parts}.mp4"
    tag = hashlib.sha256(ident.encode("utf-8", "surrogatepass")).hexdigest()[:_TAG_HEX]
    readable = _RUNS.sub(r"\1", _UNSAFE.sub("_", ident).replace(".", "_")).strip("._-")
    readable = readable[:80].rstrip("._-") or "video"
    if _WINDOWS_DEVICE.fullmatch(readable):
        readable = "_" + readable
    return f"{readable}.{tag}{parts}.mp4"
