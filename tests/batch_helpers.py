"""Shared helpers for the batch / journal / CLI tests (fixtures stay in the test modules)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from kling_async import (
    Batch,
    BatchResult,
    Client,
    Limits,
    MultiImageToVideoRequest,
    PollPolicy,
    RetryPolicy,
)
from kling_async._journal import JobRow, Journal
from kling_async._results import JOURNAL_NAME, MANIFEST_NAME
from kling_async.simulator import Simulator

URL_IMAGE = "https://example.com/ref.png"
#: Fast polling: sub-second generation times must be noticed quickly.
FAST_POLL = PollPolicy(interval=0.05, min_interval=0.01, interval_max=0.2)
#: Fast retries: tests never wait for production back-offs.
FAST_RETRY = RetryPolicy(
    attempts=6, wait_initial=0.01, wait_max=0.05, concurrency_wait_initial=0.05, timeout=20.0
)
#: Generated video bodies: distinct per video, several read chunks long.
VIDEO_BYTES = 40_000
SIM_DEFAULTS: dict[str, Any] = {"gen_seconds": 0.1, "video_bytes": VIDEO_BYTES}


def make_client(
    sim: Simulator, *, concurrency: int = 5, probe_interval: float | None = None, **options: Any
) -> Client:
    """A client for `sim` with fast polling and retries (options override)."""
    options.setdefault("poll", FAST_POLL)
    options.setdefault("retry", FAST_RETRY)
    options.setdefault(
        "limits", Limits(concurrency=concurrency, rps=1000.0, probe_interval=probe_interval)
    )
    return Client(access_key=sim.access_key, secret_key=sim.secret_key, base_url=sim.url, **options)


def make_requests(n: int, tag: str = "job", **fields: Any) -> list[MultiImageToVideoRequest]:
    """`n` small valid requests (URL images: nothing to encode)."""
    return [
        MultiImageToVideoRequest(images=[URL_IMAGE], prompt=f"{tag} {i}", **fields)
        for i in range(n)
    ]


def job_line(i: int, **fields: Any) -> str:
    """One valid JSONL job."""
    return json.dumps({"images": [URL_IMAGE], "prompt": f"line job {i}", **fields})


def write_jobs(path: Path, lines: Iterable[str]) -> Path:
    """Write a JSONL job file (lines as given, newline-terminated)."""
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


async def collect(batch: Batch, timeout: float = 20.0) -> list[BatchResult]:
    """Drive a batch to its end; results in arrival order."""

    async def run() -> list[BatchResult]:
        return [result async for result in batch]

    return await asyncio.wait_for(run(), timeout)


def by_line(results: Iterable[BatchResult]) -> dict[int, BatchResult]:
    """Results keyed by line; fails on two results for one line."""
    out: dict[int, BatchResult] = {}
    for result in results:
        assert result.line not in out, f"two results for line {result.line}"
        out[result.line] = result
    return out


def summary_counts(summary: str) -> dict[str, int]:
    """A run's summary line (`30 jobs: 5 downloaded, 2 not submitted (1 AccountError, 1 batch
    stopped), 23 not reached; manifest: …`) as {"downloaded": 5, "not submitted": 2, …}."""
    body = summary.split(": ", 1)[1].split("; manifest:")[0]
    body = re.sub(r" \([^)]*\)", "", body)  # the causes, which have commas of their own
    return {word: int(n) for n, _, word in (part.partition(" ") for part in body.split(", "))}


def manifest(out: Path) -> list[dict[str, Any]]:
    """results.jsonl, parsed."""
    text = (out / MANIFEST_NAME).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def journal_rows(out: Path) -> list[JobRow]:
    """Every row of the batch journal (read-only)."""
    journal = Journal(out / JOURNAL_NAME)
    try:
        return list(journal.rows())
    finally:
        journal.close_sync()


def sql(out: Path, statement: str, *params: Any) -> None:
    """Edit the journal by hand (simulating a crash at a chosen instant)."""
    db = sqlite3.connect(out / JOURNAL_NAME, isolation_level=None)
    try:
        db.execute(statement, params)
    finally:
        db.close()


def video_ids(row: JobRow) -> list[str]:
    """Video ids of a journal row's task."""
    assert row.task is not None, row
    return [v["id"] for v in (row.task.get("task_result") or {}).get("videos", [])]


def assert_no_duplicate_creates(stats: dict[str, Any]) -> None:
    """Every external_task_id was created at most once."""
    dupes = {k: n for k, n in stats["creates_by_external_id"].items() if n > 1}
    assert not dupes, f"duplicate creates: {dupes}"


def assert_videos_complete(out: Path, sha_of: Any, *, expect: int | None = None) -> int:
    """Every `downloaded` row's files exist, match the recorded size/sha and what was served.

    `sha_of(video_id)` returns the simulator's sha256; returns how many files were checked.
    No `.part` may be left anywhere under out/videos.
    """
    checked = 0
    downloaded = [r for r in journal_rows(out) if r.state == "downloaded"]
    if expect is not None:
        assert len(downloaded) == expect, [(r.line, r.state, r.error) for r in journal_rows(out)]
    for row in downloaded:
        assert row.files, row
        ids = video_ids(row)
        assert len(row.files) == len(ids)
        for record, vid in zip(row.files, ids, strict=True):
            path = out / record.path
            data = path.read_bytes()
            assert len(data) == record.bytes
            digest = hashlib.sha256(data).hexdigest()
            assert digest == record.sha256
            assert digest == sha_of(vid), f"line {row.line}: file differs from served video"
            checked += 1
    parts = list((out / "videos").glob("*.part")) if (out / "videos").exists() else []
    assert not parts, f".part files left: {parts}"
    return checked


# -- a simulator on its own thread (for in-process CLI runs, which call asyncio.run) ----------


class SimThread:
    """Runs a Simulator on a private event loop in a thread; `call` runs code on that loop."""

    def __init__(self, **config: Any) -> None:
        self.config = {**SIM_DEFAULTS, **config}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.sim: Simulator

    def __enter__(self) -> SimThread:
        self.thread.start()
        self.sim = self.run(Simulator(**self.config).start())
        return self

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the simulator's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call `fn` on the simulator's loop thread."""

        async def wrapper() -> Any:
            return fn(*args, **kwargs)

        return self.run(wrapper())

    def stats(self) -> dict[str, Any]:
        """A stats snapshot, taken on the loop thread."""
        return self.call(self.sim.stats.as_dict)  # type: ignore[no-any-return]

    def env(self) -> dict[str, str]:
        """KLING_* variables that point a CLI at this simulator."""
        return {
            "KLING_BASE_URL": self.sim.url,
            "KLING_ACCESS_KEY": self.sim.access_key,
            "KLING_SECRET_KEY": self.sim.secret_key,
        }

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.sim.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


# -- subprocesses --------------------------------------------------------------------------

CLI = [sys.executable, "-m", "kling_async"]
_BANNER = re.compile(r"API (http://\S+)\s+videos (http://\S+)")


def free_port() -> int:
    """An ephemeral port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any KLING_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class SimProcess:
    """`kling-async simulate` as a child process on free ports (always killed on exit)."""

    def __init__(self, *args: str) -> None:
        self.args = list(args)
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.video_url = ""

    def __enter__(self) -> SimProcess:
        for _ in range(5):  # a free port can be taken between our probe and the bind
            api, video = free_port(), free_port()
            cmd = [*CLI, "simulate", "--port", str(api), "--video-port", str(video), *self.args]
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env()
            )
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()  # the banner's first line, or EOF on failure
            if match := _BANNER.search(line):
                self.url, self.video_url = match[1], match[2]
                return self
            self.proc.kill()
            self.proc.communicate(timeout=5)
        raise RuntimeError("simulator subprocess did not start")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.communicate(timeout=5)

    def env(self) -> dict[str, str]:
        """A clean environment pointing a CLI child at this simulator."""
        from kling_async.simulator._config import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY

        return clean_env(
            KLING_BASE_URL=self.url,
            KLING_ACCESS_KEY=DEFAULT_ACCESS_KEY,
            KLING_SECRET_KEY=DEFAULT_SECRET_KEY,
        )

    def get(self, path: str) -> dict[str, Any]:
        """GET a /__sim route (control routes need no auth)."""
        import urllib.request

        with urllib.request.urlopen(self.url + path, timeout=5) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def control(self, **settings: Any) -> dict[str, Any]:
        """POST /__sim/control."""
        import urllib.request

        req = urllib.request.Request(
            self.url + "/__sim/control",
            data=json.dumps(settings).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]


def journal_count(out: Path, where: str = "1") -> int:
    """Rows of a run's journal matching `where`, read-only (0 while it does not exist yet)."""
    try:
        db = sqlite3.connect(f"file:{out / 'journal.sqlite3'}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return 0
    try:
        return int(db.execute(f"SELECT COUNT(*) FROM jobs WHERE {where}").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        db.close()


def run_cli(args: Sequence[str], env: dict[str, str], timeout: float = 30.0) -> Any:
    """Run `kling-async ARGS` to completion (killed after `timeout`)."""
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def interrupt_when(
    cmd: Sequence[str], env: dict[str, str], ready: Callable[[], bool], timeout: float = 15.0
) -> tuple[int, str]:
    """Start `cmd`, send it SIGINT (Ctrl-C) once `ready()`; its (exit code, stderr).

    The process must still be running when it gets the signal (else AssertionError)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for(lambda: ready() or proc.poll() is not None, timeout=timeout)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll `predicate()` until true (AssertionError after `timeout`)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


@contextlib.asynccontextmanager
async def simulators(
    on_stop: Callable[[Simulator], None] | None = None,
) -> AsyncIterator[Callable[..., Awaitable[Simulator]]]:
    """`start(**config)` starts a simulator with the test defaults; all stop on exit."""
    sims: list[Simulator] = []

    async def start(**config: Any) -> Simulator:
        sim = await Simulator(**{**SIM_DEFAULTS, **config}).start()
        sims.append(sim)
        return sim

    try:
        yield start
    finally:
        for sim in sims:
            if on_stop is not None:
                on_stop(sim)
            await sim.stop()
