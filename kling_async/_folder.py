"""The output folder: checked before use, and locked so that one process writes to it at a time.

`run` and `download` (and `run_batch`) take an exclusive OS lock (flock) on a lock file inside
the folder before anything else. The kernel drops it when the process dies, so even `kill -9`
never leaves a stale lock; the holder's PID is written into the file for the error message.
Readers (`status`) never take it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import ClassVar

from ._errors import FolderBusyError, OutputFolderError

__all__ = ["LOCK_NAME", "FolderBusyError", "FolderLock", "OutputFolderError", "check_folder"]

LOCK_NAME = ".kling-async.lock"
VIDEOS = "videos"

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def check_folder(out_dir: Path, *, create: bool = True) -> None:
    """Fail fast, naming the path, if `out_dir` cannot hold a batch (never hang, never trace).

    A file where the folder (or its `videos/`) should be, a folder that cannot be created or
    written to: each gets an `OutputFolderError`. `create=False` (download, status) requires
    the folder to exist already.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputFolderError(f"output folder {out_dir} is a file, not a folder")
    if not out_dir.exists():
        if not create:
            raise OutputFolderError(f"output folder {out_dir} does not exist")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputFolderError(f"cannot create output folder {out_dir}: {_why(exc)}") from None
    videos = out_dir / VIDEOS
    if videos.exists() and not videos.is_dir():
        raise OutputFolderError(f"{videos} is a file, not a folder: move it away")
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise OutputFolderError(f"output folder {out_dir} is not writable (permission denied)")


class FolderLock:
    """An exclusive OS lock on an output folder; a batch of this process may borrow it."""

    _held: ClassVar[dict[str, FolderLock]] = {}  # by real path: flock is per open file

    def __init__(self, out_dir: Path, fd: int, key: str) -> None:
        self.out_dir = out_dir
        self._fd: int | None = fd
        self._key = key
        self.batch: object | None = None  # the batch using it now, if any

    @classmethod
    def acquire(cls, out_dir: Path) -> FolderLock:
        """Check and lock `out_dir` now, or raise `OutputFolderError` / `FolderBusyError`."""
        check_folder(out_dir)
        key = os.path.realpath(out_dir)
        if key in cls._held:
            raise FolderBusyError(
                f"output folder {out_dir} is already locked by this process "
                f"(PID {os.getpid()}): one batch per folder at a time"
            )
        path = out_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputFolderError(f"cannot create the lock file {path}: {_why(exc)}") from None
        if not _try_lock(fd):
            holder = _read_pid(fd)
            os.close(fd)
            raise FolderBusyError(
                f"output folder {out_dir} is in use by another kling-async process "
                f"(PID {holder or 'unknown'}): wait for it to end, or stop it first"
            )
        with contextlib.suppress(OSError):  # the PID is for messages only
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        lock = cls._held[key] = cls(out_dir, fd, key)
        return lock

    @classmethod
    def for_batch(cls, out_dir: Path, batch: object) -> tuple[FolderLock, bool]:
        """The lock for a batch: borrowed if this process holds it idle (the CLI takes it
        before anything else), else acquired. Returns (lock, whether the batch must release)."""
        held = cls._held.get(os.path.realpath(out_dir)) if out_dir.exists() else None
        if held is not None and held.batch is None:
            check_folder(out_dir)
            held.batch = batch
            return held, False
        lock = cls.acquire(out_dir)
        lock.batch = batch
        return lock, True

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        self.batch = None
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        self._held.pop(self._key, None)
        _unlock(fd)
        os.close(fd)

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> str | None:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 32, 0).decode("ascii").strip()
        return text if text.isdigit() else None
    return None
