"""The batch's download stage: earliest-expiring first, verified, atomic, never twice.

Each job's videos go to names that cannot collide (`_names.video_name`); a watermarked copy is
fetched only for a job that asked for one. Files recorded earlier keep their paths (release
0.1 names included); a recorded file found missing or damaged is fetched again to its path.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._batch_io import BatchResult, check_file, file_record, job_error
from ._errors import DiskFullError, DownloadError, VideoExpiredError
from ._journal import JobState, Journal
from ._names import video_name
from .models import Task

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["BatchCounts", "DownloadStage", "Fetch"]

VIDEOS = "videos"


@dataclass(slots=True)
class BatchCounts:
    """Live counters for progress displays."""

    seen: int = 0
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
    `redo`: recorded paths known to be missing or damaged.
    """

    key: str
    ext: str
    task: Task
    watermark: bool | None
    records: tuple[dict[str, Any], ...] = ()
    redo: frozenset[str] = frozenset()


_Target = tuple[int, bool, str, dict[str, Any] | None]  # video index, watermarked, path, record


def _recorded(fetch: Fetch) -> dict[tuple[int, bool], dict[str, Any]]:
    """Earlier records by (video index, watermarked); release-0.1 records carry neither, so
    they are matched in the order 0.1 wrote them: each video, then its watermarked copy."""
    if all("video" in r for r in fetch.records):
        return {(int(r["video"]), bool(r.get("watermarked"))): r for r in fetch.records}
    order = [
        (index, wm)
        for index, video in enumerate(fetch.task.videos)
        for wm in ((False, True) if video.watermark_url else (False,))
    ]
    return dict(zip(order, fetch.records, strict=False))


class DownloadStage:
    """A pool of download workers fed from a heap ordered by video expiry."""

    def __init__(
        self,
        client: Client,
        out_dir: Path,
        journal: Journal,
        counts: BatchCounts,
        emit: Callable[[str, BatchResult], None],
        settle: Callable[[], None],
        *,
        taken: Container[str] = frozenset(),
    ) -> None:
        self.client = client
        self.out_dir = out_dir
        self._journal = journal
        self.counts = counts
        self._emit = emit
        self._settle = settle
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

    async def worker(self) -> None:
        """One download worker; runs until cancelled."""
        while True:
            while not self._heap:
                self._ready.clear()
                await self._ready.wait()
            _, _, fetch = heapq.heappop(self._heap)
            self._busy += 1
            try:
                await self._download(fetch)
            except Exception as exc:  # unexpected: a dead worker would hang the batch
                error = {"type": type(exc).__name__, "message": str(exc)}
                self._report(fetch, JobState.SUCCEEDED, error=error)
            finally:
                self._busy -= 1
                self._freed.set()
                self._settle()

    def _report(
        self,
        fetch: Fetch,
        state: str,
        files: tuple[dict[str, Any], ...] = (),
        error: dict[str, Any] | None = None,
    ) -> None:
        task = fetch.task
        result = BatchResult(None, fetch.ext, state, task.task_id, files, error, task.expires_at)
        self._emit(fetch.key, result)

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
                    path = str(record["path"])
                else:
                    which = index if count > 1 else None
                    name = video_name(fetch.ext, which, watermarked=wm)
                    if f"{VIDEOS}/{name}".lower() in self._taken:
                        name = video_name(fetch.ext, which, watermarked=wm, tagged=True)
                    path = f"{VIDEOS}/{name}"
                out.append((index, wm, path, record))
        return out

    async def _download(self, fetch: Fetch) -> None:
        task = fetch.task
        files: list[dict[str, Any]] = []
        targets = self.targets(fetch)
        try:
            if self.full is not None:
                raise DiskFullError(f"not downloaded: the disk filled up earlier ({self.full})")
            if not task.videos:  # still listed as succeeded, but its videos are gone
                when = f"{task.expires_at:%Y-%m-%d %H:%M} UTC" if task.expires_at else "unknown"
                raise VideoExpiredError(
                    f"task {task.task_id}: Kling lists no video any more "
                    f"(past the 30-day retention? expiry {when})"
                )
            for index, wm, path, record in targets:
                files.append(await self._fetch_one(fetch, index, wm, path, record))
        except VideoExpiredError as exc:
            self._discard_parts(targets)  # nothing left to resume: do not litter the folder
            error = self._lost(fetch, job_error(exc))
            await self._journal.update(fetch.key, JobState.EXPIRED, error=error)
            self._report(fetch, JobState.EXPIRED, error=error)
            return
        except DownloadError as exc:  # stays "succeeded": a rerun or `download` fetches it
            if isinstance(exc, DiskFullError) and self.full is None:
                self.full = str(exc)
                self.on_full(f"disk full: {exc}")
            error = self._lost(fetch, job_error(exc))
            await self._journal.update(fetch.key, JobState.SUCCEEDED, error=error)
            self._report(fetch, JobState.SUCCEEDED, error=error)
            return
        await self._journal.update(fetch.key, JobState.DOWNLOADED, files=files)
        self.counts.downloaded += 1
        self._report(fetch, JobState.DOWNLOADED, tuple(files))

    @staticmethod
    def _lost(fetch: Fetch, error: dict[str, Any]) -> dict[str, Any]:
        """Say which saved files were lost, when a re-fetch of them failed."""
        if fetch.redo:
            lost = ", ".join(sorted(fetch.redo))
            error = {**error, "message": f"{lost} missing or damaged on disk; {error['message']}"}
        return error

    def _discard_parts(self, targets: list[_Target]) -> None:
        for _, _, path, _ in targets:
            (self.out_dir / f"{path}.part").unlink(missing_ok=True)

    async def _fetch_one(
        self, fetch: Fetch, index: int, wm: bool, path: str, record: dict[str, Any] | None
    ) -> dict[str, Any]:
        which = {"video": index, "watermarked": wm}
        if path not in fetch.redo:
            if record is not None and check_file(self.out_dir, record) is None:
                return {**record, **which}
            dest = self.out_dir / path
            if record is None and dest.exists():
                # Only a verified download is ever renamed into place: an earlier run finished
                # it and died before the journal heard; hash it instead of fetching it again.
                return {**await asyncio.to_thread(file_record, dest, self.out_dir), **which}
        result = await self.client.save_video(
            fetch.task, index, self.out_dir / path, watermarked=wm, on_progress=self._progress()
        )
        return {"path": path, "bytes": result.bytes, "sha256": result.sha256, **which}

    def _progress(self) -> Any:
        last = 0

        def on_progress(done: int, _total: int | None) -> None:
            nonlocal last
            self.counts.bytes += done - last
            last = done

        return on_progress
