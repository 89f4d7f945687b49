"""Preflight: check a whole batch and price it before anything is sent or written.

`preflight(jobs)` reads every job exactly as a batch would (the same line parser, request model
and image checks), opens every local image once, finds idempotency keys used twice, and counts
what the batch would send and cost. It needs no credentials, makes no network call and writes
nothing.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ._errors import InvalidRequestError
from ._image_cache import ProbeCache, identity
from ._jobs import Job, jobs_from_jsonl, jobs_from_requests
from ._prices import Kind, PriceTable, Units, kind_of, kind_order
from ._types import PathLike
from .models import MultiImageToVideoRequest

__all__ = ["KindSummary", "PreflightReport", "Problem", "preflight"]

_VALUE_CHARS = 80


@dataclass(frozen=True, slots=True)
class Problem:
    """One bad job: its line, the field at fault, the rule it breaks and the value given."""

    line: int
    field: str
    rule: str
    value: str  # a short repr of what was given
    message: str

    def __str__(self) -> str:
        where = f"field {self.field}; rule: {self.rule}; value: {self.value}"
        return f"line {self.line}: {self.message} [{where}]"


@dataclass(frozen=True, slots=True)
class KindSummary:
    """How many valid jobs of one (model, mode, duration), and their estimated units."""

    kind: Kind
    jobs: int
    units: Decimal


@dataclass(frozen=True, slots=True)
class PreflightReport:
    """What a batch would do: every bad line, duplicate ids, and what it would send and cost."""

    source: str
    jobs: int  # every job read (valid or not)
    problems: tuple[Problem, ...]  # in line order; duplicate ids included
    duplicate_ids: Mapping[str, tuple[int, ...]]  # external_task_id → every line using it
    kinds: tuple[KindSummary, ...]
    units: Decimal  # estimated for the valid jobs
    prices: PriceTable
    images: int  # distinct local files and inline images to upload
    image_bytes: int  # their size, each counted once
    uploads: int  # image uploads over all valid jobs (a shared file is sent with each job)
    upload_bytes: int  # base64 characters sent for them in total
    urls: int  # distinct image URLs (Kling fetches these; we send only the address)
    probes: int  # local files opened and probed

    @property
    def ok(self) -> bool:
        """True when every job is valid (a batch would reject none)."""
        return not self.problems

    @property
    def valid(self) -> int:
        """Jobs a batch would submit."""
        return self.jobs - len(self.bad_lines)

    @property
    def bad_lines(self) -> tuple[int, ...]:
        """Lines a batch would reject, in order."""
        return tuple(sorted({p.line for p in self.problems}))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 3] + "..."


def _problem(line: int, error: InvalidRequestError) -> Problem:
    message = str(error)
    # Line-level errors carry no limit: their first clause ("not valid JSON") is the rule.
    rule = error.limit or message.split(":", 1)[0].split(";", 1)[0]
    return Problem(line, error.field, rule, _short(error.value), message)


class _Tally:
    """Running totals over the valid jobs."""

    def __init__(self, prices: PriceTable) -> None:
        self.prices = prices
        self.kinds: Counter[Kind] = Counter()
        self.sizes: dict[Hashable, int] = {}  # distinct uploads → raw size
        self.urls: set[Hashable] = set()
        self.uploads = 0
        self.upload_bytes = 0

    def add(self, request: MultiImageToVideoRequest) -> None:
        self.kinds[kind_of(request)] += 1
        for image in request.images:
            if image.info is None:  # a URL: Kling fetches it
                self.urls.add(identity(image))
                continue
            size = image.info.size
            self.sizes.setdefault(identity(image), size)
            self.uploads += 1
            self.upload_bytes += 4 * -(-size // 3)  # base64 length of the raw bytes


def _jobs(
    jobs: PathLike | Iterable[MultiImageToVideoRequest], cache: ProbeCache
) -> tuple[str, Iterator[Job]]:
    if isinstance(jobs, str | os.PathLike):
        path = Path(jobs)
        return os.fspath(path), jobs_from_jsonl(path, images=cache.parse)
    return "<requests>", jobs_from_requests(jobs)


def preflight(
    jobs: PathLike | Iterable[MultiImageToVideoRequest],
    *,
    prices: PriceTable | Mapping[str | Kind, Units] | None = None,
) -> PreflightReport:
    """Check every job (fields, local images, unique ids) and price the batch; sends nothing.

    `jobs` is what `run_batch` takes: a JSONL file's path or requests. Requests built in
    Python had their fields and images checked when built; they are counted and their ids
    checked. `prices` overrides the built-in units table (`{"pro-10": 7}` or a `PriceTable`).
    """
    table = PriceTable.of(prices)
    cache = ProbeCache()
    source, stream = _jobs(jobs, cache)
    tally = _Tally(table)
    problems: list[Problem] = []
    owners: dict[str, list[int]] = {}  # explicit external_task_id → lines
    count = 0
    for job in stream:
        count += 1
        if job.request is None:
            assert job.error is not None
            problems.append(_problem(job.line, job.error))
            continue
        ext = job.request.external_task_id
        if ext is not None:
            lines = owners.setdefault(ext, [])
            lines.append(job.line)
            if len(lines) > 1:  # the batch rejects every later line that reuses a key
                error = InvalidRequestError(
                    f"external_task_id {ext!r} is already used by line {lines[0]} of this batch",
                    field="external_task_id",
                    limit="unique within the batch",
                    value=ext,
                )
                problems.append(_problem(job.line, error))
                continue
        tally.add(job.request)
    kinds = tuple(
        KindSummary(kind, n, table.price(kind) * n)
        for kind, n in sorted(tally.kinds.items(), key=lambda item: kind_order(item[0]))
    )
    return PreflightReport(
        source=source,
        jobs=count,
        problems=tuple(problems),
        duplicate_ids=MappingProxyType(
            {ext: tuple(ls) for ext, ls in owners.items() if len(ls) > 1}
        ),
        kinds=kinds,
        units=sum((k.units for k in kinds), Decimal(0)),
        prices=table,
        images=len(tally.sizes),
        image_bytes=sum(tally.sizes.values()),
        uploads=tally.uploads,
        upload_bytes=tally.upload_bytes,
        urls=len(tally.urls),
        probes=cache.probes,
    )
