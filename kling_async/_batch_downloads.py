"""The batch's download stage: earliest-expiring first, verified, atomic, never twice.

Each job's videos go to names that cannot collide (`_names.video_name`); a watermarked copy is
fetched only for a job that asked for one. Files recorded earlier keep their paths (release
0.1 names included); a recorded file found missing or damaged is fetched again to its path.
The stage only brings videos to disk: `download` says what came of a job (`Saved`), and the
batch writes that to the journal and reports it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Container
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from ._download_retry import video_gone
from ._errors import DiskFullError, DownloadError, KlingError, VideoExpiredError, is_no_such_task
from ._journal import JobState
from ._names import video_name
from ._records import FileRecord, JobError, check_file, file_record, job_error
from ._requery import Requery, stale
from .models import Task

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["BatchCounts", "DownloadStage", "Fetch", "Saved"]

VIDEOS = "videos"


@dataclass(slots=True)
class BatchCounts:
    """Live counters for progress displays."""

    running: int = 0
    finished: int = 0
    downloaded: int = 0
    failed: int = 0
    bytes: int = 0
    states: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Fetch:
    """One job's videos to bring to disk.

    `watermark`: the job asked for watermarked copies (None: a release-0.1 row, whose copies
    were fetched whenever offered). `records`: files recorded before (kept while intact);
    `redo`: recorded paths known to be missing or damaged; `units`: what the task cost;
    `seen`: when (`time.monotonic()`) this process had `task` from Kling (None: stored by an
    earlier one, so its links may have lapsed: the task is asked again before a video request).
    """

    key: str
    ext: str
    task: Task
    watermark: bool | None
    records: tuple[FileRecord, ...] = ()
    redo: frozenset[str] = frozenset()
    units: Decimal | None = None
    seen: float | None = None


@dataclass(frozen=True, slots=True)
class Saved:
    """What a job's download came to: `downloaded` (its `files`), `expired`, or still
    `succeeded` with the `error` that stopped it (a rerun or `download` fetches it)."""

    state: JobState
    files: tuple[FileRecord, ...] = ()
    error: JobError | None = None


_Target = tuple[int, bool, str, FileRecord | None]  # video index, watermarked, path, record


def _recorded(fetch: Fetch) -> dict[tuple[int, bool], FileRecord]:
    """Earlier records by (video index, watermarked); release-0.1 records carry neither, so
    they are matched in the order 0.1 wrote them: each video, then its watermarked copy."""
    if all(r.video is not None for r in fetch.records):
        return {(r.video or 0, bool(r.watermarked)): r for r in fetch.records}
    order = [
        (index, wm)
        for index, video in enumerate(fetch.task.videos)
        for wm in ((False, True) if video.watermark_url else (False,))
    ]
    return dict(zip(order, fetch.records, strict=False))


class DownloadStage:
    """The queue of videos to fetch, ordered by expiry, and the fetching itself."""

    def __init__(
        self,
        client: Client,
        out_dir: Path,
        counts: BatchCounts,
        *,
        taken: Container[str] = frozenset(),
    ) -> None:
        self.client = client
        self.out_dir = out_dir
        self.counts = counts  # the stage adds the bytes it brings to disk
        #: Paths (lower case) that files of release-0.1 rows hold: new names avoid them.
        self._taken = taken
        #: Told (with the reason) once the disk is full; the batch stops submitting then.
        self.on_full: Callable[[str], None] = lambda reason: None
        #: Set once the output disk is full: later downloads are recorded, not tried (each
        #: would fail the same way, and retrying them one by one only fills the log).
        self.full: str | None = None
        self._heap: list[tuple[float, int, Fetch]] = []
        self._order = itertools.count()
        self._ready = asyncio.Event()
        self._busy = 0  # downloads under way
        self._freed = asyncio.Event()
        self.requery = Requery(client)  # fresh answers for tasks whose links may have lapsed

    @property
    def backlog(self) -> int:
        """Downloads queued or under way."""
        return len(self._heap) + self._busy

    async def room(self, limit: int) -> None:
        """Wait until fewer than `limit` downloads are queued or under way (a resume feeds
        the queue from the journal this way, never all of it at once)."""
        while self.backlog >= limit:
            self._freed.clear()
            await self._freed.wait()

    def queue(self, fetch: Fetch) -> None:
        """Add a finished task's videos to the queue (earliest expiry first)."""
        # An unknown expiry (no created_at) might be the soonest: such videos go first.
        expires = fetch.task.expires_at
        expiry = expires.timestamp() if expires else float("-inf")
        heapq.heappush(self._heap, (expiry, next(self._order), fetch))
        self._ready.set()

    async def next(self) -> Fetch:
        """The queued job whose video expires first (waiting for one); `done()` once handled."""
        while not self._heap:
            self._ready.clear()
            await self._ready.wait()
        self._busy += 1
        return heapq.heappop(self._heap)[2]

    def done(self) -> None:
        """The job `next()` gave is handled: room for another."""
        self._busy -= 1
        self._freed.set()

    def targets(self, fetch: Fetch) -> list[_Target]:
        """Every file the job should have: recorded ones at their paths, new ones named."""
        recorded = _recorded(fetch)
        out: list[_Target] = []
        count = len(fetch.task.videos)
        for index, video in enumerate(fetch.task.videos):
            asked = fetch.watermark if fetch.watermark is not None else True
            for wm in (False, True) if video.watermark_url and asked else (False,):
                record = recorded.get((index, wm))
                if record is not None:
                    path = record.path
                else:
                    which = index if count > 1 else None
                    name = video_name(fetch.ext, which, watermarked=wm)
                    if f"{VIDEOS}/{name}".lower() in self._taken:
                        name = video_name(fetch.ext, which, watermarked=wm, tagged=True)
                    path = f"{VIDEOS}/{name}"
                out.append((index, wm, path, record))
        return out

    async def download(self, fetch: Fetch) -> Saved:
        """Bring the job's videos to disk; never raises (an unexpected error is reported)."""
        try:
            return await self._download(fetch)
        except Exception as exc:  # unexpected: a dead worker would hang the batch
            return Saved(JobState.SUCCEEDED, error=JobError(str(exc), type(exc).__name__))

    async def _download(self, fetch: Fetch) -> Saved:
        task = fetch.task
        files: list[FileRecord] = []
        targets = self.targets(fetch)
        try:
            if self.full is not None:
                raise DiskFullError(f"not downloaded: the disk filled up earlier ({self.full})")
            if not task.videos:  # still listed as succeeded, but its videos are gone
                raise video_gone(task, self.client.server_clock)
            for index, wm, path, record in targets:
                kept = await self._on_disk(fetch, index, wm, path, record)
                if kept is None:
                    if task is fetch.task and self._stale(fetch):
                        task = await self._fresh(fetch)  # once, before its first video request
                    kept = await self._save(task, index, wm, path)
                files.append(kept)
        except VideoExpiredError as exc:
            self._discard_parts(targets)  # nothing left to resume: do not litter the folder
            return Saved(JobState.EXPIRED, error=self._lost(fetch, job_error(exc)))
        except DownloadError as exc:  # stays "succeeded": a rerun or `download` fetches it
            if isinstance(exc, DiskFullError) and self.full is None:
                self.full = str(exc)
                self.on_full(f"disk full: {exc}")
            return Saved(JobState.SUCCEEDED, error=self._lost(fetch, job_error(exc)))
        return Saved(JobState.DOWNLOADED, tuple(files))

    @staticmethod
    def _lost(fetch: Fetch, error: JobError) -> JobError:
        """Say which saved files were lost, when a re-fetch of them failed."""
        if fetch.redo:
            lost = ", ".join(sorted(fetch.redo))
            error = replace(error, message=f"{lost} missing or damaged on disk; {error.message}")
        return error

    def _discard_parts(self, targets: list[_Target]) -> None:
        for _, _, path, _ in targets:
            (self.out_dir / f"{path}.part").unlink(missing_ok=True)

    async def _on_disk(
        self, fetch: Fetch, index: int, wm: bool, path: str, record: FileRecord | None
    ) -> FileRecord | None:
        """The file's record if it is on disk already (no request then), else None."""
        if path in fetch.redo:
            return None
        if record is not None and check_file(self.out_dir, record) is None:
            return replace(record, video=index, watermarked=wm)
        dest = self.out_dir / path
        if record is None and dest.exists():
            # Only a verified download is ever renamed into place: an earlier run finished
            # it and died before the journal heard; hash it instead of fetching it again.
            which = {"video": index, "watermarked": wm}
            return await asyncio.to_thread(file_record, dest, self.out_dir, **which)
        return None

    def _stale(self, fetch: Fetch) -> bool:
        """Whether the job's links may have lapsed; not asked about once past expiry by what
        we know of the server's clock (`save_video` calls it expired without a request)."""
        clock = self.client.server_clock
        if clock.past_expiry(fetch.task.expires_at):
            return False
        return stale(fetch.task, fetch.seen, clock, time.monotonic())

    async def _fresh(self, fetch: Fetch) -> Task:
        """Ask Kling about the task again (its stored links may have lapsed); the round also
        asks about the queued jobs in the same case."""
        others = (f.task for _, _, f in self._heap if self._stale(f))
        try:
            task = await self.requery.fresh(fetch.task, others)
        except KlingError as exc:
            if is_no_such_task(exc):
                raise video_gone(fetch.task, self.client.server_clock, "the task") from exc
            raise DownloadError(
                f"task {fetch.task.task_id}: could not ask for fresh video links: {exc}"
            ) from exc
        if not task.videos:  # judged by the server's time this answer has just told
            raise video_gone(task, self.client.server_clock)
        return task

    async def _save(self, task: Task, index: int, wm: bool, path: str) -> FileRecord:
        if index >= len(task.videos):
            raise video_gone(task, self.client.server_clock, f"video {index}")
        saved = await self.client.save_video(
            task, index, self.out_dir / path, watermarked=wm, on_progress=self._progress()
        )
        return FileRecord(path, saved.bytes, saved.sha256, index, wm)

    def _progress(self) -> Callable[[int, int | None], None]:
        last = 0

        def on_progress(done: int, _total: int | None) -> None:
            nonlocal last
            self.counts.bytes += done - last
            last = done

        return on_progress
