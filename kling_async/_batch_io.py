"""Batch records: per-job results, error records, file hashes and the results.jsonl manifest."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ._errors import APIError, InvalidRequestError, KlingError
from ._journal import JobRow, JobState, Journal

__all__ = [
    "JOURNAL_NAME",
    "MANIFEST_NAME",
    "BatchResult",
    "BatchStatus",
    "batch_status",
    "file_record",
    "job_error",
    "result_from_row",
    "write_manifest",
]

JOURNAL_NAME = "journal.sqlite3"
MANIFEST_NAME = "results.jsonl"


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What became of one job: its final state, files (path, bytes, sha256) or error."""

    line: int
    external_task_id: str
    state: str
    task_id: str | None = None
    files: tuple[dict[str, Any], ...] = ()
    error: dict[str, Any] | None = None
    expires_at: datetime | None = None

    @property
    def ok(self) -> bool:
        """True when the job's video(s) are on disk."""
        return self.state == JobState.DOWNLOADED

    def as_dict(self) -> dict[str, Any]:
        """The manifest line for this job."""
        return {
            "line": self.line,
            "external_task_id": self.external_task_id,
            "task_id": self.task_id,
            "state": self.state,
            "files": list(self.files),
            "error": self.error,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }


def job_error(exc: KlingError) -> dict[str, Any]:
    """A JSON-safe error record: type, message and, when known, code, request_id, field."""
    record: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, APIError):
        record.update(code=exc.code, request_id=exc.request_id, message=exc.message)
    if isinstance(exc, InvalidRequestError):
        record["field"] = exc.field
    return record


def file_record(path: Path, root: Path) -> dict[str, Any]:
    """Path (relative to root), size and sha256 of a file on disk (reads it in 1 MiB blocks)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
            size += len(block)
    return {"path": str(path.relative_to(root)), "bytes": size, "sha256": digest.hexdigest()}


def result_from_row(row: JobRow) -> BatchResult:
    """The result a journal row stands for."""
    expires = datetime.fromtimestamp(row.expires_at, UTC) if row.expires_at else None
    return BatchResult(
        row.line,
        row.external_id,
        row.state,
        row.task_id,
        tuple(row.files or ()),
        row.error,
        expires,
    )


def write_manifest(journal: Journal, path: Path) -> None:
    """Rewrite results.jsonl from the journal (one line per job), atomically; closes journal."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for row in journal.rows():
                fh.write(json.dumps(result_from_row(row).as_dict()) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        journal.close_sync()


@dataclass(frozen=True, slots=True)
class BatchStatus:
    """What a batch's journal says: counts by state, problems, and the soonest video expiry."""

    counts: dict[str, int]
    problems: list[BatchResult]
    pending_downloads: int
    soonest_expiry: datetime | None
    #: Of the pending downloads, how many have an unknown expiry (Kling sent no created_at).
    unknown_expiry: int = 0

    @property
    def total(self) -> int:
        """Jobs the journal knows."""
        return sum(self.counts.values())


def batch_status(out_dir: Path) -> BatchStatus:
    """Read `out_dir`'s journal (read-only use; safe while no batch writes to it)."""
    path = Path(out_dir) / JOURNAL_NAME
    if not path.exists():
        raise FileNotFoundError(f"no batch journal at {path}")
    journal = Journal(path)
    try:
        counts = journal.counts()
        problems = [result_from_row(r) for r in journal.rows() if r.error]
        pending = [r.expires_at for r in journal.rows(JobState.SUCCEEDED)]
    finally:
        journal.close_sync()
    waiting = [at for at in pending if at]
    soonest = datetime.fromtimestamp(min(waiting), UTC) if waiting else None
    return BatchStatus(counts, problems, len(pending), soonest, len(pending) - len(waiting))
