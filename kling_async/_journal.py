"""Journal: durable per-job state in SQLite (WAL, synchronous=FULL), written by one thread.

Every state change is committed before the step it guards goes on (the intent before a create,
the task id after it), so a batch killed at any instant restarts knowing what exists. Writes from
many coroutines are grouped into one transaction per round trip of the writer thread (group
commit): durable, yet a few thousand changes a second cost little.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .models import Task

__all__ = ["JobRow", "JobState", "Journal"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    line INTEGER PRIMARY KEY,
    external_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    task_id TEXT,
    task TEXT,
    expires_at REAL,
    error TEXT,
    files TEXT,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_external_id ON jobs(external_id);
"""


class JobState:
    """The states a job moves through (strings, as stored)."""

    SUBMITTING = "submitting"  # intent recorded; the create's outcome may be unknown
    SUBMITTED = "submitted"  # Kling has the task; not finished yet
    SUCCEEDED = "succeeded"  # finished; video not yet on disk
    DOWNLOADED = "downloaded"  # verified video(s) on disk
    FAILED = "failed"  # Kling's task failed
    REJECTED = "rejected"  # invalid job or refused create: never billed
    EXPIRED = "expired"  # finished but past retention before we saved it

    TERMINAL = frozenset({DOWNLOADED, FAILED, REJECTED, EXPIRED})


@dataclass(frozen=True, slots=True)
class JobRow:
    """One job as the journal holds it."""

    line: int
    external_id: str
    fingerprint: str
    state: str
    task_id: str | None
    task: dict[str, Any] | None
    expires_at: float | None
    error: dict[str, Any] | None
    files: list[dict[str, Any]] | None

    @classmethod
    def from_sql(cls, row: tuple[Any, ...]) -> JobRow:
        """Decode a `SELECT *` row."""
        line, ext, fp, state, task_id, task, expires, error, files, _updated = row
        return cls(
            line,
            ext,
            fp,
            state,
            task_id,
            json.loads(task) if task else None,
            expires,
            json.loads(error) if error else None,
            json.loads(files) if files else None,
        )


_Op = tuple[str, tuple[Any, ...]]


class Journal:
    """Async facade over a SQLite file; `await` on a write returns once it is durable."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._queue: queue.SimpleQueue[tuple[list[_Op], asyncio.Future[None]] | None] = (
            queue.SimpleQueue()
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.commits = 0

    # -- reads (at start-up and for `status`; cheap, synchronous) ---------------------------
    def meta(self, key: str) -> str | None:
        """A stored setting, e.g. the batch id."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting (used before the writer starts)."""
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def rows(self, state: str | None = None) -> Iterator[JobRow]:
        """Every job (or those in `state`), by line."""
        sql = "SELECT * FROM jobs" + (" WHERE state = ?" if state else "") + " ORDER BY line"
        for row in self._db.execute(sql, (state,) if state else ()):
            yield JobRow.from_sql(row)

    def get(self, line: int) -> JobRow | None:
        """The job on `line`, if the journal knows it."""
        row = self._db.execute("SELECT * FROM jobs WHERE line = ?", (line,)).fetchone()
        return None if row is None else JobRow.from_sql(row)

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        return dict(self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())

    # -- durable writes ---------------------------------------------------------------------
    async def _write(self, *ops: _Op) -> None:
        if self._closed:  # a writer thread on a closed connection would die, never answering
            raise RuntimeError(f"journal {self.path} is closed")
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._writer, name="kling-journal", daemon=True)
            self._thread.start()
        assert self._loop is not None
        done: asyncio.Future[None] = self._loop.create_future()
        self._queue.put((list(ops), done))
        await asyncio.shield(done)  # a cancelled caller must not un-write what is queued

    def _writer(self) -> None:
        assert self._loop is not None
        while True:
            item = self._queue.get()
            batch = [item]
            while not self._queue.empty():  # group commit: take everything already waiting
                batch.append(self._queue.get())
            stop = None in batch
            work = [entry for entry in batch if entry is not None]
            error: BaseException | None = None
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for ops, _ in work:
                    for sql, params in ops:
                        self._db.execute(sql, params)
                self._db.execute("COMMIT")
                self.commits += 1
            except BaseException as exc:  # reported to every waiter below
                error = exc
                with contextlib.suppress(sqlite3.Error):  # the thread must live to answer
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
            for _, future in work:
                self._loop.call_soon_threadsafe(_settle, future, error)
            if stop:
                return

    async def intent(self, line: int, external_id: str, fingerprint: str) -> None:
        """Record "about to create" before the POST leaves."""
        await self._write(
            (
                "INSERT INTO jobs (line, external_id, fingerprint, state, updated)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(line) DO UPDATE SET"
                " external_id = excluded.external_id, fingerprint = excluded.fingerprint,"
                " state = excluded.state, error = NULL, updated = excluded.updated",
                (line, external_id, fingerprint, JobState.SUBMITTING, time.time()),
            )
        )

    async def update_task(
        self, line: int, state: str, task: Task, *, error: dict[str, Any] | None = None
    ) -> None:
        """Move a job to `state` with Kling's latest view of its task (and its expiry)."""
        await self.update(
            line,
            state,
            task=task.model_dump(mode="json"),
            expires_at=task.expires_at.timestamp() if task.expires_at else None,
            error=error,
        )

    async def update(
        self,
        line: int,
        state: str,
        *,
        task: dict[str, Any] | None = None,
        expires_at: float | None = None,
        error: dict[str, Any] | None = None,
        files: list[dict[str, Any]] | None = None,
    ) -> None:
        """Move a job to `state`, storing what is given (None leaves a column as it was)."""
        await self._write(
            (
                "UPDATE jobs SET state = ?, task_id = COALESCE(?, task_id),"
                " task = COALESCE(?, task), expires_at = COALESCE(?, expires_at),"
                " error = ?, files = COALESCE(?, files), updated = ? WHERE line = ?",
                (
                    state,
                    task.get("task_id") if task else None,
                    json.dumps(task) if task else None,
                    expires_at,
                    json.dumps(error) if error else None,
                    json.dumps(files) if files is not None else None,
                    time.time(),
                    line,
                ),
            )
        )

    async def record(
        self, line: int, external_id: str, fingerprint: str, state: str, error: dict[str, Any]
    ) -> None:
        """Insert or replace a job that never reached Kling (rejected before any create)."""
        # Upsert on `line` only: INSERT OR REPLACE would also delete any other row that
        # conflicts on another unique column.
        await self._write(
            (
                "INSERT INTO jobs (line, external_id, fingerprint, state, error, updated)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(line) DO UPDATE SET"
                " external_id = excluded.external_id, fingerprint = excluded.fingerprint,"
                " state = excluded.state, task_id = NULL, task = NULL, expires_at = NULL,"
                " error = excluded.error, files = NULL, updated = excluded.updated",
                (line, external_id, fingerprint, state, json.dumps(error), time.time()),
            )
        )

    def close_sync(self) -> None:
        """Close a journal that was only read (no writer thread running)."""
        assert self._thread is None, "use aclose() after writes"
        self._closed = True
        self._db.close()

    async def aclose(self) -> None:
        """Let queued writes finish, stop the writer and close the file."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        self._db.close()


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
