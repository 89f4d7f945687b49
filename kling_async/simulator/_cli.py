"""Command line: ``python -m kling_async.simulator`` (wired as ``kling-async simulate``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import shlex
import signal
import sys
from collections import defaultdict
from typing import Any

from ._config import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_API_KEY,
    DEFAULT_SECRET_KEY,
    FaultConfig,
    SimulatorConfig,
)
from ._faults import FaultInjector, parse_fault
from ._flags import number
from ._outage import MODES
from ._prices import check_prices
from ._server import BindError, Simulator
from ._shapes import FLAGS

__all__ = ["add_arguments", "build_config", "main", "serve"]


def _fault_rate(text: str) -> tuple[str, str, float]:
    """Parse ``kind:fault=probability`` (e.g. ``create:5000=0.1``, ``video:latency:2=0.05``)."""
    kind, _, rest = text.partition(":")
    fault, sep, prob = rest.rpartition("=")
    try:
        if not sep:
            raise ValueError("expected kind:fault=probability")
        probability = float(prob)
        parse_fault(fault, kind)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad --fault-rate {text!r}: {exc}") from None
    return kind, fault, probability


def _fault_script(text: str) -> tuple[str, list[str]]:
    """Parse ``kind:fault,fault,...`` (e.g. ``create:5000,reset,none``)."""
    kind, sep, rest = text.partition(":")
    faults = [f.strip() for f in rest.split(",") if f.strip()]
    try:
        if not sep or not faults:
            raise ValueError("expected kind:fault[,fault...]")
        for fault in faults:
            if fault != "none":
                parse_fault(fault, kind)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad --fault-script {text!r}: {exc}") from None
    return kind, faults


def _price(text: str) -> tuple[str, str]:
    """Parse ``mode-duration=units`` (e.g. ``pro-10=7``)."""
    key, sep, units = text.partition("=")
    try:
        if not sep:
            raise ValueError("expected MODE-DURATION=UNITS, e.g. pro-10=7")
        ((key, units),) = check_prices({key.strip(): units}).items()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad --price {text!r}: {exc}") from None
    return key, units


_PORT = "%s port (default %%(default)s; 0 = a free one)"
_KEY = "accepted %s (default %%(default)s)"
_DEFAULT = " (default %(default)s)"


def _secret(text: str) -> str:
    if len(text.encode()) < 32:
        raise argparse.ArgumentError(
            None, f"--secret-key must be at least 32 bytes (got {len(text.encode())})"
        )
    return text


_PORT_RANGE = {"minimum": 0, "maximum": 65535}
_SHARE = {"minimum": 0.0, "maximum": 1.0}
#: The numeric options: flag, type, bounds (argparse refuses other values, naming the flag),
#: default, metavar and help.
_NUMBERS: tuple[tuple[str, type[int] | type[float], dict[str, Any], Any, str, str], ...] = (
    ("--port", int, _PORT_RANGE, 8080, "PORT", _PORT % "API"),
    ("--video-port", int, _PORT_RANGE, 8081, "PORT", _PORT % "video origin"),
    (
        "--concurrency",
        int,
        {"minimum": 0},
        5,
        "N",
        "account concurrent-task cap (default %(default)s; 0: every create gets 1303)",
    ),
    ("--gen-seconds", float, {"minimum": 0.0}, 3.0, "SECONDS", "mean generation time" + _DEFAULT),
    ("--gen-spread", float, _SHARE, 0.2, "SHARE", "relative spread of it, 0 to 1" + _DEFAULT),
    ("--fail-rate", float, _SHARE, 0.0, "SHARE", "share of tasks that fail, 0 to 1" + _DEFAULT),
    ("--seed", int, {}, 0, "N", "seed of per-task randomness" + _DEFAULT),
    (
        "--rate-limit",
        float,
        {"minimum": 0.0},
        None,
        "RPS",
        "max API requests/s, answered 1302 above it (default: no limit; 0 = no limit)",
    ),
    (
        "--video-bytes",
        int,
        {"minimum": 0},
        None,
        "N",
        "serve generated videos of N bytes (default: the bundled sample video)",
    ),
    (
        "--retention-days",
        float,
        {"above": 0.0},
        30.0,
        "DAYS",
        "how long finished videos are kept" + _DEFAULT,
    ),
    (
        "--url-ttl",
        float,
        {"minimum": 0.0},
        None,
        "SECONDS",
        "signed video URLs valid this long after each query (default: forever; 0 = forever)",
    ),
    (
        "--clock-offset",
        float,
        {},
        0.0,
        "SECONDS",
        "the server's clock runs this far ahead of this machine's (negative: behind)" + _DEFAULT,
    ),
)


def _outage(text: str) -> tuple[float, float]:
    """Parse ``AFTER:SECONDS`` (e.g. ``5:20``: down 20 s, starting 5 s after start)."""
    after, sep, seconds = text.partition(":")
    try:
        if not sep:
            raise ValueError("expected AFTER:SECONDS")
        plan = (float(after), float(seconds))
        if plan[0] < 0 or plan[1] <= 0:
            raise ValueError("AFTER must be >= 0 and SECONDS > 0")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad --outage {text!r}: {exc}") from None
    return plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options (every one has a default) to ``parser``."""
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    for flag, kind, bounds, default, metavar, text in _NUMBERS:
        add(flag, type=number(flag, kind, **bounds), default=default, metavar=metavar, help=text)
    add("--access-key", default=DEFAULT_ACCESS_KEY, help=_KEY % "access key (JWT iss)")
    add(
        "--secret-key",
        type=_secret,
        default=DEFAULT_SECRET_KEY,
        help=_KEY % "HS256 secret, at least 32 bytes",
    )
    add("--api-key", default=DEFAULT_API_KEY, help=_KEY % "plain API key ('' = none)")
    add("--state", metavar="FILE", help="keep the account's tasks in FILE across restarts")
    add("--no-callbacks", action="store_true", help="never POST to callback_url")
    add("--duplicate-callbacks", action="store_true", help="send every callback twice")
    add(
        "--price",
        type=_price,
        action="append",
        default=[],
        metavar="MODE-DURATION=UNITS",
        help="final_unit_deduction of a task kind (repeatable), e.g. pro-10=9",
    )
    add(
        "--fault-rate",
        type=_fault_rate,
        action="append",
        default=[],
        metavar="KIND:FAULT=P",
        help="inject FAULT into share P of KIND requests (repeatable), e.g. create:5000=0.1",
    )
    add(
        "--fault-script",
        type=_fault_script,
        action="append",
        default=[],
        metavar="KIND:F1,F2",
        help="faults for the next KIND requests, in order (repeatable), e.g. create:5002,lost",
    )
    add(
        "--outage",
        type=_outage,
        action="append",
        default=[],
        metavar="AFTER:SECONDS",
        help="the API port goes down SECONDS long, AFTER seconds after start (repeatable)",
    )
    add(
        "--outage-mode",
        choices=MODES,
        default="refuse",
        help="during an outage nothing listens (refuse), or nothing answers (hang)" + _DEFAULT,
    )
    add(
        "--shape",
        choices=FLAGS,
        action="append",
        default=[],
        help="write answers another way (repeatable), e.g. numbers_for_strings",
    )


def build_config(args: argparse.Namespace) -> SimulatorConfig:
    """The SimulatorConfig described by parsed arguments (ValueError if inconsistent)."""
    rates: dict[str, dict[str, float]] = defaultdict(dict)
    for kind, fault, probability in args.fault_rate:
        rates[kind][fault] = probability
    scripts: dict[str, list[str]] = defaultdict(list)
    for kind, faults in args.fault_script:
        scripts[kind].extend(faults)
    faults = FaultConfig(rates=dict(rates), scripts={k: tuple(v) for k, v in scripts.items()})
    FaultInjector(faults)  # validates probabilities (sum per kind <= 1)
    return SimulatorConfig(
        host=args.host,
        port=args.port,
        video_port=args.video_port,
        concurrency=args.concurrency,
        gen_seconds=args.gen_seconds,
        gen_spread=args.gen_spread,
        fail_rate=args.fail_rate,
        seed=args.seed,
        access_key=args.access_key,
        secret_key=args.secret_key,
        api_key=args.api_key or None,
        rate_limit=args.rate_limit or None,
        video_bytes=args.video_bytes,
        retention_days=args.retention_days,
        url_ttl=args.url_ttl or None,
        callbacks=not args.no_callbacks,
        duplicate_callbacks=args.duplicate_callbacks,
        faults=faults,
        prices=dict(args.price),
        state_path=args.state,
        shapes=dict.fromkeys(args.shape, True),
        clock_offset=args.clock_offset,
        outages=tuple(args.outage),
        outage_mode=args.outage_mode,
    )


def banner(sim: Simulator) -> str:
    """What the CLI prints: URLs, then credentials as pasteable ``export`` lines."""
    q = shlex.quote
    lines = [
        f"# Kling simulator: API {sim.url}  videos {sim.video_url}",
        f"export KLING_BASE_URL={q(sim.url)} KLING_ACCESS_KEY={q(sim.access_key)} "
        f"KLING_SECRET_KEY={q(sim.secret_key)}",
    ]
    if sim.api_key:
        lines.append(f"# or, with the plain API key: export KLING_API_KEY={q(sim.api_key)}")
    lines.append("# Ctrl-C to stop")
    return "\n".join(lines)


async def serve(args: argparse.Namespace) -> int:
    """Run the simulator until SIGINT/SIGTERM; return the exit status."""
    try:
        config = build_config(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with Simulator(config) as sim:
            print(banner(sim), flush=True)
            await stop.wait()
    except BindError as exc:
        flag = "--port" if exc.origin == "API" else "--video-port"
        hint = f"; pass {flag} 0 to use a free one" if exc.errno == errno.EADDRINUSE else ""
        print(f"error: cannot start the simulator: {exc}{hint}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot start the simulator: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: parse ``argv`` and serve."""
    parser = argparse.ArgumentParser(
        prog="python -m kling_async.simulator",
        description="A local Kling Multi-Image to Video API server (for demos, tests, benchmarks).",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(serve(args))
    return 130
