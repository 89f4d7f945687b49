"""Names from server data: file names that cannot escape a folder, URLs without secrets."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_url", "safe_filename"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_RUNS = re.compile(r"([._-])\1+")
_WINDOWS_DEVICE = re.compile(r"(CON|PRN|AUX|NUL|COM[1-9]|LPT[1-9])(\..*)?", re.IGNORECASE)


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
