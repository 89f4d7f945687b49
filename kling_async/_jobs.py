"""Job sources: a JSONL file read lazily, or any iterable of requests; each job keeps its line."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import InvalidRequestError
from .models import ImageParser, MultiImageToVideoRequest

__all__ = ["Job", "external_id_for", "jobs_from_jsonl", "jobs_from_requests"]

#: JSONL keys that are ours, not the API's: "watermark" is the friendly form of watermark_info.
_JOB_KEYS = frozenset(
    {
        "images",
        "image_list",
        "prompt",
        "negative_prompt",
        "mode",
        "duration",
        "aspect_ratio",
        "watermark",
        "watermark_info",
        "external_task_id",
        "model_name",
        "callback_url",
    }
)


@dataclass(frozen=True, slots=True)
class Job:
    """One unit of a batch: its line (1-based), its request or why it is invalid."""

    line: int
    fingerprint: str
    request: MultiImageToVideoRequest | None = None
    error: InvalidRequestError | None = None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def external_id_for(batch_id: str, job: Job) -> str:
    """The job's idempotency key: its own, or one derived from batch, line and content."""
    if job.request is not None and job.request.external_task_id:
        return job.request.external_task_id
    return f"ka-{batch_id[:10]}-{job.line}-{job.fingerprint[:12]}"


def _parse_line(line_no: int, text: str, base_dir: Path, images: ImageParser | None) -> Job:
    fingerprint = _digest(text.strip())
    try:
        obj: Any = json.loads(text)
    except ValueError as exc:
        error = InvalidRequestError(f"not valid JSON: {exc}", field="line", value=text[:80])
        return Job(line_no, fingerprint, error=error)
    if not isinstance(obj, dict):
        error = InvalidRequestError(
            f"expected a JSON object, got {type(obj).__name__}", field="line", value=obj
        )
        return Job(line_no, fingerprint, error=error)
    unknown = sorted(set(obj) - _JOB_KEYS)
    if unknown:
        error = InvalidRequestError(
            f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_JOB_KEYS))}",
            field=unknown[0],
            value=unknown,
        )
        return Job(line_no, fingerprint, error=error)
    fingerprint = _digest(json.dumps(obj, sort_keys=True))
    try:
        request = MultiImageToVideoRequest.from_job(obj, base_dir=base_dir, images=images)
    except InvalidRequestError as exc:
        return Job(line_no, fingerprint, error=exc)
    return Job(line_no, fingerprint, request=request)


def jobs_from_jsonl(path: Path, *, images: ImageParser | None = None) -> Iterator[Job]:
    """Read the job file one line at a time (blank lines and # comments are skipped).

    `images` stands in for `ImageInput.parse` (a preflight's cache that probes each file once).
    """
    base_dir = path.resolve().parent
    with path.open(encoding="utf-8-sig", errors="replace") as fh:  # -sig: Notepad adds a BOM
        for line_no, text in enumerate(fh, start=1):
            stripped = text.strip()
            if not stripped or stripped.startswith("#"):
                continue
            yield _parse_line(line_no, stripped, base_dir, images)


def jobs_from_requests(requests: Iterable[MultiImageToVideoRequest]) -> Iterator[Job]:
    """Number Python requests 1, 2, … like lines; content decides the fingerprint."""
    for line_no, request in enumerate(requests, start=1):
        content = json.dumps(request.fingerprint_fields(), sort_keys=True, default=str)
        yield Job(line_no, _digest(content), request=request)
