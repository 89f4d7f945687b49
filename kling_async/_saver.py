"""One thread saves every small download, in groups: fewer thread and loop wake-ups, fewer fsyncs.

A short video is read whole, then saved by a job (write, sha256, fsync, rename). Handing each job
to a thread of its own costs the event loop two wake-ups per video, more than the video. Here the
jobs asked for in one turn of the loop go to one thread as a single hand-off; it runs them in
order, then fsyncs each directory they renamed into once (a rename is durable only once its
directory is), and only then settles their futures: one wake-up of each loop per group.

What callers rely on: `await run(job)` returns once the job ran and its directory was fsynced (or
raises what the job raised); a cancelled caller does not stop a queued job.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["fsync_dir", "run", "settle"]

T = TypeVar("T")
#: A job returns its result and the directory its rename must be made durable in (or None).
Job = Callable[[], tuple[Any, Path | None]]
_Item = tuple[Job, asyncio.Future[Any], asyncio.AbstractEventLoop]

_queue: queue.SimpleQueue[list[_Item]] = queue.SimpleQueue()
#: Per event loop: the jobs asked for in its current turn (each loop touches only its own).
_outboxes: dict[asyncio.AbstractEventLoop, list[_Item]] = {}
_lock = threading.Lock()
_thread: threading.Thread | None = None


async def run(job: Callable[[], tuple[T, Path | None]]) -> T:
    """Run `job` on the saver thread; its directory is fsynced before this returns."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    outbox = _outboxes.setdefault(loop, [])
    outbox.append((job, future, loop))
    if len(outbox) == 1:
        loop.call_soon(_post, loop)
    _start()
    return await future  # cancelled: only this future; the job still runs


def _post(loop: asyncio.AbstractEventLoop) -> None:
    outbox = _outboxes.pop(loop, None)
    if outbox:
        _queue.put(outbox)


def _start() -> None:
    global _thread
    if _thread is None:
        with _lock:
            if _thread is None:
                _thread = threading.Thread(target=_serve, name="kling-saver", daemon=True)
                _thread.start()


def _serve() -> None:
    while True:
        group = _queue.get()
        while not _queue.empty():  # take everything already waiting
            group.extend(_queue.get())
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        folders: set[Path] = set()
        for job, future, _ in group:
            try:
                result, folder = job()
            except BaseException as exc:  # reported to its own caller
                outcomes.append((future, None, exc))
                continue
            outcomes.append((future, result, None))
            if folder is not None:
                folders.add(folder)
        for folder in folders:
            fsync_dir(folder)
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for (_, _, loop), outcome in zip(group, outcomes, strict=True):
            by_loop.setdefault(loop, []).append(outcome)
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(settle, settled)


def fsync_dir(folder: Path) -> None:
    """Persist the renames into `folder` (best effort: not every system can fsync a directory)."""
    if os.name == "posix":
        with contextlib.suppress(OSError):
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def settle(settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    """Give each (future, result, error) its outcome, on the future's loop; a future already
    done (its caller was cancelled) is skipped: the work it asked for was still done."""
    for future, result, error in settled:
        if future.done():
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
