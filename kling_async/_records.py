"""What the journal and the manifest record of a job: its saved files, its error, its units.

`FileRecord`, `JobError` and `Charge` (a task's units) are frozen; `as_dict()` is their stored
form (the journal's JSON columns, the `files` and `error` of results.jsonl) and `from_dict()`
reads it back, release 0.1's records included. `check_file` compares a record with the disk,
the disk being the truth.
"""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from ._errors import APIError, InvalidRequestError, KlingError
from ._prices import Kind, deduction

__all__ = [
    "NOT_SENT",
    "OVER_BUDGET",
    "Charge",
    "FileRecord",
    "JobError",
    "check_file",
    "file_record",
    "job_error",
]

#: The error type of a job the batch stopped (or Kling had no task for) before it was sent.
NOT_SENT = "NotSubmitted"
#: The error type of a job not sent because its estimate did not fit under the units budget.
OVER_BUDGET = "OverBudget"


@dataclass(frozen=True, slots=True)
class Charge:
    """A task's units as the journal keeps them (the budget's record, which outlives a run):
    its price kind, the estimate `reserved` before its create, and the units `spent` once it
    ended (None: not settled yet, the reservation stands)."""

    kind: Kind
    reserved: Decimal
    spent: Decimal | None = None

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Charge:
        """Read a stored record."""
        kind = Kind(*map(str, record["kind"]))
        return cls(
            kind, deduction(record.get("reserved")) or Decimal(0), deduction(record.get("spent"))
        )

    def as_dict(self) -> dict[str, Any]:
        """The stored form (units as strings: exact)."""
        stored: dict[str, Any] = {"kind": list(self.kind), "reserved": str(self.reserved)}
        if self.spent is not None:
            stored["spent"] = str(self.spent)
        return stored


@dataclass(frozen=True, slots=True)
class FileRecord:
    """A saved video: `path` (relative to the output folder), its size and sha256 (hex).

    `video` is which video of the task it is and `watermarked` whether it is the watermarked
    copy (None for files recorded by release 0.1, which kept neither).
    """

    path: str
    bytes: int
    sha256: str
    video: int | None = None
    watermarked: bool | None = None

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> FileRecord:
        """Read a stored record."""
        video, watermarked = record.get("video"), record.get("watermarked")
        return cls(
            str(record.get("path", "")),
            int(record.get("bytes", -1)),
            str(record.get("sha256", "")),
            None if video is None else int(video),
            None if watermarked is None else bool(watermarked),
        )

    def as_dict(self) -> dict[str, Any]:
        """The stored form (`video` and `watermarked` only when known)."""
        stored: dict[str, Any] = {"path": self.path, "bytes": self.bytes, "sha256": self.sha256}
        if self.video is not None:
            stored["video"] = self.video
        if self.watermarked is not None:
            stored["watermarked"] = self.watermarked
        return stored


@dataclass(frozen=True, slots=True)
class JobError:
    """Why a job is where it is: the error's class name (`type`) and message.

    `answered`: Kling answered with an error (its `code` and `request_id` are on record, even
    when it gave none); `field`: the request field an InvalidRequestError names.
    """

    message: str
    type: str | None = None
    code: int | None = None
    request_id: str | None = None
    field: str | None = None
    answered: bool = False

    @classmethod
    def from_dict(cls, error: Mapping[str, Any]) -> JobError:
        """Read a stored error."""
        code, field = error.get("code"), error.get("field")
        return cls(
            str(error.get("message", "")),
            error.get("type"),
            code if isinstance(code, int) else None,
            error.get("request_id"),
            None if field is None else str(field),
            "code" in error or "request_id" in error,
        )

    def as_dict(self) -> dict[str, Any]:
        """The stored form: `type` and `message`; `code` and `request_id` when Kling answered;
        `field` when one is named."""
        stored: dict[str, Any] = {"message": self.message}
        if self.type is not None:
            stored = {"type": self.type, **stored}
        if self.answered:
            stored.update(code=self.code, request_id=self.request_id)
        if self.field is not None:
            stored["field"] = self.field
        return stored

    def __str__(self) -> str:
        return self.message


def job_error(exc: BaseException) -> JobError:
    """The record of an error: its class name and message; Kling's code and request_id when
    Kling answered; the field an invalid request names."""
    timeout = exc.timed_out if isinstance(exc, KlingError) else None
    late = "" if timeout is None else f"timed out (no progress for {timeout:g} s): "
    if isinstance(exc, APIError):
        message = late + exc.message
        return JobError(message, type(exc).__name__, exc.code, exc.request_id, answered=True)
    field = exc.field if isinstance(exc, InvalidRequestError) else None
    return JobError(late + str(exc), type(exc).__name__, field=field)


def file_record(path: Path, root: Path, **which: Any) -> FileRecord:
    """The record of a file on disk (its path relative to `root`, size, sha256 read in 1 MiB
    blocks); `which` gives `video` and `watermarked`."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
            size += len(block)
    return FileRecord(str(path.relative_to(root)), size, digest.hexdigest(), **which)


def check_file(root: Path, record: FileRecord, *, rehash: bool = False) -> str | None:
    """Why a recorded file is no longer as recorded (missing, resized, other hash), or None.

    Without `rehash` this is one `stat`; with it the file is read and hashed again.
    """
    path = root / record.path
    try:
        st = path.stat()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size != record.bytes:
        return f"damaged ({st.st_size:,} bytes on disk, {record.bytes} recorded)"
    if rehash:
        try:
            if file_record(path, root).sha256 != record.sha256:
                return "damaged (its sha256 is not the recorded one)"
        except OSError as exc:
            return f"unreadable ({exc.strerror or exc})"
    return None
