"""Group commit: one thread writes the journal, one transaction per batch of waiting writes."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from pathlib import Path
from typing import Any

from ._saver import settle

__all__ = ["GroupCommit", "Op"]

#: One SQL statement and its parameters.
Op = tuple[str, tuple[Any, ...]]
_Write = tuple[list[Op], asyncio.Future[None]]  # the statements of one call, and its waiter


class GroupCommit:
    """Runs writes on `db` in a thread of its own; `await write(...)` returns once durable."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._queue: queue.SimpleQueue[list[_Write] | None] = queue.SimpleQueue()
        #: Writes asked for in this turn of the event loop, handed to the writer at its end:
        #: one wake-up of the writer thread for all of them.
        self._outbox: list[_Write] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.closed = False
        self.commits = 0

    @property
    def started(self) -> bool:
        """Whether the writer thread runs (a write was asked for)."""
        return self._thread is not None

    async def write(self, *ops: Op) -> None:
        """Run `ops` in one transaction, grouped with the writes waiting; durable on return."""
        if self.closed:  # a writer thread on a closed connection would die, never answering
            raise RuntimeError(f"journal {self.path} is closed")
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._run, name="kling-journal", daemon=True)
            self._thread.start()
        assert self._loop is not None
        done: asyncio.Future[None] = self._loop.create_future()
        self._outbox.append((list(ops), done))
        if len(self._outbox) == 1:
            self._loop.call_soon(self._post)
        # A cancelled caller cancels only its own `done`: the ops stay queued and are committed
        # (`settle` skips a done future), so no shield (and its second future) is needed.
        await done

    def _post(self) -> None:
        if self._outbox:
            self._queue.put(self._outbox)
            self._outbox = []

    def _run(self) -> None:
        assert self._loop is not None
        while True:
            batch = [self._queue.get()]
            while not self._queue.empty():  # group commit: take everything already waiting
                batch.append(self._queue.get())
            stop = None in batch
            work = [write for posted in batch if posted is not None for write in posted]
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
            if work:  # one wake-up of the loop per group, not one per waiter
                settled = [(future, None, error) for _, future in work]
                self._loop.call_soon_threadsafe(settle, settled)
            if stop:
                return

    async def aclose(self) -> None:
        """Let queued writes finish and stop the thread (the connection stays open)."""
        self.closed = True
        if self._thread is not None:
            self._post()  # writes asked for in this very turn go first
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
