"""The `kling-async` command line: run, status, download, simulate."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from . import (
    BatchResult,
    Client,
    ConfigurationError,
    Credentials,
    Limits,
    OutputFolderError,
    PollPolicy,
    __version__,
    batch_status,
    run_batch,
)
from ._batch_io import JOURNAL_NAME
from ._dry_run import dry_run, price_arg
from ._folder import FolderLock
from ._journal import Journal
from ._progress import Reporter

__all__ = ["main"]

EXIT_OK, EXIT_JOBS_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_NO_ACCOUNT = "no account yet? add --simulate to try it against a built-in Kling simulator"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kling-async",
        description="Bulk Kling Multi-Image to Video: jobs in, videos on disk.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="turn every job of a JSONL file into a video on disk")
    run.add_argument("jobs", type=Path, help="JSONL file, one job per line")
    run.add_argument("--out", type=Path, required=True, help="output folder (resumable)")
    _add_connection(run)
    run.add_argument("--concurrency", type=int, default=5, help="account's task slots (start)")
    run.add_argument("--rps", type=float, default=10.0, help="API requests per second")
    run.add_argument("--poll-interval", type=float, default=1.0, help="seconds (starting)")
    run.add_argument("--download-concurrency", type=int, default=4, help="parallel downloads")
    run.add_argument(
        "--watermark",
        action="store_true",
        help="also request watermarked copies (for jobs created from now on)",
    )
    run.add_argument(
        "--adopt-existing",
        action="store_true",
        help="take over tasks that already exist under a job's own external_task_id "
        "(made elsewhere); without it such a job is rejected",
    )
    run.add_argument("--no-progress", action="store_true", help="plain log lines, no bars")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="check every job and image and estimate the units; send nothing, write nothing",
    )
    run.add_argument(
        "--price",
        type=price_arg,
        action="append",
        default=[],
        metavar="MODE-DURATION=UNITS",
        help="units per task of a kind for --dry-run's estimate, e.g. pro-10=7 (repeatable)",
    )

    status = sub.add_parser("status", help="what the journal of an output folder says")
    status.add_argument("out", type=Path)
    status.add_argument("--verify", action="store_true", help="re-hash every downloaded file")

    download = sub.add_parser("download", help="fetch finished videos not yet on disk")
    download.add_argument("out", type=Path)
    _add_connection(download)
    download.add_argument("--download-concurrency", type=int, default=4)
    download.add_argument("--verify", action="store_true", help="re-hash downloaded files")
    download.add_argument("--no-progress", action="store_true")

    simulate = sub.add_parser("simulate", help="serve a local Kling simulator")
    from .simulator import add_arguments  # the simulator owns its flags

    add_arguments(simulate)
    return parser


def _add_connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", help="API base URL (default: $KLING_BASE_URL or Singapore)")
    parser.add_argument(
        "--simulate", action="store_true", help="run against a built-in simulator (no account)"
    )


@contextlib.asynccontextmanager
async def _client(args: argparse.Namespace) -> AsyncIterator[Client]:
    """A client for the real API (credentials from the environment) or a simulator."""
    poll_interval = getattr(args, "poll_interval", 1.0)
    options = {
        "limits": Limits(
            concurrency=getattr(args, "concurrency", 5),
            rps=getattr(args, "rps", 10.0),
            download_concurrency=args.download_concurrency,
        ),
        "poll": PollPolicy(
            interval=poll_interval,
            interval_max=max(15.0, poll_interval),
            min_interval=min(0.05, poll_interval),
        ),
    }
    if not args.simulate:
        try:  # checked here too, so that the message can show the way in without an account
            Credentials.from_env()
        except ConfigurationError as exc:
            raise ConfigurationError(f"{exc}\n  {_NO_ACCOUNT}") from None
        async with Client(base_url=args.base_url, **options) as client:  # type: ignore[arg-type]
            yield client
        return
    from .simulator import Simulator

    cap = getattr(args, "concurrency", 5)
    state = args.out / "simulator-state.jsonl"  # the demo account lives in DIR: reruns resume
    async with (
        Simulator(concurrency=cap, gen_seconds=2.0, seed=7, state_path=state) as sim,
        Client(
            access_key=sim.access_key,
            secret_key=sim.secret_key,
            base_url=sim.url,
            **options,  # type: ignore[arg-type]
        ) as client,
    ):
        print(f"simulator: API {sim.url}, videos {sim.video_url}, {cap} slots", file=sys.stderr)
        yield client


def _count_jobs(path: Path) -> int:
    with path.open(encoding="utf-8-sig", errors="replace") as fh:
        return sum(1 for line in fh if line.strip() and not line.lstrip().startswith("#"))


async def _run(args: argparse.Namespace, jobs: Path | None, total: int | None) -> int:
    async with _client(args) as client:
        batch = run_batch(
            client,
            jobs,
            args.out,
            download_concurrency=args.download_concurrency,
            watermark=getattr(args, "watermark", False),
            adopt_existing=getattr(args, "adopt_existing", False),
            verify=getattr(args, "verify", False),
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
        try:
            async with Reporter(batch, total, fancy=fancy) as reporter:
                async for result in batch:
                    reporter.result(result)
                    bad += result.counts_against_exit
        except asyncio.CancelledError:
            if interrupts == 0:
                raise
            print(f"resume with the same command; journal: {args.out}", file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(signal.SIGINT)
    _summary(args.out)
    if batch.stop_reason:
        print(f"batch stopped submitting: {batch.stop_reason}", file=sys.stderr)
    return EXIT_JOBS_FAILED if bad or batch.stop_reason else EXIT_OK


def _summary(out: Path) -> None:
    status = batch_status(out)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(status.counts.items()))
    gone = f" ({status.removed} no longer in the jobs file)" if status.removed else ""
    print(
        f"{status.total} jobs{gone}: {counts}; manifest: {out / 'results.jsonl'}", file=sys.stderr
    )


def _status(out: Path, *, verify: bool) -> int:
    status = batch_status(out, verify=verify)
    gone = f" ({status.removed} no longer in the jobs file)" if status.removed else ""
    print(f"{out}: {status.total} jobs{gone}")
    for state, n in sorted(status.counts.items()):
        print(f"  {state:<11} {n}")
    if status.soonest_expiry is not None:
        left = status.soonest_expiry - datetime.now(UTC)
        print(
            f"  {status.pending_downloads} finished video(s) not on disk; soonest expires "
            f"{status.soonest_expiry:%Y-%m-%d %H:%M} UTC (in {left.days} d) — "
            f"run `kling-async download {out}`"
        )
    if status.unknown_expiry:
        print(
            f"  {status.unknown_expiry} finished video(s) not on disk with an unknown expiry "
            f"(Kling sent no created_at; fetched first) — run `kling-async download {out}`"
        )
    if status.files_bad:
        how = "re-hashed" if verify else "checked by size"
        print(
            f"  {status.files_bad_count} of {status.files_checked} downloaded file(s) ({how}) "
            f"missing or damaged — run `kling-async download {out}` to fetch them again"
        )
        for bad in status.files_bad:
            print(f"  {_where(bad.result)}: {bad.path} {bad.reason}")
        _more(status.files_bad_count - len(status.files_bad), "missing or damaged file(s)", out)
    for problem in status.problems:
        error = problem.error or {}
        print(f"  {_where(problem)}: {problem.state}: {error.get('message')}")
    _more(status.problem_count - len(status.problems), "job(s) with an error", out)
    return EXIT_JOBS_FAILED if status.files_bad else EXIT_OK


def _more(count: int, what: str, out: Path) -> None:
    if count > 0:  # `status` keeps a bounded number of each: the manifest has them all
        print(f"  … and {count:,} more {what}: see {out / 'results.jsonl'}")


def _where(result: BatchResult) -> str:
    if result.line is None:
        return f"{result.external_task_id} (no longer in the jobs file)"
    return f"line {result.line}"


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
    args = _parser().parse_args(argv)
    try:
        if args.command == "status":
            return _status(args.out, verify=args.verify)
        if args.command == "simulate":
            from .simulator import serve

            return asyncio.run(serve(args))
        jobs: Path | None = args.jobs if args.command == "run" else None
        if jobs is not None and jobs.is_dir():
            raise ConfigurationError(f"{jobs} is a directory; give the JSONL job file itself")
        if jobs is not None and not jobs.is_file():
            raise ConfigurationError(f"job file not found: {jobs}")
        if jobs is not None and args.dry_run:  # before any client: no credentials, no I/O
            return dry_run(jobs, args.price)
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
