"""Fault injection: per route kind, scripted FIFOs (consumed first) and probabilities."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._config import FaultConfig
from ._protocol import CODE_STATUS

__all__ = ["ROUTE_KINDS", "Fault", "FaultInjector", "parse_fault"]

ROUTE_KINDS = ("create", "query", "list", "video")
_API_KINDS = frozenset({"create", "query", "list"})
_COMMON = frozenset({"reset", "stall", "403", "404", "garbage", "5000", "5001", "5002"})
_API_ONLY = frozenset({"bad_envelope"} | {str(c) for c in CODE_STATUS if c != 0})
_ONLY_FOR = {"lost": frozenset({"create"}), "truncate": frozenset({"video"})}


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault: ``name`` as written ("5000", "reset", "latency", ...)."""

    name: str
    seconds: float = 0.0

    @property
    def code(self) -> int | None:
        """The business code of an error fault, else None."""
        return int(self.name) if self.name.isdigit() and len(self.name) == 4 else None

    def __str__(self) -> str:
        return f"latency:{self.seconds:g}" if self.name == "latency" else self.name


def parse_fault(spec: str, kind: str) -> Fault:
    """Parse a fault (e.g. "5000", "reset", "latency:0.5") for route ``kind``; ValueError if bad."""
    if kind not in ROUTE_KINDS:
        raise ValueError(f"unknown route kind {kind!r}; expected one of {', '.join(ROUTE_KINDS)}")
    spec = spec.strip()
    if spec.startswith("latency:"):
        try:
            seconds = float(spec.partition(":")[2])
        except ValueError:
            raise ValueError(f"bad latency fault {spec!r}; expected latency:<seconds>") from None
        if seconds < 0:
            raise ValueError(f"latency must be >= 0 (got {seconds})")
        return Fault("latency", seconds)
    if spec in _ONLY_FOR:
        if kind not in _ONLY_FOR[spec]:
            raise ValueError(f"fault {spec!r} only applies to {', '.join(_ONLY_FOR[spec])}")
        return Fault(spec)
    if spec in _COMMON or (kind in _API_KINDS and spec in _API_ONLY):
        return Fault(spec)
    raise ValueError(f"unknown fault {spec!r} for route kind {kind!r}")


class FaultInjector:
    """Runtime-settable fault plan; ``pick(kind)`` decides the fault of one request."""

    def __init__(self, config: FaultConfig | None = None, seed: int = 0) -> None:
        config = config or FaultConfig()
        self.stall_max_seconds = config.stall_max_seconds
        self._rng = random.Random(config.seed if config.seed is not None else seed)
        self._rates: dict[str, dict[str, tuple[Fault, float]]] = {k: {} for k in ROUTE_KINDS}
        self._scripts: dict[str, deque[Fault]] = {k: deque() for k in ROUTE_KINDS}
        for kind, rates in config.rates.items():
            self.set_rates(kind, rates)
        for kind, faults in config.scripts.items():
            self.script(kind, *faults)

    def set_rate(self, kind: str, fault: str, probability: float) -> None:
        """Inject ``fault`` into ``probability`` of ``kind`` requests (0 removes it)."""
        parsed = parse_fault(fault, kind)
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1] (got {probability})")
        rates = self._rates[kind]
        if probability == 0.0:
            rates.pop(str(parsed), None)
        else:
            rates[str(parsed)] = (parsed, probability)
        if sum(p for _, p in rates.values()) > 1.0 + 1e-9:
            rates.pop(str(parsed))
            raise ValueError(f"fault probabilities for {kind!r} add up to more than 1")

    def set_rates(self, kind: str, rates: Mapping[str, float]) -> None:
        """Set several probabilities for one route kind."""
        for fault, probability in rates.items():
            self.set_rate(kind, fault, probability)

    def script(self, kind: str, *faults: str) -> None:
        """Append faults to ``kind``'s FIFO; each is used by exactly one request ("none" = pass)."""
        parsed = [Fault("none") if f == "none" else parse_fault(f, kind) for f in faults]
        self._scripts[kind].extend(parsed)

    def clear(self, kind: str | None = None) -> None:
        """Drop scripts and probabilities (of one kind, or all)."""
        kinds: Iterable[str] = ROUTE_KINDS if kind is None else (kind,)
        for k in kinds:
            self._rates[k].clear()
            self._scripts[k].clear()

    def pending(self, kind: str) -> int:
        """Scripted faults not yet consumed for ``kind``."""
        return len(self._scripts[kind])

    def pick(self, kind: str) -> Fault | None:
        """The fault for one request of ``kind``, or None."""
        script = self._scripts.get(kind)
        if script:
            fault = script.popleft()
            return None if fault.name == "none" else fault
        rates = self._rates.get(kind)
        if not rates:
            return None
        draw = self._rng.random()
        for fault, probability in rates.values():
            if draw < probability:
                return fault
            draw -= probability
        return None

    def as_dict(self) -> dict[str, Any]:
        """Current plan: {"rates": {kind: {fault: p}}, "scripts": {kind: [fault, ...]}}."""
        return {
            "rates": {k: {n: p for n, (_, p) in v.items()} for k, v in self._rates.items() if v},
            "scripts": {k: [str(f) for f in v] for k, v in self._scripts.items() if v},
        }
