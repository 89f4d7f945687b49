"""A throwaway redis-server for the coordinator tests: 127.0.0.1, a free port, no persistence.

CI installs the Debian package (`.ci/run`); without the binary these tests fail under CI=true
and are skipped only on a developer's machine that lacks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server")


def require_redis_server() -> str:
    """The redis-server binary, or fail (CI) / skip (a machine without it)."""
    if REDIS_SERVER:
        return REDIS_SERVER
    if os.environ.get("CI"):
        pytest.fail("redis-server is not installed: .ci/run must install it")
    pytest.skip("redis-server is not installed (apt-get install -y redis-server)")


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (redis-server cannot take port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process; `stop()` and `start()` again keep its port (a restart)."""

    def __init__(self, workdir: Path) -> None:
        self.binary = require_redis_server()
        self.workdir = workdir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis://127.0.0.1:PORT/0"""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start on the same port as before, or on a free one the first time."""
        for _ in range(5):
            port = self.port or free_port()
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.workdir),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._ready(port):
                self.port = port
                return
            self.stop()
            if self.port:  # a restart on our own port: it must come back there
                time.sleep(0.2)
        raise RuntimeError("redis-server did not start")

    def _ready(self, port: int) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False  # exited: the port was taken
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        """Kill the server (its data is gone: persistence is off)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


async def until(check: Callable[[], object], timeout: float = 10.0) -> bool:
    """Poll `check()` (plain or async) until it is true; False if `timeout` passed first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return True
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)


WORKER = Path(__file__).with_name("shared_worker.py")


class Worker:
    """A `shared_worker.py` process; `expect()` waits for its next line, `kill()` is -9."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def expect(self, prefix: str, timeout: float = 30.0) -> str:
        """The worker's next line, which must start with `prefix`."""
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        line = raw.decode().strip()
        if not line.startswith(prefix):
            assert self.proc.stderr is not None
            err = (await self.proc.stderr.read()).decode()[-2000:] if not line else ""
            raise AssertionError(f"worker said {line!r}, expected {prefix!r}\n{err}")
        return line

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs."""
        if self.proc.returncode is None:
            self.proc.kill()

    async def wait(self, timeout: float = 60.0) -> int:
        """Its exit code."""
        return await asyncio.wait_for(self.proc.wait(), timeout)


Start = Callable[..., Awaitable[Worker]]


@contextlib.asynccontextmanager
async def workers(url: str, account: str = "acct-a") -> AsyncIterator[Start]:
    """`await start(mode, **options)` runs a worker on this Redis and account; every one still
    running is killed on the way out."""
    started: list[Worker] = []

    async def start(mode: str, **options: object) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            url,
            account,
            mode,
            json.dumps(options),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        started.append(Worker(proc))
        return started[-1]

    try:
        yield start
    finally:
        for worker in started:
            worker.kill()
        for worker in started:
            await worker.wait()
