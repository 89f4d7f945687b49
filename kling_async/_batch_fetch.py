"""The batch's download stage: earliest-expiring first, verified, atomic, never twice."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._batch_io import BatchResult, file_record, job_error
from ._download import DiskFullError
from ._errors import DownloadError, VideoExpiredError
from ._fetch import save_video, video_filename
from ._journal import JobState, Journal
from .models import Task, TaskInfo

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["BatchCounts", "DownloadStage"]


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


class DownloadStage:
    """A pool of download workers fed from a heap ordered by video expiry."""

    def __init__(
        self,
        client: Client,
        out_dir: Path,
        journal: Journal,
        counts: BatchCounts,
        emit: Callable[[BatchResult], None],
        settle: Callable[[], None],
    ) -> None:
        self.client = client
        self.out_dir = out_dir
        self.videos_dir = out_dir / "videos"
        self._journal = journal
        self.counts = counts
        self._emit = emit
        self._settle = settle
        #: Told (with the reason) once the disk is full; the batch stops submitting then.
        self.on_full: Callable[[str], None] = lambda reason: None
        #: Set once the output disk is full: later downloads are recorded, not tried (each
        #: would fail the same way, and retrying them one by one only fills the log).
        self.full: str | None = None
        self._heap: list[tuple[float, int, str, Task]] = []
        self._ready = asyncio.Event()

    def queue(self, line: int, ext: str, task: Task) -> None:
        """Add a finished task's videos to the queue (earliest expiry first)."""
        # An unknown expiry (no created_at) might be the soonest: such videos go first.
        expires = task.expires_at.timestamp() if task.expires_at else float("-inf")
        heapq.heappush(self._heap, (expires, line, ext, task))
        self._ready.set()

    async def worker(self) -> None:
        """One download worker; runs until cancelled."""
        while True:
            while not self._heap:
                self._ready.clear()
                await self._ready.wait()
            _, line, ext, task = heapq.heappop(self._heap)
            try:
                await self._download(line, ext, task)
            except Exception as exc:  # unexpected: a dead worker would hang the batch
                error = {"type": type(exc).__name__, "message": str(exc)}
                self._emit(BatchResult(line, ext, JobState.SUCCEEDED, task.task_id, (), error))
            finally:
                self._settle()

    async def _download(self, line: int, ext: str, task: Task) -> None:
        files: list[dict[str, Any]] = []
        try:
            if self.full is not None:
                raise DiskFullError(f"not downloaded: the disk filled up earlier ({self.full})")
            if not task.videos:  # still listed as succeeded, but its videos are gone
                when = f"{task.expires_at:%Y-%m-%d %H:%M} UTC" if task.expires_at else "unknown"
                raise VideoExpiredError(
                    f"task {task.task_id}: Kling lists no video any more "
                    f"(past the 30-day retention? expiry {when})"
                )
            for index, video in enumerate(task.videos):
                files.append(await self._fetch_one(task, index, ext, watermarked=False))
                if video.watermark_url:  # the job asked for a watermarked copy too
                    files.append(await self._fetch_one(task, index, ext, watermarked=True))
        except VideoExpiredError as exc:
            self._discard_parts(task, ext)  # nothing left to resume: do not litter the folder
            error = job_error(exc)
            await self._journal.update(line, JobState.EXPIRED, error=error)
            self._emit(BatchResult(line, ext, JobState.EXPIRED, task.task_id, (), error))
            return
        except DownloadError as exc:  # stays "succeeded": a rerun or `download` fetches it
            if isinstance(exc, DiskFullError) and self.full is None:
                self.full = str(exc)
                self.on_full(f"disk full: {exc}")
            error = job_error(exc)
            await self._journal.update(line, JobState.SUCCEEDED, error=error)
            self._emit(BatchResult(line, ext, JobState.SUCCEEDED, task.task_id, (), error))
            return
        await self._journal.update(line, JobState.DOWNLOADED, files=files)
        self.counts.downloaded += 1
        self._emit(
            BatchResult(
                line, ext, JobState.DOWNLOADED, task.task_id, tuple(files), None, task.expires_at
            )
        )

    def _discard_parts(self, task: Task, ext: str) -> None:
        for index in range(max(1, len(task.videos))):
            for watermarked in (False, True):
                name = video_filename(_keyed(task, ext), index, watermarked=watermarked)
                (self.videos_dir / f"{name}.part").unlink(missing_ok=True)

    async def _fetch_one(
        self, task: Task, index: int, ext: str, *, watermarked: bool
    ) -> dict[str, Any]:
        dest = self.videos_dir / video_filename(_keyed(task, ext), index, watermarked=watermarked)
        if dest.exists():
            # Only a verified download is ever renamed into place: an earlier run finished it
            # and died before the journal heard; hash it locally instead of fetching it again.
            return await asyncio.to_thread(file_record, dest, self.out_dir)
        client = self.client
        result = await save_video(
            client.http.session,
            task,
            index,
            dest,
            refresh=client.get_task,
            watermarked=watermarked,
            timeouts=client.timeouts,
            retry=client.retry,
            clock=client._clock,
            sleep=client._sleep,
            on_progress=self._progress(),
            event_hook=client.event_hook,
        )
        return {
            "path": str(result.path.relative_to(self.out_dir)),
            "bytes": result.bytes,
            "sha256": result.sha256,
        }

    def _progress(self) -> Any:
        last = 0

        def on_progress(done: int, _total: int | None) -> None:
            nonlocal last
            self.counts.bytes += done - last
            last = done

        return on_progress


def _keyed(task: Task, ext: str) -> Task:
    """The task carrying the job's external id: files are named from it (hashed if unsafe, so
    two ids that sanitise alike never share a file)."""
    if task.external_task_id == ext:
        return task
    return task.model_copy(update={"task_info": TaskInfo(external_task_id=ext)})
