"""Saving a task's videos: retries, resume after truncation, URL refresh, and the 30-day limit."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from ._config import Timeouts
from ._download_stream import DownloadResult, ProgressCallback, http_url, stream_to_file
from ._errors import (
    DiskFullError,
    DownloadError,
    KlingError,
    VideoExpiredError,
    VideoUnavailableError,
)
from ._events import DownloadFinished, DownloadProgress, EventHook, emit
from ._names import redact_url, safe_filename, video_name
from ._retry import Retries
from ._server_time import ServerClock
from ._types import Clock
from .models import Task, Video

__all__ = ["ProgressCallback", "progress_events", "save_video", "video_filename", "video_gone"]

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
            emit(hook, DownloadProgress(task_id, index, received, total))
        if then is not None:
            then(received, total)

    return on_progress


def policy_stalls(retries: Retries) -> int:
    """Attempts in a row without a byte a download may make (the policy's hard cap, if set)."""
    policy = retries.policy
    return policy.attempts if policy.attempts is not None else policy.stalls


def _expired(task: Task, url: str = "") -> VideoExpiredError:
    return VideoExpiredError(
        f"task {task.task_id}: video expired on {task.expires_at:%Y-%m-%d %H:%M} UTC "
        "(Kling keeps videos 30 days)",
        url=url,
    )


def video_gone(
    task: Task, server_clock: ServerClock, what: str = "its video", *, url: str = ""
) -> VideoExpiredError:
    """Kling's answer about `task` no longer lists `what`: expired if past its expiry by the
    server's clock, which that very answer has just set right (the earlier answers may have
    outvoted the CDN's refusal); else gone for a reason Kling does not give."""
    if server_clock.past_expiry(task.expires_at):
        return _expired(task, url)
    when = f"{task.expires_at:%Y-%m-%d %H:%M} UTC" if task.expires_at else "unknown"
    return VideoExpiredError(
        f"task {task.task_id}: Kling no longer lists {what} (past the 30-day retention? "
        f"expiry {when})",
        url=url,
    )


def _url(video: Video, watermarked: bool) -> str:
    url = video.watermark_url if watermarked else video.url
    if not url:
        what = "watermark_url" if watermarked else "url"
        raise DownloadError(f"video {video.id[:80]!r} has no {what}")
    http_url(url)  # refused at once, never retried
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
    retries: Retries,
    server_clock: ServerClock,
    on_progress: ProgressCallback | None = None,
    expected_sha256: str | None = None,
) -> DownloadResult:
    """Fetch one video; resume truncated transfers, re-query a refused URL.

    An attempt that received bytes resets the count (`RetryPolicy.stalls` attempts in a row
    without a byte end it) and the time budget; the next attempt resumes from the `.part` with
    Range. A 403/404 fetches a fresh URL by a task query and uses it at once, until the video
    is saved, is past its expiry by the server's clock (then `VideoExpiredError`), or `stalls`
    fresh links in a row were refused before a byte came (then the `VideoUnavailableError`).
    """
    report = progress_events(retries.hook, task.task_id, index, on_progress)
    moved = False  # the current attempt received bytes

    def progress(done: int, total: int | None) -> None:
        nonlocal moved
        moved = True
        if report is not None:
            report(done, total)

    refreshes = 0  # fresh URLs fetched in a row without a byte received
    name = f"task {task.task_id} video {index}"
    async for attempt in retries.attempts("GET", name, count="without_progress"):
        if server_clock.past_expiry(task.expires_at):  # None: unknown (no created_at), so try
            raise _expired(task)
        url = _url(task.videos[index], watermarked)
        moved = False
        try:
            result = await stream_to_file(
                session,
                url,
                dest,
                timeouts=timeouts,
                on_progress=progress,
                expected_sha256=expected_sha256,
                server_clock=server_clock,
            )
        except (VideoExpiredError, DiskFullError):
            raise  # no retry can help: the video is gone, or nothing fits on the disk
        except VideoUnavailableError as exc:
            if server_clock.past_expiry(task.expires_at):
                raise _expired(task) from exc
            if moved:
                attempt.progressed()
                refreshes = 0
            refreshes += 1
            # Video links can be short-lived: a fresh query hands out a working one.
            try:
                task = await refresh(task.task_id)
            except KlingError as error:
                raise DownloadError(
                    f"task {task.task_id}: video URL refused and re-query failed: {error}",
                    url=redact_url(url),
                ) from error
            if not task.videos or index >= len(task.videos):
                raise video_gone(task, server_clock, url=redact_url(url)) from None
            if refreshes > policy_stalls(retries):
                raise  # every fresh link refused, no byte received: the video is unavailable
            attempt.again()  # the fresh link is used at once
        except DownloadError as exc:
            if moved:  # resumed from the .part next time: the time budget starts again
                attempt.progressed()
            attempt.retry(exc, path=redact_url(url))
    emit(
        retries.hook,
        DownloadFinished(task.task_id, index, str(result.path), result.bytes, result.resumed_from),
    )
    return result
