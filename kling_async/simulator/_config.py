"""Frozen configuration of the simulator: server, account, timing, videos, faults."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ._outage import check_mode
from ._prices import DEFAULT_PRICES, check_prices
from ._shapes import check_shapes

__all__ = [
    "DEFAULT_ACCESS_KEY",
    "DEFAULT_API_KEY",
    "DEFAULT_FAILURE_MESSAGES",
    "DEFAULT_SECRET_KEY",
    "FaultConfig",
    "SimulatorConfig",
]

DEFAULT_ACCESS_KEY = "sim-access-key-0123456789"
# pyjwt warns on HMAC keys shorter than 32 bytes and the tests run with warnings as errors.
DEFAULT_SECRET_KEY = "sim-secret-key-0123456789abcdef0123456789abcdef"
DEFAULT_API_KEY = "sim-api-key-0123456789abcdef0123456789"
DEFAULT_FAILURE_MESSAGES = ("Image pixel is invalid", "content moderation failed")


def _freeze_nested(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType({k: _freeze(v) for k, v in value.items()})


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return _freeze_nested(value)
    if isinstance(value, list | tuple):
        return tuple(value)
    return value


@dataclass(frozen=True)
class FaultConfig:
    """Initial fault injection: per route kind, probabilities and scripted sequences.

    ``rates`` maps a route kind ("create", "query", "list", "video") to ``{fault: probability}``;
    ``scripts`` maps a route kind to a FIFO of faults consumed one per request (these win).
    """

    rates: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    scripts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    seed: int | None = None
    stall_max_seconds: float = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "rates", _freeze_nested(self.rates))
        object.__setattr__(self, "scripts", _freeze_nested(self.scripts))


@dataclass(frozen=True)
class SimulatorConfig:
    """Every option of the simulator; ``Simulator(config, **overrides)`` applies overrides."""

    host: str = "127.0.0.1"
    port: int = 0
    video_port: int = 0
    access_key: str = DEFAULT_ACCESS_KEY
    secret_key: str = DEFAULT_SECRET_KEY
    api_key: str | None = DEFAULT_API_KEY
    # JWT exp/nbf are checked against the simulator clock (advance() expires tokens); set False
    # to check them against real time so a test can jump 31 days and still query.
    auth_uses_sim_clock: bool = True
    concurrency: int = 5
    held_slots: int = 0
    rate_limit: float | None = None
    gen_seconds: float = 3.0
    gen_spread: float = 0.2
    pro_factor: float = 1.5
    long_factor: float = 2.0
    queue_fraction: float = 0.1
    fail_rate: float = 0.0
    failure_messages: tuple[str, ...] = DEFAULT_FAILURE_MESSAGES
    seed: int = 0
    video_bytes: int | None = None
    retention_days: float = 30.0
    url_ttl: float | None = None
    callbacks: bool = True
    duplicate_callbacks: bool = False
    callback_timeout: float = 5.0
    max_body_bytes: int = 64 * 1024 * 1024
    # Keep (Content-Length, bytes received, sha256) of every create body in the stats, so tests
    # can check what arrived byte for byte; off by default: hashing costs CPU in benchmarks.
    record_bodies: bool = False
    faults: FaultConfig = field(default_factory=FaultConfig)
    #: Units per task by "mode-duration" (overrides merge over Kling's defaults).
    prices: Mapping[str, Any] = field(default_factory=lambda: DEFAULT_PRICES)
    # Keep the account's tasks in this file (append-only JSON lines) so that a restarted
    # simulator still has them, carried on by elapsed time; None keeps nothing.
    state_path: str | os.PathLike[str] | None = None
    # Answer-shape switches (see _shapes.py): how answers are written, e.g. numbers for strings.
    shapes: Mapping[str, Any] = field(default_factory=dict)
    #: The simulator's clock starts this many seconds ahead of real time (negative: behind): its
    #: timestamps, retention, signed links and `Date` headers follow it, so a test can stage a
    #: client whose clock is off the server's. JWT times follow it too unless
    #: auth_uses_sim_clock is False.
    clock_offset: float = 0.0
    #: Outages of the API origin: (seconds after start, seconds down) each; see _outage.py.
    outages: tuple[tuple[float, float], ...] = ()
    #: How the API origin is down: "refuse" (nothing listens) or "hang" (no answer).
    outage_mode: str = "refuse"

    def __post_init__(self) -> None:
        object.__setattr__(self, "failure_messages", tuple(self.failure_messages))
        merged = {**DEFAULT_PRICES, **check_prices(self.prices)}
        object.__setattr__(self, "prices", MappingProxyType(merged))
        object.__setattr__(self, "shapes", _freeze_nested(check_shapes(self.shapes)))
        if len(self.secret_key.encode()) < 32:
            raise ValueError("secret_key must be at least 32 bytes (HS256 key length)")
        if self.concurrency < 0 or self.held_slots < 0:
            raise ValueError("concurrency and held_slots must be >= 0")
        if not 0.0 <= self.fail_rate <= 1.0:
            raise ValueError(f"fail_rate must be in [0, 1], got {self.fail_rate}")
        if not 0.0 <= self.queue_fraction <= 1.0:
            raise ValueError(f"queue_fraction must be in [0, 1], got {self.queue_fraction}")
        if self.gen_seconds < 0 or not 0.0 <= self.gen_spread <= 1.0:
            raise ValueError("gen_seconds must be >= 0 and gen_spread in [0, 1]")
        if self.video_bytes is not None and self.video_bytes < 0:
            raise ValueError("video_bytes must be >= 0")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError("rate_limit must be > 0 (or None for no limit)")
        if self.url_ttl is not None and self.url_ttl <= 0:
            raise ValueError("url_ttl must be > 0 (or None for permanent URLs)")
        if not self.failure_messages:
            raise ValueError("failure_messages must not be empty")
        object.__setattr__(self, "outages", tuple((float(a), float(b)) for a, b in self.outages))
        if any(after < 0 or seconds <= 0 for after, seconds in self.outages):
            raise ValueError("outages must be (seconds after start >= 0, seconds down > 0) pairs")
        check_mode(self.outage_mode)

    def replace(self, **overrides: Any) -> SimulatorConfig:
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **overrides)
