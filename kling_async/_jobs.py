"""Job sources: a JSONL file read lazily, or any iterable of requests; each job gets its identity.

`jobs_from_jsonl` / `jobs_from_requests` yield jobs with their line (display only) and the
parsed request or why it is invalid. `Identifier.identify` then gives each job its identity
(`_identity`): content first — local images hashed off the event loop, each file once — then
the occurrence number among identical jobs, counted in file order.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ._errors import InvalidRequestError
from ._identity import IDENTITY_VERSION, content_id, invalid_content_id, job_key
from ._image_digests import ContentDigests
from .models import ImageParser, MultiImageToVideoRequest

__all__ = [
    "Identifier",
    "Job",
    "Line",
    "by_text",
    "jobs_from_jsonl",
    "jobs_from_requests",
    "legacy_fingerprint",
    "lines_from_jsonl",
]

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
    """One unit of a batch: its line (1-based), its request or why it is invalid, its identity.

    `source` is the line's text ("" for a Python request); `key` is set by `Identifier`.
    """

    line: int
    request: MultiImageToVideoRequest | None = None
    error: InvalidRequestError | None = None
    source: str = ""
    key: str = ""


def _parse_line(line_no: int, text: str, base_dir: Path, images: ImageParser | None) -> Job:
    try:
        obj: Any = json.loads(text)
    except ValueError as exc:
        error = InvalidRequestError(f"not valid JSON: {exc}", field="line", value=text[:80])
        return Job(line_no, error=error, source=text)
    if not isinstance(obj, dict):
        error = InvalidRequestError(
            f"expected a JSON object, got {type(obj).__name__}", field="line", value=obj
        )
        return Job(line_no, error=error, source=text)
    unknown = sorted(set(obj) - _JOB_KEYS)
    if unknown:
        error = InvalidRequestError(
            f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_JOB_KEYS))}",
            field=unknown[0],
            value=unknown,
        )
        return Job(line_no, error=error, source=text)
    try:
        request = MultiImageToVideoRequest.from_job(obj, base_dir=base_dir, images=images)
    except InvalidRequestError as exc:
        return Job(line_no, error=exc, source=text)
    return Job(line_no, request=request, source=text)


@dataclass(frozen=True, slots=True)
class Line:
    """A job file's line, not parsed yet: a batch recognises a line it has seen before by its
    text (`digest`) far faster than it parses it."""

    line: int
    text: str
    base_dir: Path
    images: ImageParser | None = None

    @property
    def digest(self) -> str:
        """What the line's text is, for recognising it (versioned like identities)."""
        return _digest(f"{IDENTITY_VERSION}\nline\n{self.text}")

    def parse(self) -> Job:
        """The job this line describes (or why it is invalid)."""
        return _parse_line(self.line, self.text, self.base_dir, self.images)


def lines_from_jsonl(path: Path, *, images: ImageParser | None = None) -> Iterator[Line]:
    """Read the job file one line at a time (blank lines and # comments are skipped)."""
    base_dir = path.resolve().parent
    with path.open(encoding="utf-8-sig", errors="replace") as fh:  # -sig: Notepad adds a BOM
        for line_no, text in enumerate(fh, start=1):
            stripped = text.strip()
            if not stripped or stripped.startswith("#"):
                continue
            yield Line(line_no, stripped, base_dir, images)


def jobs_from_jsonl(path: Path, *, images: ImageParser | None = None) -> Iterator[Job]:
    """Read and parse the job file one line at a time (blank lines and # comments skipped).

    `images` stands in for `ImageInput.parse` (a preflight's cache that probes each file once).
    """
    return (line.parse() for line in lines_from_jsonl(path, images=images))


def by_text(job: Job) -> bool:
    """Whether the job's identity follows from its line's text alone: a valid job whose images
    are all URLs (a local file's bytes, or whether a file of that name exists, may change)."""
    return job.request is not None and all(i.kind == "url" for i in job.request.images)


def jobs_from_requests(requests: Iterable[MultiImageToVideoRequest]) -> Iterator[Job]:
    """Number Python requests 1, 2, … like lines (display only: content decides identity)."""
    for line_no, request in enumerate(requests, start=1):
        yield Job(line_no, request=request)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def legacy_fingerprint(job: Job) -> str:
    """The fingerprint release 0.1 (journal schema 1) stored for this job, to match old rows."""
    if job.request is not None and not job.source:
        fields = job.request.fingerprint_fields()
        return _digest(json.dumps(fields, sort_keys=True, default=str))
    try:
        obj = json.loads(job.source)
    except ValueError:
        return _digest(job.source.strip())
    if not isinstance(obj, dict) or set(obj) - _JOB_KEYS:
        return _digest(job.source.strip())
    return _digest(json.dumps(obj, sort_keys=True))


def _text(job: Job) -> str:
    """What identifies a job that cannot be sent: its line's text, or its request's fields."""
    if job.source or job.request is None:
        return job.source
    return json.dumps(job.request.fingerprint_fields(), sort_keys=True, default=str)


class Identifier:
    """Gives jobs their identity, in the order they are read (one caller at a time)."""

    def __init__(self) -> None:
        self.digests = ContentDigests()
        copies: Counter[str] = Counter()

        def occurrence(content: str) -> int:
            copies[content] += 1
            return copies[content] - 1

        #: The copy number of a content's next job (0, 1, … in file order). A batch counts
        #: in its run ledger instead: a 100,000-line file holds 100,000 contents.
        self.occurrence: Callable[[str], int] = occurrence

    async def identify(self, job: Job) -> Job:
        """The job with its identity set; an image that cannot be read makes it invalid."""
        job, content = await self.content(job)
        return replace(job, key=job_key(content, self.occurrence(content)))

    async def content(self, job: Job) -> tuple[Job, str]:
        """The job's content id (its identity before the copy number); a job whose image
        cannot be read comes back invalid."""
        found = await self._content(job)
        if isinstance(found, InvalidRequestError):
            return replace(job, request=None, error=found), invalid_content_id(_text(job))
        return job, found

    async def _content(self, job: Job) -> str | InvalidRequestError:
        request = job.request
        if request is None:
            return invalid_content_id(_text(job))
        images: list[str | None] = [self.digests.cached(image) for image in request.images]
        if None in images:  # a file not hashed yet, bytes or base64: read / decode off the loop
            try:
                images = await asyncio.to_thread(
                    lambda: [self.digests.digest(image) for image in request.images]
                )
            except InvalidRequestError as exc:  # vanished or unreadable since it was parsed
                return exc
        return content_id(request, [i for i in images if i is not None])
