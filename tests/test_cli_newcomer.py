"""The command line as a newcomer first meets it, each point run as the user runs it (a process)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from batch_helpers import clean_env, job_line, run_cli, write_jobs

import kling_async as kling

pytestmark = pytest.mark.slow


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_missing_credentials_point_at_simulate(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job_line(0)])
    for env in (clean_env(), clean_env(KLING_ACCESS_KEY="AK-only")):
        done = run_cli(["run", str(jobs), "--out", str(tmp_path / "out")], env, timeout=30)
        assert done.returncode == 2, done.stderr
        assert "KLING_" in done.stderr and "add --simulate" in done.stderr
        assert "Traceback" not in done.stderr
    # The library's own error stays about the library: no command-line flag in it.
    with pytest.raises(kling.ConfigurationError) as info:
        kling.Client(environ={})
    assert "KLING_ACCESS_KEY" in str(info.value) and "--simulate" not in str(info.value)


@pytest.mark.parametrize("flag", ["--port", "--video-port"])
def test_simulate_on_a_busy_port_names_it_and_suggests_port_0(flag: str, busy_port: int) -> None:
    ports = {"--port": "0", "--video-port": "0", flag: str(busy_port)}
    args = ["simulate", *(x for pair in ports.items() for x in pair)]
    done = run_cli(args, clean_env(), timeout=30)
    assert done.returncode == 2, done.stderr
    assert f"port {busy_port} on 127.0.0.1 is already in use" in done.stderr
    assert f"{flag} 0" in done.stderr and "Traceback" not in done.stderr
