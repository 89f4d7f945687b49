"""Progress for the CLI: rich bars on a terminal, plain log lines otherwise."""

from __future__ import annotations

import asyncio
import sys
import time
from contextlib import suppress
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from ._batch import Batch, BatchResult

__all__ = ["Reporter"]


class Reporter:
    """Shows a batch's progress; `result()` reports each finished job, `close()` ends it."""

    def __init__(self, batch: Batch, total: int | None, *, fancy: bool, out: TextIO | None = None):
        self.batch = batch
        self.total = total
        self.out = out or sys.stderr
        self.fancy = fancy
        self._progress: Progress | None = None
        self._ids: dict[str, TaskID] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._last = (time.monotonic(), 0)
        self._rate = 0.0

    async def __aenter__(self) -> Reporter:
        if self.fancy:
            self._progress = Progress(
                TextColumn("{task.description:<11}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[note]}"),
                console=Console(file=self.out),
            )
            for name in ("submitted", "running", "finished", "downloaded"):
                self._ids[name] = self._progress.add_task(name, total=self.total, note="")
            self._progress.start()
            self._ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with suppress(asyncio.CancelledError):
                await self._ticker
        if self._progress is not None:
            self._refresh()
            self._progress.stop()

    async def _tick(self) -> None:
        while True:
            self._refresh()
            await asyncio.sleep(0.2)

    def _refresh(self) -> None:
        assert self._progress is not None
        c = self.batch.counts
        now = time.monotonic()
        then, before = self._last
        if now - then >= 1.0:  # a rate over about a second reads steadier than per tick
            self._rate = (c.bytes - before) / (now - then)
            self._last = (now, c.bytes)
        update = self._progress.update
        update(self._ids["submitted"], completed=c.running + c.finished)
        limit = self.batch.client.gate.limit
        update(self._ids["running"], completed=c.running, note=f"slots in use (limit {limit})")
        update(self._ids["finished"], completed=c.finished, note=f"{c.failed} failed")
        update(
            self._ids["downloaded"],
            completed=c.downloaded,
            note=f"{_size(c.bytes)} at {_size(self._rate)}/s",
        )

    def result(self, result: BatchResult) -> None:
        """Report one job's outcome (problems always; successes only in plain mode)."""
        if result.ok and self.fancy:
            return
        where = f"line {result.line} ({result.external_task_id})"
        if result.line is None:  # its task (already paid for) is still followed and fetched
            where = f"{result.external_task_id} (no longer in the jobs file)"
        if result.ok:
            files = ", ".join(f"{f['path']} ({f['bytes']:,} B)" for f in result.files)
            text = f"{where}: downloaded {files}"
        else:
            error = result.error or {}
            extra = "".join(
                f", {key}={error[key]}" for key in ("code", "request_id", "field") if error.get(key)
            )
            text = f"{where}: {result.state}: {error.get('message', '')}{extra}"
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.out, flush=True)


def _size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"
