"""Release-0.1 rows in a run's ledger: matched to their jobs by fingerprint, renamed at `finish`."""

from __future__ import annotations

import sqlite3
from abc import abstractmethod
from collections.abc import Iterator
from typing import Any

from ._journal import JobRow

__all__ = ["LegacyPaths", "LegacyRows"]


class LegacyPaths:
    """The paths (lower case) that release-0.1 rows' files hold: new names avoid them."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __contains__(self, path: object) -> bool:
        sql = "SELECT 1 FROM temp.legacy_paths WHERE path = ?"
        return self._db.execute(sql, (path,)).fetchone() is not None


class LegacyRows:
    """The release-0.1 side of `RunLedger` (its temp tables `legacy_paths` and `renames`)."""

    _db: sqlite3.Connection  # the ledger's own connection (set by RunLedger)

    @abstractmethod
    def _one(self, sql: str, *params: Any) -> Any:
        """The first column of the first row (None if none): RunLedger's."""

    @abstractmethod
    def _scan(
        self, where: str, params: tuple[Any, ...], order: tuple[str, ...], *, task: bool
    ) -> Iterator[list[JobRow]]:
        """Pages of the journal's rows matching `where`: RunLedger's."""

    def has_legacy(self) -> bool:
        """Whether some release-0.1 row is not matched to its job yet."""
        return self._one("SELECT 1 FROM jobs WHERE legacy IS NOT NULL LIMIT 1") is not None

    def legacy_paths(self) -> LegacyPaths:
        """Load and return the paths release-0.1 rows' files hold."""
        for page in self._scan("key LIKE 'v1:%'", (), ("rowid",), task=False):
            paths = [(r.path.lower(),) for row in page for r in row.files or ()]
            self._db.executemany("INSERT OR IGNORE INTO temp.legacy_paths VALUES (?)", paths)
        return LegacyPaths(self._db)

    def take_legacy(self, fingerprint: str) -> str | None:
        """The first unmatched release-0.1 row with this fingerprint (identical lines match
        in order); recorded as taken by `rename`."""
        key: str | None = self._one(
            "SELECT key FROM jobs WHERE legacy = ? AND key NOT IN (SELECT old FROM temp.renames)"
            " ORDER BY line IS NULL, line, key LIMIT 1",
            fingerprint,
        )
        return key

    def rename(self, old: str, new: str) -> None:
        """A release-0.1 row matched its job: it takes the job's identity at `finish`."""
        self._db.execute("INSERT OR REPLACE INTO temp.renames VALUES (?, ?)", (old, new))

    def renamed(self, key: str) -> str:
        """The identity a row will have after `finish` (its own unless it is renamed)."""
        if not key.startswith("v1:"):
            return key
        new: str | None = self._one("SELECT new FROM temp.renames WHERE old = ?", key)
        return new or key
