"""The bulk engine: jobs → tasks → videos on disk, at the account's concurrency, crash-safe.

A job is its content (`_identity`): the journal is keyed by identity, so editing, inserting,
deleting, moving or duplicating lines between runs never re-creates a job that exists, never skips
a new one and never hands one job another's task. Four layers make a `Batch`: `Resumer`
(`_batch_resume`: what the journal and the disk already hold), `Creator` (`_batch_create`: reading
the jobs file in order, creating each new job once under an id the folder owns), `Follower`
(`_batch_follow`: what a followed task's end means for its job) and `Batch` here (the run itself:
lock, stages, results). The client's tracker follows running tasks; a download pool takes the
earliest-expiring video first. The folder is locked (`_folder`) for the whole run.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Coroutine, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._batch_downloads import DownloadStage
from ._batch_follow import Follower
from ._budget import Budget
from ._errors import (
    ConfigurationError,
)
from ._folder import FolderLock, OutputFolderError
from ._jobs import Job, Line, jobs_from_requests, lines_from_jsonl
from ._journal import Journal
from ._prices import Kind, PriceTable, Units
from ._results import JOURNAL_NAME, MANIFEST_NAME, BatchResult, write_manifest
from ._types import PathLike
from .models import MultiImageToVideoRequest

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["Batch", "BatchResult", "run_batch"]

#: Results waiting to be read: past the high mark, reading the jobs file (or the journal) waits
#: until the consumer brings the queue down to the low mark.
_RESULTS_HIGH, _RESULTS_LOW = 1024, 256


class Batch(Follower):
    """Runs a batch; iterate it (`async for result in batch`) to drive it and get results.

    `jobs=None` runs on the journal alone (`kling-async download`): nothing new is created,
    what the folder knows is followed, fetched and reported.
    """

    def __init__(
        self,
        client: Client,
        jobs: Iterable[Job | Line] | None,
        out_dir: Path,
        *,
        download_concurrency: int | None = None,
        watermark: bool = False,
        adopt_existing: bool = False,
        verify: bool = False,
        submitters: int | None = None,
        max_units: Units | None = None,
        prices: PriceTable | Mapping[str | Kind, Units] | None = None,
    ) -> None:
        super().__init__(
            client,
            None if jobs is None else iter(jobs),
            Path(out_dir),
            verify=verify,
            watermark=watermark,
            adopt_existing=adopt_existing,
        )
        try:
            self.budget = Budget(max_units, prices)
        except ValueError as exc:
            raise ConfigurationError(f"max_units={max_units!r}: {exc}") from None
        self._downloaders = download_concurrency or client.limits.download_concurrency
        self._submitters = submitters or min(client.limits.concurrency, 16)
        self._results: asyncio.Queue[BatchResult | None] = asyncio.Queue()
        self._drained = asyncio.Event()  # set while the results queue is short
        self._drained.set()
        self._background: set[asyncio.Future[None]] = set()

    # -- public control -----------------------------------------------------------------------
    def stop_submitting(self, reason: str) -> None:
        """Submit nothing more; running tasks still finish and download."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stopped.set()

    async def __aiter__(self) -> AsyncIterator[BatchResult]:
        engine = asyncio.create_task(self._run(), name="kling-batch")
        # However the engine ends (a bad folder before it even started included), the loop
        # below must end too: a sentinel after the engine's own is harmless.
        engine.add_done_callback(lambda _: self._results.put_nowait(None))
        try:
            while (result := await self._results.get()) is not None:
                if self._results.qsize() <= _RESULTS_LOW:
                    self._drained.set()
                yield result
            await engine
        finally:
            if not engine.done():
                engine.cancel()
            await asyncio.gather(engine, return_exceptions=True)

    # -- engine -------------------------------------------------------------------------------
    async def _run(self) -> None:
        lock, release = FolderLock.for_batch(self.out_dir, self)
        workers: list[asyncio.Task[None]] = []
        try:
            journal = self._journal = Journal(self.out_dir / JOURNAL_NAME)
            try:
                self.videos_dir.mkdir(exist_ok=True)
            except OSError as exc:
                why = exc.strerror or exc
                raise OutputFolderError(f"cannot create {self.videos_dir}: {why}") from None
            self._load(journal)
            self._fetcher = DownloadStage(
                self.client, self.out_dir, self.counts, taken=self._legacy_paths()
            )
            self._fetcher.on_full = self.stop_submitting  # new videos would have nowhere to go
            await self._resume()
            workers = [asyncio.create_task(self._submitter()) for _ in range(self._submitters)]
            workers += [asyncio.create_task(self._downloader()) for _ in range(self._downloaders)]
            await asyncio.gather(*workers[: self._submitters])
            await self._report_unseen(journal_only=self._jobs is None)
            while self._outstanding:
                self._idle.clear()
                await self._idle.wait()
        finally:
            # From here on, tasks that end (the client may keep tracking them) are the next
            # run's business: nothing may write to the journal once it is closed.
            self._closed = True
            background = list(self._background)
            for job in (*workers, *background):
                job.cancel()
            await asyncio.gather(*workers, *background, return_exceptions=True)
            try:
                if self._journal is not None:
                    await self._finish(self._journal)
            finally:
                self._results.put_nowait(None)
                if release:
                    lock.release()
                else:  # the CLI's lock: it lets go of it
                    lock.batch = None

    async def _finish(self, journal: Journal) -> None:
        """Store where every job was seen, close the journal and rewrite the manifest."""
        ledger, self._ledger = self._ledger, None
        try:
            await journal.aclose()  # lets writes already queued (shielded) finish
            if ledger is not None and self._jobs is not None:
                ledger.finish(whole_file=self._whole_file)  # the writer is gone: no waiting
        finally:
            if ledger is not None:
                ledger.close()
        write_manifest(journal.path, self.out_dir / MANIFEST_NAME)

    def _emit(self, key: str, result: BatchResult, line: int | None = None) -> None:
        """Report a job's result, placed where the job is in this run's jobs file (`line`,
        when the caller knows it)."""
        ledger = self._ledger
        if ledger is None:  # the run is over: the next one reports it
            return
        if line is None and (flight := self._inflight.get(key)) is not None:
            line = flight.line
        if line is None:
            line = ledger.line(key)
        if line is not None:
            in_file = True
        elif self._jobs is not None and self._whole_file:
            in_file = False
        else:  # not read (yet) this run: as the last run saw it
            row = ledger.get(key)
            line, in_file = (row.line, row.line is not None) if row else (None, True)
        line, job_id = line if in_file else None, ledger.renamed(key)
        if (result.line, result.in_jobs_file, result.job_id) != (line, in_file, job_id):
            result = replace(result, line=line, in_jobs_file=in_file, job_id=job_id)
        ledger.report(key)
        self._inflight.pop(key, None)
        self.counts.states[result.state] = self.counts.states.get(result.state, 0) + 1
        self._results.put_nowait(result)

    async def _room_for_results(self) -> None:
        """Wait while many results wait to be read: a rerun of a long finished file reports
        a job per line, far faster than a consumer may take them."""
        if self._results.qsize() >= _RESULTS_HIGH:
            self._drained.clear()
            await self._drained.wait()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        job = asyncio.ensure_future(coro)
        self._background.add(job)  # keep a reference: the loop holds tasks only weakly
        job.add_done_callback(self._background.discard)


def run_batch(
    client: Client,
    jobs: Iterable[MultiImageToVideoRequest] | PathLike | None,
    out_dir: PathLike,
    *,
    download_concurrency: int | None = None,
    watermark: bool = False,
    adopt_existing: bool = False,
    verify: bool = False,
    max_units: Units | None = None,
    prices: PriceTable | Mapping[str | Kind, Units] | None = None,
) -> Batch:
    """Run many jobs (requests, or a JSONL file's path) into `out_dir`; iterate for results.

    Rerunning with the same `out_dir` resumes: a job (its content, wherever its line is) is
    never created twice, and nothing is downloaded twice. `jobs=None` only follows and fetches
    what the folder's journal knows. `watermark` asks for watermarked copies of jobs created
    from now on (it is not part of a job's identity). `adopt_existing` takes over a task that
    already exists under a job's own external_task_id (normally such a job is rejected).
    `verify` re-hashes downloaded files (their sizes are always checked). The folder is
    locked while the batch runs: `FolderBusyError` if another batch or process has it.

    `max_units` caps the units the folder's tasks may cost, over every run: no task is
    created when units spent + reserved (tasks in flight, at their estimate) + its own
    estimate would exceed it; such jobs end `pending` ("over budget") and a rerun with a
    higher cap sends them. `prices` overrides the estimates (`PriceTable`, or e.g.
    `{"pro-10": 7}`); a kind's estimate rises to the highest deduction Kling reports.
    """
    source: Iterable[Job | Line] | None
    if jobs is None:
        source = None
    elif isinstance(jobs, str | os.PathLike):
        source = lines_from_jsonl(Path(jobs))
    else:
        source = jobs_from_requests(jobs)
    return Batch(
        client,
        source,
        Path(out_dir),
        download_concurrency=download_concurrency,
        watermark=watermark,
        adopt_existing=adopt_existing,
        verify=verify,
        max_units=max_units,
        prices=prices,
    )
