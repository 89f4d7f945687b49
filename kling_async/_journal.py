"""Journal: durable per-job state in SQLite (WAL, synchronous=FULL), written by one thread.

Jobs are keyed by identity (`_identity`), never by line: a line number is only where the job
was last seen. Every state change is committed before the step it guards goes on (the intent
before a create, the task id after it), so a batch killed at any instant restarts knowing
what exists. Writes from many coroutines are grouped into one transaction per round trip of
the writer thread (group commit, `_journal_writer`): durable, yet a few thousand changes a
second cost little.
The file format (versioned, migrated from release 0.1) lives in `_journal_schema`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ._journal_rows import JobRow, JobState, Tally
from ._journal_schema import JournalError, connect, select_columns
from ._journal_writer import GroupCommit
from ._records import OVER_BUDGET, Charge, FileRecord, JobError
from .models import Task

__all__ = ["JobRow", "JobState", "Journal", "JournalError", "Tally"]


class Journal:
    """Async facade over a SQLite file; `await` on a write returns once it is durable.

    Opening checks the file (`JournalError`: corrupt, another program's, or newer) and
    migrates a release-0.1 journal; `readonly=True` (for `status`) changes nothing, reads
    either schema, and may run beside a writer.
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._db, self._columns = connect(path, readonly=readonly)
        #: Set when this open migrated a release-0.1 journal.
        self.migrated = not readonly and self.meta("migrated_from") == "1"
        self._writer = GroupCommit(self._db, path)

    # -- reads (at start-up and for `status`; cheap, synchronous) ---------------------------
    def meta(self, key: str) -> str | None:
        """A stored setting, e.g. the batch id."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting (used before the writer starts)."""
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def rows(
        self, state: str | None = None, *, task: bool = True, with_error: bool = False
    ) -> Iterator[JobRow]:
        """Every job (or those in `state`, or with an error): by line, then the jobs no longer
        in the file.

        One cursor, read as it goes (SQLite sorts, spilling to disk if need be): for a
        connection no writer shares. `task=False` leaves out the largest column. A running
        batch reads through its ledger (`_journal_run`) instead.
        """
        where = " AND ".join(
            ["1"] + ["state = ?"] * bool(state) + ["error IS NOT NULL"] * with_error
        )
        columns = select_columns(self._columns, task=task)
        sql = f"SELECT {columns} FROM jobs WHERE {where} ORDER BY line IS NULL, line, 1"
        for row in self._db.execute(sql, (state,) if state else ()):
            yield JobRow.from_sql(row)

    def get(self, key: str) -> JobRow | None:
        """The job with this identity, if the journal knows it."""
        sql = f"SELECT {self._columns} FROM jobs WHERE {self._columns.split(',')[0]} = ?"
        row = self._db.execute(sql, (key,)).fetchone()
        return None if row is None else JobRow.from_sql(row)

    def charges(self) -> Iterator[tuple[str, JobState, Charge]]:
        """Every job's units on record (key, state, charge): the budget of the folder."""
        if self._columns.endswith("NULL"):  # a journal from before units: nothing recorded
            return
        for key, state, units in self._db.execute(
            "SELECT key, state, units FROM jobs WHERE units IS NOT NULL"
        ):
            yield key, JobState(state), Charge.from_dict(json.loads(units))

    def unpriced(self) -> Iterator[tuple[str, str | None]]:
        """Finished jobs with no units on record (ended before units were): key and raw
        `final_unit_deduction` of their task (None: none; SQLite reads it, garbled as None)."""
        units = "" if self._columns.endswith("NULL") else " AND units IS NULL"
        sql = (
            f"SELECT {self._columns.split(',')[0]}, CASE WHEN json_valid(task) THEN json_extract"
            f"(task, '$.final_unit_deduction') END FROM jobs WHERE state IN (?, ?, ?, ?){units}"
        )
        finished = (JobState.SUCCEEDED, JobState.DOWNLOADED, JobState.FAILED, JobState.EXPIRED)
        for key, raw in self._db.execute(sql, finished):
            yield key, None if raw is None else str(raw)

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        return dict(self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())

    def tally(self) -> Tally:
        """Counts SQLite makes without handing over a row (the same for any number of jobs)."""
        removed, errors, over = self._db.execute(
            "SELECT COALESCE(SUM(line IS NULL), 0), COALESCE(SUM(error IS NOT NULL), 0),"
            " COALESCE(SUM(state = ? AND json_extract(error, '$.type') = ?), 0) FROM jobs",
            (JobState.PENDING, OVER_BUDGET),
        ).fetchone()
        pending, soonest, unknown = self._db.execute(
            "SELECT COUNT(*), MIN(NULLIF(expires_at, 0)),"
            " COALESCE(SUM(expires_at IS NULL OR expires_at = 0), 0) FROM jobs WHERE state = ?",
            (JobState.SUCCEEDED,),
        ).fetchone()
        return Tally(self.counts(), removed, errors, pending, soonest, unknown, over)

    # -- durable writes ---------------------------------------------------------------------
    async def intent(
        self,
        key: str,
        *,
        line: int | None,
        external_id: str,
        watermark: bool,
        units: Charge | None = None,
    ) -> None:
        """Record "about to create" (and the units reserved for it) before the POST leaves."""
        await self._writer.write(
            (
                "INSERT INTO jobs (key, line, external_id, watermark, state, updated, units)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET"
                " line = excluded.line, external_id = excluded.external_id,"
                " watermark = excluded.watermark, state = excluded.state, error = NULL,"
                " updated = excluded.updated, units = COALESCE(excluded.units, units)",
                (
                    key,
                    line,
                    external_id,
                    int(watermark),
                    JobState.SUBMITTING,
                    time.time(),
                    _json(units),
                ),
            )
        )

    async def update_task(
        self,
        key: str,
        state: JobState,
        task: Task,
        *,
        error: JobError | None = None,
        units: Charge | None = None,
    ) -> None:
        """Move a job to `state` with Kling's latest view of its task (and its expiry)."""
        expires_at = task.expires_at.timestamp() if task.expires_at else None
        # pydantic writes the JSON itself: 3x faster than model_dump + json.dumps, same value.
        await self._update(
            key, state, task.task_id, task.model_dump_json(), expires_at, error, units
        )

    async def update(
        self,
        key: str,
        state: JobState,
        *,
        task: dict[str, Any] | None = None,
        expires_at: float | None = None,
        error: JobError | None = None,
        files: Sequence[FileRecord] | None = None,
        units: Charge | None = None,
    ) -> None:
        """Move a job to `state`, storing what is given (None leaves a column as it was)."""
        task_id = task.get("task_id") if task else None
        task_json = json.dumps(task) if task else None
        await self._update(key, state, task_id, task_json, expires_at, error, units, files)

    async def _update(
        self,
        key: str,
        state: JobState,
        task_id: str | None,
        task_json: str | None,
        expires_at: float | None,
        error: JobError | None,
        units: Charge | None,
        files: Sequence[FileRecord] | None = None,
    ) -> None:
        await self._writer.write(
            (
                "UPDATE jobs SET state = ?, task_id = COALESCE(?, task_id),"
                " task = COALESCE(?, task), expires_at = COALESCE(?, expires_at),"
                " error = ?, files = COALESCE(?, files), updated = ?,"
                " units = COALESCE(?, units) WHERE key = ?",
                (
                    state,
                    task_id,
                    task_json,
                    expires_at,
                    json.dumps(error.as_dict()) if error else None,
                    json.dumps([f.as_dict() for f in files]) if files is not None else None,
                    time.time(),
                    _json(units),
                    key,
                ),
            )
        )

    async def record(
        self, key: str, *, line: int | None, external_id: str, state: JobState, error: JobError
    ) -> None:
        """Insert or replace a job that never reached Kling (rejected, or pending a retry):
        no units are held for it."""
        # Upsert on `key` only: INSERT OR REPLACE would also delete any other row that
        # conflicts on another unique column.
        await self._writer.write(
            (
                "INSERT INTO jobs (key, line, external_id, state, error, updated)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET"
                " line = excluded.line, external_id = excluded.external_id,"
                " state = excluded.state, task_id = NULL, task = NULL, expires_at = NULL,"
                " error = excluded.error, files = NULL, updated = excluded.updated, units = NULL",
                (key, line, external_id, state, json.dumps(error.as_dict()), time.time()),
            )
        )

    def close_sync(self) -> None:
        """Close a journal that was only read (no writer thread running)."""
        assert not self._writer.started, "use aclose() after writes"
        self._writer.closed = True
        self._db.close()

    async def aclose(self) -> None:
        """Let queued writes finish, stop the writer and close the file."""
        await self._writer.aclose()
        self._db.close()

    @property
    def commits(self) -> int:
        """Transactions the writer thread has committed (each a group of writes)."""
        return self._writer.commits


def _json(units: Charge | None) -> str | None:
    return None if units is None else json.dumps(units.as_dict())
