"""Saving a task's videos: retries, resume after truncation, URL refresh, and the 30-day limit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from ._config import RetryPolicy, Timeouts
from ._download import (
    DiskFullError,
    DownloadResult,
    ProgressCallback,
    VideoUnavailableError,
    redact_url,
    stream_to_file,
)
from ._errors import DownloadError, KlingError, VideoExpiredError
from ._events import EventHook, emit
from ._names import safe_filename, video_name
from ._retry import backoff
from ._types import Clock, Sleep
from .models import Task, Video

__all__ = ["ProgressCallback", "progress_events", "save_videos", "video_filename"]

#: At most one download_progress event per video per this many seconds (plus the last one):
#: a fast CDN delivers a 1 MiB batch every few ms, far more than any progress display needs.
PROGRESS_INTERVAL = 0.5


def video_filename(
    task: Task, index: int, *, name: str | None = None, watermarked: bool = False
) -> str:
    """The file for video `index` of `task`: named from its external id or task id, or `name`.

    From an id, collision-free by construction (`video_name`): different ids, videos or
    plain/watermarked copies never share a name, even on a case-insensitive file system.
    A caller's `name` is used as given (sanitised, `-N`, `-wm`). Server data never picks a path.
    """
    several = len(task.videos) > 1
    if name:
        stem = name + (f"-{index + 1}" if several else "") + ("-wm" if watermarked else "")
        return safe_filename(stem)
    stem = task.external_task_id or task.task_id
    return video_name(stem, index if several else None, watermarked=watermarked)


def progress_events(
    hook: EventHook | None,
    task_id: str,
    index: int,
    then: ProgressCallback | None = None,
    *,
    interval: float = PROGRESS_INTERVAL,
    monotonic: Clock = time.monotonic,
) -> ProgressCallback | None:
    """A progress callback that emits throttled `download_progress` events, then calls `then`."""
    if hook is None:
        return then
    last = -interval

    def on_progress(received: int, total: int | None) -> None:
        nonlocal last
        now = monotonic()
        if now - last >= interval or received == total:
            last = now
            emit(
                hook, "download_progress", task_id=task_id, index=index, bytes=received, total=total
            )
        if then is not None:
            then(received, total)

    return on_progress


def _url(video: Video, watermarked: bool) -> str:
    url = video.watermark_url if watermarked else video.url
    if not url:
        what = "watermark_url" if watermarked else "url"
        raise DownloadError(f"video {video.id[:80]!r} has no {what}")
    try:
        parts = urlsplit(url)
        usable = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:
        usable = False
    if not usable:  # file:, ftp:, javascript:, no host…: refused at once, never retried
        shown = redact_url(url)[:200]
        raise DownloadError(f"refusing to download a non-http(s) URL: {shown}", url=shown)
    return url


async def save_video(
    session: aiohttp.ClientSession,
    task: Task,
    index: int,
    dest: Path,
    *,
    refresh: Callable[[str], Awaitable[Task]],
    watermarked: bool,
    timeouts: Timeouts,
    retry: RetryPolicy,
    clock: Clock,
    sleep: Sleep,
    on_progress: ProgressCallback | None = None,
    expected_sha256: str | None = None,
    event_hook: EventHook | None = None,
) -> DownloadResult:
    """Fetch one video; resume truncated transfers, re-query a stale URL once per attempt."""
    on_progress = progress_events(event_hook, task.task_id, index, on_progress)
    attempt = 0
    refreshed = False
    while True:
        expires = task.expires_at  # None: unknown (no created_at), so try
        if expires is not None and datetime.fromtimestamp(clock(), UTC) >= expires:
            raise VideoExpiredError(
                f"task {task.task_id}: video expired on {task.expires_at:%Y-%m-%d %H:%M} UTC "
                "(Kling keeps videos 30 days)"
            )
        url = _url(task.videos[index], watermarked)
        try:
            result = await stream_to_file(
                session,
                url,
                dest,
                timeouts=timeouts,
                on_progress=on_progress,
                expected_sha256=expected_sha256,
            )
        except (VideoExpiredError, DiskFullError):
            raise  # no retry can help: the video is gone, or nothing fits on the disk
        except VideoUnavailableError:
            if refreshed:
                raise
            # Stored video links can be short-lived: a fresh query hands out a working one.
            refreshed = True
            try:
                task = await refresh(task.task_id)
            except KlingError as exc:
                raise DownloadError(
                    f"task {task.task_id}: video URL refused and re-query failed: {exc}",
                    url=redact_url(url),
                ) from exc
            if not task.videos or index >= len(task.videos):
                raise VideoExpiredError(
                    f"task {task.task_id}: Kling no longer lists its video", url=redact_url(url)
                ) from None
            continue
        except DownloadError as exc:
            attempt += 1
            if attempt >= retry.attempts:
                raise
            await sleep(backoff(attempt - 1, retry, error=exc))
            continue
        emit(
            event_hook,
            "download_finished",
            task_id=task.task_id,
            index=index,
            path=str(result.path),
            bytes=result.bytes,
            resumed_from=result.resumed_from,
        )
        return result


async def save_videos(
    session: aiohttp.ClientSession,
    task: Task,
    out_dir: Path,
    *,
    refresh: Callable[[str], Awaitable[Task]],
    name: str | None,
    watermarked: bool,
    timeouts: Timeouts,
    retry: RetryPolicy,
    clock: Clock,
    sleep: Sleep = asyncio.sleep,
    on_progress: ProgressCallback | None = None,
    event_hook: EventHook | None = None,
) -> list[DownloadResult]:
    """Fetch every video of a finished task into `out_dir`, one after another."""
    if not task.videos:
        raise DownloadError(f"task {task.task_id} ({task.task_status.value}) has no videos")
    results = []
    for index in range(len(task.videos)):
        dest = out_dir / video_filename(task, index, name=name, watermarked=watermarked)
        results.append(
            await save_video(
                session,
                task,
                index,
                dest,
                refresh=refresh,
                watermarked=watermarked,
                timeouts=timeouts,
                retry=retry,
                clock=clock,
                sleep=sleep,
                on_progress=on_progress,
                event_hook=event_hook,
            )
        )
    return results
