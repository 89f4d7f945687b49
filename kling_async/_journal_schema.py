"""The journal's file format: versioned, recognised before use, migrated from older releases.

Schema 2 (this release) keys jobs by identity (`_identity`); the file carries SQLite's
`application_id` (so a foreign database is told apart) and `user_version` = 2. Schema 1
(release 0.1: no version stamp, jobs keyed by line) is migrated in one transaction: every row
keeps its external id, task and files, under a provisional key `v1:<line>` and with its old
fingerprint, until a run matches it to its job. A newer schema, a corrupt file or another
program's database is refused with a `JournalError` naming the path and the reason.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from ._folder import OutputFolderError

__all__ = [
    "APPLICATION_ID",
    "COLUMNS",
    "SCHEMA_VERSION",
    "JournalError",
    "connect",
    "select_columns",
]

SCHEMA_VERSION = 2
APPLICATION_ID = 0x4B415331  # "KAS1": this file is a kling-async journal

#: Indexes that let a run read the journal in bounded batches, in order (by line, by expiry,
#: release-0.1 rows by fingerprint) without sorting every row for each batch. Added to
#: journals written before them when a run opens the file (indexes change no format).
_SCAN_INDEXES = {
    "jobs_line": "jobs(line)",
    "jobs_expiry": "jobs(state, expires_at)",
    "jobs_legacy": "jobs(legacy) WHERE legacy IS NOT NULL",
}
#: Units (issue 13) came after schema 2 was released: a column added to journals written
#: before it when a run opens them (older readers select their columns by name: unaffected).
_UNITS = "ALTER TABLE jobs ADD COLUMN units TEXT"
#: A cache, not a record: the identity content of job lines seen before whose identity
#: follows from their text alone (`_jobs.by_text`), by the digest of that text, so a rerun
#: recognises them without parsing. Added to journals written before it (no format change).
_SOURCES = (
    "CREATE TABLE IF NOT EXISTS sources (digest TEXT PRIMARY KEY, content TEXT NOT NULL)"
    " WITHOUT ROWID"
)
_TABLES = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE jobs (
        key TEXT PRIMARY KEY,        -- the job's identity (v1:<line> until a v1 row is matched)
        line INTEGER,                -- its line in the jobs file at the last run; NULL: removed
        external_id TEXT NOT NULL,
        watermark INTEGER,           -- 1 if the create asked for a watermarked copy (NULL: v1)
        legacy TEXT,                 -- schema-1 fingerprint of a row not yet matched to a job
        state TEXT NOT NULL,
        task_id TEXT,
        task TEXT,
        expires_at REAL,
        error TEXT,
        files TEXT,
        updated REAL NOT NULL,
        units TEXT                   -- JSON: the task's price kind, units reserved and spent
    )""",
    "CREATE INDEX jobs_state ON jobs(state)",
    "CREATE INDEX jobs_external_id ON jobs(external_id)",
    *(f"CREATE INDEX {name} ON {spec}" for name, spec in _SCAN_INDEXES.items()),
    _SOURCES,
)
#: What `SELECT {COLUMNS} FROM jobs` returns, in order (JobRow.from_sql reads it).
COLUMNS = (
    "key, line, external_id, watermark, legacy, state, task_id, task, expires_at, error, files,"
    " units"
)
#: The same row read from a schema-1 table (for read-only use, which must not migrate).
_V1_COLUMNS = (
    "'v1:' || line, line, external_id, NULL, fingerprint, state, task_id, task, expires_at,"
    " error, files, NULL"
)


def select_columns(columns: str, *, task: bool) -> str:
    """`columns` (either list above), or without the task — Kling's answer, the bulk of a
    row: rows read to count, report or write the manifest leave it out."""
    if task:
        return columns
    parts = columns.split(",")
    parts[7] = " NULL"  # `task`
    return ",".join(parts)


_V1_LAYOUT = [
    "line",
    "external_id",
    "fingerprint",
    "state",
    "task_id",
    "task",
    "expires_at",
    "error",
    "files",
    "updated",
]


class JournalError(OutputFolderError):
    """The journal file cannot be used: corrupt, another program's, or from a newer release."""


def _version(db: sqlite3.Connection, path: Path) -> int:
    """0 for an empty file, 1 or 2 for a kling-async journal; JournalError otherwise."""
    app_id = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if app_id == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"journal {path} was written by a newer kling-async (schema {version}; this "
                f"release reads up to {SCHEMA_VERSION}): upgrade kling-async to use this folder"
            )
        if version == SCHEMA_VERSION and {"meta", "jobs"} <= tables:
            return SCHEMA_VERSION
        raise JournalError(f"journal {path} is damaged (schema {version}, tables {sorted(tables)})")
    if app_id == 0 and not tables:
        return 0
    if app_id == 0 and tables == {"meta", "jobs"}:
        layout = [row[1] for row in db.execute("PRAGMA table_info(jobs)")]
        if layout == _V1_LAYOUT:
            return 1
    raise JournalError(
        f"{path} is not a kling-async journal (another program's SQLite database: "
        f"tables {', '.join(sorted(tables)) or 'none'}); use another output folder"
    )


def _create(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")
    for statement in _TABLES:
        db.execute(statement)
    _stamp(db)
    db.execute("COMMIT")


def _stamp(db: sqlite3.Connection) -> None:
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _migrate_v1(db: sqlite3.Connection) -> None:
    """Schema 1 → 2 in one transaction: a crash leaves the file as it was."""
    db.execute("BEGIN IMMEDIATE")
    db.execute("DROP INDEX IF EXISTS jobs_state")
    db.execute("DROP INDEX IF EXISTS jobs_external_id")
    db.execute("ALTER TABLE jobs RENAME TO jobs_v1")
    for statement in _TABLES[1:]:
        db.execute(statement)
    db.execute(f"INSERT INTO jobs ({COLUMNS}, updated) SELECT {_V1_COLUMNS}, updated FROM jobs_v1")
    db.execute("DROP TABLE jobs_v1")
    db.execute("INSERT OR REPLACE INTO meta VALUES ('migrated_from', '1')")
    _stamp(db)
    db.execute("COMMIT")


def _has_units(db: sqlite3.Connection) -> bool:
    return any(row[1] == "units" for row in db.execute("PRAGMA table_info(jobs)"))


def connect(path: Path, *, readonly: bool) -> tuple[sqlite3.Connection, str]:
    """Open a journal (creating or migrating it unless `readonly`).

    Returns the connection and the column list to select a `JobRow` with.
    """
    try:
        if readonly:
            uri = f"file:{quote(str(path.resolve()))}?mode=ro"
            db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        else:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open journal {path}: {exc}") from None
    try:
        db.execute("PRAGMA busy_timeout = 2000")  # a reader may briefly meet the writer
        version = _version(db, path)
        if readonly:
            if version == 0:
                raise JournalError(f"journal {path} is empty: no batch has run in this folder")
            if version == 1:
                return db, _V1_COLUMNS
            return db, (COLUMNS if _has_units(db) else COLUMNS.replace(" units", " NULL"))
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise JournalError(f"journal {path} is damaged (SQLite quick_check failed)")
        if version == 0:
            _create(db)
        elif version == 1:
            _migrate_v1(db)
        else:
            for name, spec in _SCAN_INDEXES.items():
                db.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {spec}")
            db.execute(_SOURCES)
            if not _has_units(db):
                db.execute(_UNITS)
        return db, COLUMNS
    except JournalError:
        db.close()
        raise
    except sqlite3.Error as exc:
        db.close()
        raise JournalError(f"journal {path} is not usable (corrupt or not SQLite): {exc}") from None
