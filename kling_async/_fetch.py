"""Saving a task's videos: retries, resume after truncation, URL refresh, and the 30-day limit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from ._config import RetryPolicy, Timeouts
from ._download import (
    DownloadResult,
    ProgressCallback,
    VideoUnavailableError,
    redact_url,
    safe_filename,
    stream_to_file,
)
from ._errors import DownloadError, KlingError, VideoExpiredError
from ._retry import backoff
from ._types import Clock, Sleep
from .models import Task, Video

__all__ = ["ProgressCallback", "save_videos", "video_filename"]


def video_filename(
    task: Task, index: int, *, name: str | None = None, watermarked: bool = False
) -> str:
    """`<name, external id or task id>[-N][-wm].mp4`, sanitised: server data never picks a path."""
    stem = name or task.external_task_id or task.task_id
    if len(task.videos) > 1:
        stem = f"{stem}-{index + 1}"
    if watermarked:
        stem = f"{stem}-wm"
    return safe_filename(stem)


def _url(video: Video, watermarked: bool) -> str:
    url = video.watermark_url if watermarked else video.url
    if not url:
        raise DownloadError(f"video {video.id} has no {'watermark_' if watermarked else ''}url")
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
) -> DownloadResult:
    """Fetch one video; resume truncated transfers, re-query a stale URL once per attempt."""
    attempt = 0
    refreshed = False
    while True:
        if datetime.fromtimestamp(clock(), UTC) >= task.expires_at:
            raise VideoExpiredError(
                f"task {task.task_id}: video expired on {task.expires_at:%Y-%m-%d %H:%M} UTC "
                "(Kling keeps videos 30 days)"
            )
        url = _url(task.videos[index], watermarked)
        try:
            return await stream_to_file(
                session,
                url,
                dest,
                timeouts=timeouts,
                on_progress=on_progress,
                expected_sha256=expected_sha256,
            )
        except VideoExpiredError:
            raise
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
            )
        )
    return results
