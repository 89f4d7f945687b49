"""Progress for the CLI: results (one line per job) on stdout, rich bars on a terminal's stderr.

With a units budget the bars show units spent / reserved / budget; without a terminal (and
unless progress is off) the same is written to stderr as a line whenever it changes (at most
about once a second), so a log shows how close the batch came to its cap.

Results are what `kling-async run … > log.txt` must capture, so they go to stdout whatever the
bars do; while bars are drawn on the same terminal, results are printed above them (and only
problems: the bars count the rest).
"""

from __future__ import annotations

import asyncio
import math
import os
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
from ._events import CoordinatorBack, CoordinatorLost, Event
from ._labels import ALREADY_DONE
from ._records import JobError

__all__ = ["Reporter", "coordinator_line", "write_result"]


class Reporter:
    """Shows a batch's progress; `result()` reports each job's outcome (to `out`, stdout by
    default), the bars (`fancy`) are drawn on `log` (stderr by default)."""

    def __init__(
        self,
        batch: Batch,
        total: int | None,
        *,
        fancy: bool,
        out: TextIO | None = None,
        log: TextIO | None = None,
        lines: bool = False,
        every: float = 1.0,
    ):
        self.batch = batch
        self.total = total
        self.out = out or sys.stdout
        self.log = log or sys.stderr
        self.fancy = fancy
        #: Results seen as "already done" (downloaded by an earlier run), for the summary.
        self.already_done = 0
        # Bars and results share the terminal: results are printed above the bars, and a
        # success is left to the bars. Results going elsewhere (a file) are all written there.
        self._above_bars = fancy and _isatty(self.out)
        self._progress: Progress | None = None
        self._ids: dict[str, TaskID] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._last = (time.monotonic(), 0)
        self._rate = 0.0
        # Units lines on stderr: only when no bars show them and the batch has a cap.
        self._units_lines = lines and not fancy and batch.budget.cap is not None
        self._every = every
        self._units_said = ""

    async def __aenter__(self) -> Reporter:
        if self.fancy:
            self._progress = Progress(
                TextColumn("{task.description:<11}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[note]}"),
                console=Console(file=self.log),
                redirect_stdout=self._above_bars,
            )
            for name in ("submitted", "running", "finished", "downloaded"):
                self._ids[name] = self._progress.add_task(name, total=self.total, note="")
            self._progress.start()
            self._ticker = asyncio.create_task(self._tick())
        elif self._units_lines:
            self._ticker = asyncio.create_task(self._tick_units())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with suppress(asyncio.CancelledError):
                await self._ticker
        if self._progress is not None:
            self._refresh()
            self._progress.stop()
        if self._units_lines:
            self._say_units()

    async def _tick_units(self) -> None:
        while True:
            self._say_units()
            await asyncio.sleep(self._every)

    def _say_units(self) -> None:
        text = f"units: {self.batch.budget.state()}"
        if text != self._units_said:
            self._units_said = text
            with suppress(OSError, ValueError):  # progress must never end the batch
                print(text, file=self.log, flush=True)

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
        budget = self.batch.budget
        units = "" if budget.cap is None else f"units: {budget.state()}"
        update(self._ids["submitted"], completed=c.running + c.finished, note=units)
        client = self.batch.client
        note = f"slots in use (limit {client.slot_limit})"
        if client.health.waiting:
            note += ", waiting for the API"
        elif client.request_rate.state().throttled:
            note += ", throttled"  # Kling answered 1302: requests are paced
        update(self._ids["running"], completed=c.running, note=note)
        update(self._ids["finished"], completed=c.finished, note=f"{c.failed} failed")
        update(
            self._ids["downloaded"],
            completed=c.downloaded,
            note=f"{_size(c.bytes)} at {_size(self._rate)}/s",
        )

    def result(self, result: BatchResult) -> None:
        """Report one job's outcome (every one, except successes above live bars)."""
        word = result.outcome
        self.already_done += word == ALREADY_DONE
        if result.ok and self._above_bars:
            return
        where = f"line {result.line} ({result.external_task_id})"
        if result.line is None:  # its task (already paid for) is still followed and fetched
            where = f"{result.external_task_id} (no longer in the jobs file)"
        if result.ok:
            files = ", ".join(f"{f.path} ({f.bytes:,} B)" for f in result.files)
            text = f"{where}: {word}{':' if result.from_earlier_run else ''} {files}"
        else:
            error = result.error or JobError("")
            shown = {"code": error.code, "request_id": error.request_id, "field": error.field}
            extra = "".join(f", {key}={value}" for key, value in shown.items() if value)
            when = " in an earlier run" if result.from_earlier_run else ""
            message = error.message
            if error.type == "ApiUnreachableError":
                message = "the API was given up (see the last line)"  # said once, not per job
            text = f"{where}: {word}{when}: {message}{extra}"
        if self._progress is not None and self._above_bars:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            write_result(text, self.out)

    def event(self, event: Event) -> None:
        """The client's events the user must see as they happen (on stderr, above any bars)."""
        text = coordinator_line(event)
        if text is None:
            return
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            with suppress(OSError, ValueError):
                print(text, file=self.log, flush=True)


def coordinator_line(event: Event) -> str | None:
    """The stderr line for a coordinator lost or back; None for any other event."""
    match event:
        case CoordinatorLost(url=url, lost_limit=limit):
            give_up = f"; creating stops for good after {limit:g} s" if limit < math.inf else ""
            return (
                f"coordinator lost: {url} does not answer: creating paused, following and "
                f"downloading go on{give_up}"
            )
        case CoordinatorBack(after=after, gave_up=gave_up):
            then = "creating stays stopped (lost_limit passed)" if gave_up else "creating resumes"
            return f"coordinator back after {after:.1f} s: {then}"
    return None


def write_result(text: str, out: TextIO | None = None) -> None:
    """Print one result line (stdout by default). If the reader has gone (`run … | head`),
    the batch still finishes: later results are dropped instead of ending it with a trace."""
    out = out or sys.stdout
    try:
        print(text, file=out, flush=True)
    except BrokenPipeError:
        with suppress(OSError, ValueError):  # point the stream at /dev/null: flushes succeed
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())
            os.close(devnull)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-less stream is no terminal
        return False


def _size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"
