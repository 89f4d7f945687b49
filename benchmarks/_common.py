"""Shared pieces of the benchmark: run specs, child-process plumbing, measurements, test images.

A client run (kling-async or the baseline) is a child process that gets one `RunSpec` as JSON,
prints ``READY`` when its clock starts (so the parent can time account changes against it) and
writes one `ClientResult` as JSON. CPU comes from ``getrusage(RUSAGE_SELF)`` and peak RSS from
VmHWM in ``/proc/self/status``, both inside the child, so they are the client's alone.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "REAL_GEN_SECONDS",
    "ROOT",
    "ClientResult",
    "Meter",
    "RunSpec",
    "child_main",
    "make_png",
    "peak_rss_mb",
    "rss_mb",
]

ROOT = Path(__file__).resolve().parent.parent
#: A real Kling generation takes about two minutes; benchmarks compress time by T / this.
REAL_GEN_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What one client child process does."""

    api_url: str
    access_key: str
    secret_key: str
    jobs: int
    concurrency: int  # what the user configures: the cap they believe the account has
    gen_seconds: float  # mean T, to scale time constants (the same factor on both sides)
    out_dir: str
    result_path: str
    image_paths: list[list[str]] = field(default_factory=list)  # per job; empty: URL images
    rps: float | None = None  # kling-async's request-rate ceiling at real scale (scaled below)
    callbacks: bool = False  # the account sends callbacks: kling-async runs a CallbackReceiver
    # The account limits requests per real second (not time-compressed): the client's rate
    # rules, its slow start included, then stay at real scale too.
    real_time_rate: bool = False

    @property
    def scale(self) -> float:
        """Time compression factor: T / 120 s."""
        return self.gen_seconds / REAL_GEN_SECONDS

    def images_for(self, index: int) -> list[str]:
        """The images of job `index`: files if given, else four distinct http URLs."""
        if self.image_paths:
            return self.image_paths[index % len(self.image_paths)]
        return [f"https://images.example.com/job-{index}/ref-{k}.png" for k in range(4)]

    def dump(self, path: Path) -> None:
        """Write the spec as JSON."""
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> RunSpec:
        """Read a spec written by `dump`."""
        return cls(**json.loads(path.read_text()))


@dataclass(slots=True)
class ClientResult:
    """What a client child reports."""

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    start_rss_mb: float
    jobs_ok: int
    jobs_failed: int
    extra: dict[str, Any] = field(default_factory=dict)


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
    except OSError:
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    """Peak RSS of this process image in MB: VmHWM, which (unlike ru_maxrss) is not inherited
    from the parent across fork + exec — ru_maxrss would report the harness's own size."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """Wall and CPU time from `start()`; peak RSS of the whole process lifetime."""

    def __init__(self) -> None:
        self.start_rss_mb = rss_mb()
        self._wall = time.perf_counter()
        self._cpu = _cpu()
        self._main = time.thread_time()

    def start(self) -> None:
        """Start the clocks now and tell the parent (it times account changes from here)."""
        self._wall = time.perf_counter()
        self._cpu = _cpu()
        self._main = time.thread_time()
        print("READY", flush=True)

    def result(self, ok: int, failed: int, **extra: Any) -> ClientResult:
        """The measurements so far."""
        wall = time.perf_counter() - self._wall
        cpu = _cpu() - self._cpu
        # The rest of `cpu` ran on other threads: journal writer, file and encoding workers.
        extra = {"main_thread_cpu_s": time.thread_time() - self._main, **extra}
        return ClientResult(wall, cpu, peak_rss_mb(), self.start_rss_mb, ok, failed, extra)


def child_main(run: Any) -> None:
    """Entry point of a child: ``python -m benchmarks._x SPEC.json``; `run(spec)` -> result."""
    spec = RunSpec.load(Path(sys.argv[1]))
    result: ClientResult = run(spec)
    Path(spec.result_path).write_text(json.dumps(asdict(result)))


def _chunk(tag: bytes, data: bytes) -> bytes:
    body = tag + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def make_png(path: Path, size_bytes: int, width: int = 1024, height: int = 768) -> None:
    """A PNG whose header is valid (both sides check only headers) padded to `size_bytes`."""
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    head = b"\x89PNG\r\n\x1a\n" + ihdr
    pad = max(0, size_bytes - len(head) - 12 - 12)
    # Incompressible filler, so no layer can shortcut it.
    filler = os.urandom(pad)
    path.write_bytes(head + _chunk(b"prVt", filler) + _chunk(b"IEND", b""))
