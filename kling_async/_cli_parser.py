"""The `kling-async` command line's arguments: every flag described, numbers checked on entry.

Numeric flags are parsed by typed converters that name the flag (`--concurrency must be ≥ 1
(got 0)`), so no configuration class's wording reaches the user; defaults come from
`DEFAULT_LIMITS` and `DEFAULT_POLL`, the library's own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import __version__
from ._config import DEFAULT_LIMITS, DEFAULT_POLL, DEFAULT_RETRY
from ._dry_run import price_arg, units_arg
from ._errors import ConfigurationError
from ._health import check_base_url
from ._summary import SHOWN
from .simulator._flags import number

__all__ = ["build_parser"]

_EPILOG = """\
try it without an account:
  kling-async run examples/jobs.jsonl --out out --simulate
then:
  kling-async status out

Results (one line per job, then a summary) go to stdout, progress and diagnostics to stderr.
Exit codes: 0 every video on disk, 1 some jobs not done, 2 usage or configuration, 130 Ctrl-C.
"""


def build_parser() -> argparse.ArgumentParser:
    """The `kling-async` argument parser: every flag described, with its default."""
    parser = argparse.ArgumentParser(
        prog="kling-async",
        description="Bulk Kling Multi-Image to Video: jobs in, videos on disk.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="turn every job of a JSONL file into a video on disk (resumable)",
        description="Create a task for every job of JOBS, follow them and download each video "
        "into DIR. Rerun the same command to resume: nothing is created or downloaded twice.",
    )
    run.add_argument("jobs", type=Path, metavar="JOBS", help="JSONL file, one job per line")
    run.add_argument("--out", type=Path, required=True, metavar="DIR", help=_OUT)
    _add_connection(run)
    _number(
        run,
        "--concurrency",
        int,
        DEFAULT_LIMITS.concurrency,
        "N",
        "the account's concurrent tasks to start from; lowered if Kling refuses",
        minimum=1,
    )
    _optional_number(
        run,
        "--rps",
        DEFAULT_LIMITS.rps,
        "R",
        "a ceiling on API requests per second (default: none; the rate adapts to Kling's "
        "'too many requests' answers)",
    )
    _number(
        run,
        "--outage-limit",
        float,
        DEFAULT_RETRY.outage_limit or 0.0,
        "SECONDS",
        "how long the API may be down (refusing or hanging) after it worked before the run "
        "gives up",
        above=0,
    )
    _add_job_timeout(run)
    _number(
        run,
        "--poll-interval",
        float,
        DEFAULT_POLL.interval,
        "SECONDS",
        "first pause between status checks; grows while nothing changes",
        above=0,
    )
    _add_download_flags(run)
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
        help="units per task of a kind (estimates, --dry-run and --max-units), e.g. pro-10=7 "
        "(repeatable)",
    )
    run.add_argument(
        "--max-units",
        type=units_arg,
        metavar="U",
        help="units budget of the folder, over every run: no task is created that could take "
        "units spent + reserved past U; jobs left over are 'over budget' (exit 1)",
    )

    status = sub.add_parser(
        "status",
        help="what an output folder holds: jobs by outcome, problems, videos to fetch",
        description="Read DIR's journal (never writes; safe while a batch runs) and check "
        "every downloaded file on disk. Exit 1 when a downloaded file is missing or damaged.",
    )
    status.add_argument("out", type=Path, metavar="DIR", help="output folder of a `run`")
    status.add_argument("--verify", action="store_true", help=_VERIFY)
    status.add_argument(
        "--all",
        action="store_true",
        help=f"list every problem line (default: the first {SHOWN}, then a count)",
    )

    download = sub.add_parser(
        "download",
        help="fetch finished videos not (or no longer) on disk; creates nothing",
        description="Follow the tasks DIR's journal knows and download every finished video "
        "that is not on disk, as a rerun would, without reading the jobs file.",
    )
    download.add_argument("out", type=Path, metavar="DIR", help="output folder of a `run`")
    _add_connection(download)
    _add_job_timeout(download)
    _add_download_flags(download)
    download.add_argument("--verify", action="store_true", help=_VERIFY)

    simulate = sub.add_parser(
        "simulate",
        help="serve a local Kling simulator (for trying things out and for tests)",
        description="A Kling-compatible API on 127.0.0.1; prints the KLING_* settings that "
        "point kling-async (or any client) at it. Ctrl-C stops it.",
    )
    from .simulator import add_arguments  # the simulator owns its flags

    add_arguments(simulate)
    return parser


_OUT = "output folder: videos/, results.jsonl and the journal that makes reruns resume"
_VERIFY = "also re-hash every downloaded file (its size is always checked)"


def _add_connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-url",
        type=_base_url,
        metavar="URL",
        help="API base URL (default: $KLING_BASE_URL, else Kling's Singapore endpoint)",
    )
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="run against a built-in simulator (no account needed; its tasks are kept in DIR)",
    )
    parser.add_argument(
        "--coordinator",
        metavar="URL",
        help="redis://host:port/db shared by every process on this account: slots, request "
        "rate and status sweeps (default: $KLING_COORDINATOR; none: this process alone)",
    )


def _add_job_timeout(parser: argparse.ArgumentParser) -> None:
    _optional_number(
        parser,
        "--job-timeout",
        DEFAULT_RETRY.timeout,
        "SECONDS",
        "how long one step of a job (its create, a status query, a video download) may go on "
        "retrying without progress before the job ends as timed out; a rerun resumes it "
        "(default: none, a transient condition is waited out)",
    )


def _optional_number(
    parser: argparse.ArgumentParser, flag: str, default: float | None, metavar: str, text: str
) -> None:
    """A positive number whose default is "none" (the help says what none means)."""
    parser.add_argument(
        flag, type=number(flag, float, above=0), default=default, metavar=metavar, help=text
    )


def _add_download_flags(parser: argparse.ArgumentParser) -> None:
    _number(
        parser,
        "--download-concurrency",
        int,
        DEFAULT_LIMITS.download_concurrency,
        "K",
        "videos downloaded at once",
        minimum=1,
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars, also on a terminal (results are printed either way)",
    )


def _base_url(text: str) -> str:
    """The URL normalised; refused at once (rc 2, the flag named) unless http(s) with a host."""
    try:
        return check_base_url(text, what="--base-url")
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _number(
    parser: argparse.ArgumentParser,
    flag: str,
    kind: type[int] | type[float],
    default: float,
    metavar: str,
    text: str,
    **bounds: float,
) -> None:
    """A numeric flag, checked by argparse (errors name the flag) and showing its default."""
    parser.add_argument(
        flag,
        type=number(flag, kind, **bounds),
        default=default,
        metavar=metavar,
        help=f"{text} (default: %(default)s)",
    )
