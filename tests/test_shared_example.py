"""examples/fastapi_workers.py under `uvicorn --workers 4`, four processes on one account."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from batch_helpers import SimProcess, wait_for
from redis_helpers import free_port

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CAP = 2


def workers_seen(url: str, seen: set[int]) -> int:
    """Ask which worker answers (a new connection each time); how many distinct ones so far."""
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/", timeout=1) as resp:
            seen.add(json.loads(resp.read())["worker"])
    except OSError:
        pass
    return len(seen)


async def create_all(url: str, n: int) -> list[dict[str, Any]]:
    # A connection per request, so that uvicorn hands them to different workers.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:

        async def one(i: int) -> dict[str, Any]:
            body = {"images": ["https://cdn.example.com/a.png"], "prompt": f"job {i}"}
            async with http.post(f"{url}/videos", json=body) as resp:
                assert resp.status == 202, await resp.text()
                return dict(await resp.json())

        # Which worker accepts a connection is the kernel's choice: post in rounds until at
        # least two of them have created tasks (almost always the first round does).
        created: list[dict[str, Any]] = []
        while len(created) < n or len({c["worker"] for c in created}) < 2:
            assert len(created) < 5 * n, "every POST went to one worker"
            created += await asyncio.gather(*(one(len(created) + i) for i in range(n)))

        async def finished(task_id: str) -> None:
            while True:
                async with http.get(f"{url}/videos/{task_id}") as resp:
                    if (await resp.json())["status"] == "succeed":
                        return
                await asyncio.sleep(0.1)

        await asyncio.wait_for(asyncio.gather(*(finished(c["task_id"]) for c in created)), 60)
        return created


def test_four_uvicorn_workers_share_one_account(redis_server: Any) -> None:
    n = 12
    with SimProcess("--concurrency", str(CAP), "--gen-seconds", "0.4") as sim:
        port = free_port()
        env = {
            **sim.env(),
            "KLING_COORDINATOR": f"{redis_server.url}?ttl=2",
            "KLING_CONCURRENCY": str(CAP),  # each worker is told the account's whole cap
        }
        cmd = [sys.executable, "-m", "uvicorn", "fastapi_workers:app", "--app-dir", str(EXAMPLES)]
        cmd += ["--workers", "4", "--host", "127.0.0.1", "--port", str(port)]
        server = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        url = f"http://127.0.0.1:{port}"
        try:
            seen: set[int] = set()
            wait_for(lambda: workers_seen(url, seen) >= 2 or server.poll() is not None, 60)
            assert server.poll() is None, server.communicate()[1][-3000:]
            created = asyncio.run(create_all(url, n))
        finally:
            server.send_signal(signal.SIGINT)  # Ctrl-C: uvicorn stops its workers gracefully
            try:
                _, err = server.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                _, err = server.communicate()
        stats = sim.get("/__sim/stats")["stats"]
    assert len({c["worker"] for c in created}) >= 2  # several processes created tasks
    assert stats["accepted_creates"] == len(created)
    assert stats["peak_running"] <= CAP
    assert stats["rejected_concurrency"] <= 1  # 4 workers × CAP each would be refused often
    assert "Traceback" not in err, err[-3000:]
