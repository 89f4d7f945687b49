"""The `kling-async` command line: run, status, download, simulate."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from . import (
    Client,
    ConfigurationError,
    Credentials,
    Limits,
    OutputFolderError,
    PollPolicy,
    RetryPolicy,
    batch_status,
    run_batch,
)
from ._cli_parser import build_parser
from ._config import DEFAULT_LIMITS, DEFAULT_POLL, DEFAULT_RETRY
from ._dry_run import dry_run
from ._folder import FolderLock
from ._journal import Journal
from ._progress import Reporter, write_result
from ._results import JOURNAL_NAME
from ._summary import (
    SHOWN,
    overview,
    record_jobs_in_file,
    status_lines,
    summary_line,
    units_lines,
)

__all__ = ["main"]

EXIT_OK, EXIT_JOBS_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_NO_ACCOUNT = "no account yet? add --simulate to try it against a built-in Kling simulator"


@contextlib.asynccontextmanager
async def _client(args: argparse.Namespace) -> AsyncIterator[Client]:
    """A client for the real API (credentials from the environment) or a simulator."""
    poll_interval = getattr(args, "poll_interval", DEFAULT_POLL.interval)
    cap = getattr(args, "concurrency", DEFAULT_LIMITS.concurrency)
    options = {
        "limits": Limits(
            concurrency=cap,
            rps=getattr(args, "rps", DEFAULT_LIMITS.rps),
            download_concurrency=args.download_concurrency,
        ),
        "poll": PollPolicy(
            interval=poll_interval,
            interval_max=max(DEFAULT_POLL.interval_max, poll_interval),
            min_interval=min(DEFAULT_POLL.min_interval, poll_interval),
        ),
        "coordinator": args.coordinator,
        "retry": RetryPolicy(
            outage_limit=getattr(args, "outage_limit", DEFAULT_RETRY.outage_limit),
            timeout=args.job_timeout,
        ),
    }
    if not args.simulate:
        try:  # checked here too, so that the message can show the way in without an account
            Credentials.from_env()
        except ConfigurationError as exc:
            raise ConfigurationError(f"{exc}\n  {_NO_ACCOUNT}") from None
        async with Client(base_url=args.base_url, **options) as client:
            yield client
        return
    from .simulator import Simulator

    state = args.out / "simulator-state.jsonl"  # the demo account lives in DIR: reruns resume
    async with (
        Simulator(concurrency=cap, gen_seconds=2.0, seed=7, state_path=state) as sim,
        Client(
            access_key=sim.access_key,
            secret_key=sim.secret_key,
            base_url=sim.url,
            **options,
        ) as client,
    ):
        print(f"simulator: API {sim.url}, videos {sim.video_url}, {cap} slots", file=sys.stderr)
        yield client


def _count_jobs(path: Path) -> int:
    """Jobs in the file, as the batch reads it: every line but blank ones and # comments."""
    with path.open(encoding="utf-8-sig", errors="replace") as fh:
        return sum(1 for line in fh if line.strip() and not line.lstrip().startswith("#"))


async def _run(args: argparse.Namespace, jobs: Path | None, total: int | None) -> int:
    async with _client(args) as client:
        if jobs is not None and total is not None:  # `status` counts the jobs no run reached
            record_jobs_in_file(args.out, total)
        batch = run_batch(
            client,
            jobs,
            args.out,
            download_concurrency=args.download_concurrency,
            watermark=getattr(args, "watermark", False),
            adopt_existing=getattr(args, "adopt_existing", False),
            verify=getattr(args, "verify", False),
            max_units=getattr(args, "max_units", None),
            prices=dict(getattr(args, "price", ())),
        )
        fancy = not args.no_progress and sys.stderr.isatty()
        bad = 0
        done = asyncio.current_task()
        assert done is not None
        interrupts = 0

        def on_sigint() -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts > 1:  # the journal is consistent at every commit: leave at once
                os._exit(EXIT_INTERRUPTED)
            # Running tasks are not waited for: they go on at Kling and a rerun picks them up.
            print("\ninterrupted: saving state (Ctrl-C again to quit at once)", file=sys.stderr)
            batch.stop_submitting("interrupted")
            done.cancel()

        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGINT, on_sigint)
        reporter = Reporter(batch, total, fancy=fancy, lines=not args.no_progress)
        client.event_hook = reporter.event  # coordinator lost / back: a line on stderr
        try:
            async with reporter:
                async for result in batch:
                    reporter.result(result)
                    bad += result.counts_against_exit
        except asyncio.CancelledError:
            if interrupts == 0:
                raise
            _summary(args.out, reporter.already_done)
            print(f"resume with the same command; journal: {args.out}", file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(signal.SIGINT)
    _summary(args.out, reporter.already_done)
    if batch.stop_reason:
        print(f"batch stopped submitting: {batch.stop_reason}", file=sys.stderr)
    for line in units_lines(batch):
        print(line, file=sys.stderr)
    return EXIT_JOBS_FAILED if bad or batch.stop_reason else EXIT_OK


def _summary(out: Path, already_done: int) -> None:
    """The run's last result line (stdout): every job of the file, by outcome."""
    view = overview(out, batch_status(out))
    write_result(summary_line(out, view, already_done=already_done))


def _status(out: Path, *, verify: bool, show_all: bool) -> int:
    status = batch_status(out, verify=verify, limit=None if show_all else SHOWN)
    for line in status_lines(out, overview(out, status), verify=verify, show_all=show_all):
        write_result(line)
    return EXIT_JOBS_FAILED if status.files_bad else EXIT_OK


def _take_folder(args: argparse.Namespace) -> FolderLock:
    """Check and lock the output folder before anything else (fail fast, exit 2)."""
    out: Path = args.out
    journal = out / JOURNAL_NAME
    if args.command == "download":
        if out.exists() and not out.is_dir():
            raise OutputFolderError(f"output folder {out} is a file, not a folder")
        if not journal.exists():
            raise FileNotFoundError(f"no batch journal at {journal}")
    lock = FolderLock.acquire(out)
    try:
        if journal.exists():  # corrupt, foreign or newer: say so now, not mid-run
            Journal(journal).close_sync()
    except BaseException:
        lock.release()
        raise
    return lock


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `kling-async` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command is None:  # bare `kling-async`: show what there is to do
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        if args.command == "status":
            return _status(args.out, verify=args.verify, show_all=args.all)
        if args.command == "simulate":
            from .simulator import serve

            return asyncio.run(serve(args))
        jobs: Path | None = args.jobs if args.command == "run" else None
        if jobs is not None and jobs.is_dir():
            raise ConfigurationError(f"{jobs} is a directory; give the JSONL job file itself")
        if jobs is not None and not jobs.is_file():
            raise ConfigurationError(f"job file not found: {jobs}")
        if jobs is not None and args.dry_run:  # before any client: no credentials, no I/O
            return dry_run(jobs, args.price, max_units=args.max_units, folder=args.out)
        total = _count_jobs(jobs) if jobs is not None else None
        if total == 0:
            print(f"kling-async: no jobs in {jobs} (one JSON object per line)", file=sys.stderr)
            return EXIT_JOBS_FAILED
        with _take_folder(args):  # before anything that could touch the folder
            return asyncio.run(_run(args, jobs, total))
    except (ConfigurationError, FileNotFoundError) as exc:
        print(f"kling-async: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
