"""What one run has seen and done, kept beside the journal: memory does not grow with the jobs.

A run of 100,000 jobs must not hold 100,000 of anything. `RunLedger` opens its own connection
to the journal file (WAL: it reads what the writer thread has committed and never blocks it)
and keeps the run's bookkeeping in SQLite temp tables, which spill to a temp file beyond a
small page cache: where each job of the jobs file was (`seen`), which jobs were reported,
how many identical copies of a content were read, which external ids are claimed, which
`submitting` rows Kling never created, which release-0.1 rows were matched to their jobs,
which downloads were found damaged, the identities of lines recognised by their text (kept
for later runs in the journal's `sources` cache). Journal rows are read in bounded pages by
keyset on an index, so no cursor stays open across an await and no page sorts the table.
`finish` stores every job's line (and drops or renames rows) in one transaction at the end.
Needs SQLite ≥ 3.15 (row values); nothing newer.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._journal import JobRow, JobState
from ._journal_legacy import LegacyRows
from ._journal_schema import COLUMNS, JournalError, select_columns

__all__ = ["PAGE", "RunLedger"]

#: Rows read at once: large enough that a page costs one query, small enough to be nothing.
PAGE = 500
_WIDTH = len(COLUMNS.split(","))

_TEMP = (
    "CREATE TEMP TABLE seen (key TEXT PRIMARY KEY, line INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TEMP TABLE reported (key TEXT PRIMARY KEY) WITHOUT ROWID",
    "CREATE TEMP TABLE copies (content TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TEMP TABLE claims (ext TEXT PRIMARY KEY, key TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TEMP TABLE uncreated (key TEXT PRIMARY KEY) WITHOUT ROWID",
    "CREATE TEMP TABLE renames (old TEXT PRIMARY KEY, new TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TEMP TABLE damaged (key TEXT PRIMARY KEY, paths TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TEMP TABLE legacy_paths (path TEXT PRIMARY KEY) WITHOUT ROWID",
    "CREATE TEMP TABLE new_sources (digest TEXT PRIMARY KEY, content TEXT NOT NULL) WITHOUT ROWID",
)
_UNSEEN = "key NOT IN (SELECT key FROM temp.seen) AND key NOT IN (SELECT key FROM temp.reported)"


class RunLedger(LegacyRows):
    """A run's bookkeeping and its paged reads of the journal (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA busy_timeout = 10000")  # `finish` may wait for the writer
            db.execute("PRAGMA synchronous = FULL")  # per connection: `finish` is durable too
            db.execute("PRAGMA cache_size = -4096")  # KiB: the temp tables page beyond it
            db.execute("PRAGMA temp_store = FILE")
            for statement in _TEMP:
                db.execute(statement)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read journal {path}: {exc}") from None
        self._db = db
        #: Whether earlier runs left line identities to recognise (else nothing is looked up).
        self._sources = self._one("SELECT 1 FROM main.sources LIMIT 1") is not None
        self._new_sources: list[tuple[str, str]] = []  # written a page at a time

    def close(self) -> None:
        """Close the connection; the temp tables go with it."""
        self._db.close()

    def _one(self, sql: str, *params: Any) -> Any:
        row = self._db.execute(sql, params).fetchone()
        return None if row is None else row[0]

    # -- journal rows, in bounded pages ---------------------------------------------------------
    def get(self, key: str, *, task: bool = False) -> JobRow | None:
        """The job with this identity as last committed, if the journal knows it."""
        sql = f"SELECT {select_columns(COLUMNS, task=task)} FROM jobs WHERE key = ?"
        row = self._db.execute(sql, (key,)).fetchone()
        return None if row is None else JobRow.from_sql(row)

    def _scan(
        self, where: str, params: tuple[Any, ...], order: tuple[str, ...], *, task: bool
    ) -> Iterator[list[JobRow]]:
        """Pages of the rows matching `where`, in `order` (unique: it ends with rowid or key).

        Each page is its own query starting after the last row of the one before, so rows may
        change between pages (they do: the batch runs on meanwhile) without being skipped.
        """
        columns, keys = select_columns(COLUMNS, task=task), ", ".join(order)
        after: tuple[Any, ...] | None = None
        while True:
            cond, args = where, params
            if after is not None:
                cond += f" AND ({keys}) > ({', '.join('?' * len(order))})"
                args += after
            sql = f"SELECT {columns}, {keys} FROM jobs WHERE {cond} ORDER BY {keys} LIMIT {PAGE}"
            rows = self._db.execute(sql, args).fetchall()
            if not rows:
                return
            after = tuple(rows[-1][_WIDTH:])
            yield [JobRow.from_sql(row[:_WIDTH]) for row in rows]

    def pages(self, state: str, *, task: bool = False) -> Iterator[list[JobRow]]:
        """The rows in `state`, as they are when each page is read."""
        return self._scan("state = ?", (state,), ("rowid",), task=task)

    def by_expiry(self, state: str) -> Iterator[list[JobRow]]:
        """The rows in `state` with their task, unknown expiry first, then the soonest."""
        yield from self._scan("state = ? AND expires_at IS NULL", (state,), ("rowid",), task=True)
        where = "state = ? AND expires_at IS NOT NULL"
        yield from self._scan(where, (state,), ("expires_at", "rowid"), task=True)

    def unseen(self) -> Iterator[list[JobRow]]:
        """Rows this run has neither read in the jobs file nor reported: by line, then the
        jobs no longer in the file."""
        where = f"line IS NOT NULL AND {_UNSEEN}"
        yield from self._scan(where, (), ("line", "rowid"), task=False)
        yield from self._scan(f"line IS NULL AND {_UNSEEN}", (), ("rowid",), task=False)

    # -- the jobs file, as this run reads it ----------------------------------------------------
    def see(self, key: str, line: int) -> None:
        """The jobs file holds this job at `line`."""
        self._db.execute("INSERT OR REPLACE INTO temp.seen VALUES (?, ?)", (key, line))

    def line(self, key: str) -> int | None:
        """Where this run read the job, if it did."""
        line: int | None = self._one("SELECT line FROM temp.seen WHERE key = ?", key)
        return line

    def content(self, digest: str) -> str | None:
        """The identity content of a line whose text has this digest, if an earlier run read
        such a line and its identity follows from its text."""
        if not self._sources:
            return None
        content: str | None = self._one("SELECT content FROM main.sources WHERE digest = ?", digest)
        return content

    def remember(self, digest: str, content: str) -> None:
        """Keep a line's identity content by its text's digest (for later runs)."""
        self._new_sources.append((digest, content))
        if len(self._new_sources) >= PAGE:
            self._flush_sources()

    def _flush_sources(self) -> None:
        sql = "INSERT OR IGNORE INTO temp.new_sources VALUES (?, ?)"
        self._db.executemany(sql, self._new_sources)
        self._new_sources.clear()

    def occurrence(self, content: str) -> int:
        """How many jobs of this content were read before (0 for the first): its copy number."""
        if self._db.execute("INSERT OR IGNORE INTO temp.copies VALUES (?, 1)", (content,)).rowcount:
            return 0  # the first (one statement: most contents occur once)
        n: int = self._one("SELECT n FROM temp.copies WHERE content = ?", content)
        self._db.execute("UPDATE temp.copies SET n = ? WHERE content = ?", (n + 1, content))
        return n

    def claim(self, ext: str, key: str) -> str:
        """Claim an external id for a job: returns the job that owns it (`key` if none did).

        The first claim of an id this run settles it: for a job the journal holds under that
        id (unless the job never reached Kling), else for the claiming job.
        """
        owner: str = (
            self._one(
                "SELECT key FROM jobs WHERE external_id = ? AND state NOT IN (?, ?)"
                " ORDER BY line IS NULL, line, key LIMIT 1",
                ext,
                JobState.REJECTED,
                JobState.PENDING,
            )
            or key
        )
        sql = "INSERT OR IGNORE INTO temp.claims VALUES (?, ?)"
        if self._db.execute(sql, (ext, owner)).rowcount:
            return owner
        first: str = self._one("SELECT key FROM temp.claims WHERE ext = ?", ext)
        return first

    # -- what this run did ----------------------------------------------------------------------
    def report(self, key: str) -> bool:
        """This job's result is out (or on the way): never report it again this run. Returns
        whether it is the first report of this job."""
        cursor = self._db.execute("INSERT OR IGNORE INTO temp.reported VALUES (?)", (key,))
        return cursor.rowcount == 1

    def reported(self, key: str) -> bool:
        """Whether this job was reported this run."""
        return self._one("SELECT 1 FROM temp.reported WHERE key = ?", key) is not None

    def set_uncreated(self, key: str, uncreated: bool) -> None:
        """A `submitting` row Kling says it never created (it is sent when its job is read)."""
        sql = "INSERT OR IGNORE INTO temp.uncreated VALUES (?)"
        if not uncreated:
            sql = "DELETE FROM temp.uncreated WHERE key = ?"
        self._db.execute(sql, (key,))

    def uncreated(self, key: str) -> bool:
        """Whether Kling said it never created this `submitting` row's task."""
        return self._one("SELECT 1 FROM temp.uncreated WHERE key = ?", key) is not None

    def add_damaged(self, key: str, paths: frozenset[str]) -> None:
        """A downloaded job whose files are missing or damaged, to fetch again."""
        self._db.execute(
            "INSERT OR REPLACE INTO temp.damaged VALUES (?, ?)", (key, json.dumps(sorted(paths)))
        )

    def damaged(self) -> Iterator[list[tuple[str, frozenset[str]]]]:
        """The damaged downloads, in pages."""
        after = ""
        while True:
            rows = self._db.execute(
                f"SELECT key, paths FROM temp.damaged WHERE key > ? ORDER BY key LIMIT {PAGE}",
                (after,),
            ).fetchall()
            if not rows:
                return
            after = rows[-1][0]
            yield [(key, frozenset(json.loads(paths))) for key, paths in rows]

    # -- the end of the run ---------------------------------------------------------------------
    def finish(self, *, whole_file: bool) -> None:
        """In one transaction: (after reading the whole jobs file) drop removed jobs that never
        reached Kling and mark the other removed ones as no longer in the file; matched
        release-0.1 rows take their job's identity; every job read gets its line."""
        removed = "key NOT IN (SELECT key FROM temp.seen)"
        renamed = "(SELECT new FROM temp.renames WHERE old = {}.key)"
        line = "(SELECT line FROM temp.seen WHERE seen.key = jobs.key)"
        ops: list[tuple[str, tuple[Any, ...]]] = []
        if whole_file:
            ops.append(
                (
                    f"DELETE FROM jobs WHERE {removed} AND (state IN (?, ?)"
                    " OR key IN (SELECT key FROM temp.uncreated))",
                    (JobState.REJECTED, JobState.PENDING),
                )
            )
        ops += [
            (
                f"UPDATE jobs SET key = {renamed.format('jobs')}, legacy = NULL"
                " WHERE key IN (SELECT old FROM temp.renames)",
                (),
            ),
            (
                f"UPDATE temp.seen SET key = {renamed.format('seen')}"
                " WHERE key IN (SELECT old FROM temp.renames)",
                (),
            ),
        ]
        if whole_file:
            ops.append((f"UPDATE jobs SET line = NULL WHERE line IS NOT NULL AND {removed}", ()))
        ops.append(
            (
                f"UPDATE jobs SET line = {line} WHERE key IN (SELECT key FROM temp.seen)"
                f" AND line IS NOT {line}",
                (),
            )
        )
        ops.append(("INSERT OR IGNORE INTO main.sources SELECT * FROM temp.new_sources", ()))
        self._flush_sources()
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in ops:
                db.execute(sql, params)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
