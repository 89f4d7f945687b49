"""The simulated account: a ``python -m kling_async.simulator`` process on 127.0.0.1.

Ports are ephemeral (read back from its banner). The harness talks to it only over HTTP:
``/__sim/stats`` for counters, ``/__sim/control`` for account changes, and the documented list
endpoint (with the simulator's plain API key) to read every task's real generation time.
Harness requests are made after the counters are read: they never count against a client.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from kling_async.simulator._config import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_API_KEY,
    DEFAULT_SECRET_KEY,
)

from ._common import ROOT

__all__ = ["ACCESS_KEY", "API_PATH", "SECRET_KEY", "SimProcess"]

ACCESS_KEY = DEFAULT_ACCESS_KEY
SECRET_KEY = DEFAULT_SECRET_KEY
API_PATH = "/v1/videos/multi-image2video"


class SimProcess:
    """Start with `with SimProcess(...) as sim:`; a fresh account (and task sequence) each time.

    With the same seed, the k-th accepted create gets the same generation time in every fresh
    simulator, so two clients run against identical work.
    """

    def __init__(
        self,
        *,
        concurrency: int,
        gen_seconds: float,
        gen_spread: float = 0.2,
        video_bytes: int | None = None,
        seed: int = 7,
        log_path: Path | None = None,
        callbacks: bool = False,
        rate_limit: float | None = None,
    ) -> None:
        self.args = [
            sys.executable,
            "-m",
            "kling_async.simulator",
            "--port",
            "0",
            "--video-port",
            "0",
            "--concurrency",
            str(concurrency),
            "--gen-seconds",
            str(gen_seconds),
            "--gen-spread",
            str(gen_spread),
            "--seed",
            str(seed),
        ]
        if not callbacks:
            self.args.append("--no-callbacks")
        if video_bytes is not None:
            self.args += ["--video-bytes", str(video_bytes)]
        if rate_limit is not None:
            self.args += ["--rate-limit", str(rate_limit)]
        self.log_path = log_path
        self.url = ""
        self.video_url = ""
        self._proc: subprocess.Popen[str] | None = None
        self._log: Any = None

    def __enter__(self) -> SimProcess:
        self._log = open(self.log_path or "/dev/null", "a")  # closed in __exit__
        self._proc = subprocess.Popen(
            self.args, cwd=ROOT, stdout=subprocess.PIPE, stderr=self._log, text=True
        )
        assert self._proc.stdout is not None
        first = self._proc.stdout.readline()  # "# Kling simulator: API <url>  videos <url>"
        words = first.split()
        if "API" not in words or "videos" not in words:
            self.__exit__(None, None, None)
            raise RuntimeError(f"simulator did not start: {first!r}")
        self.url = words[words.index("API") + 1]
        self.video_url = words[words.index("videos") + 1]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()  # SIGTERM to our own child, by its pid
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def peak_rss_mb(self) -> float | None:
        """The simulator process's peak RSS so far (VmHWM), in MB; None if unreadable."""
        if self._proc is None:
            return None
        try:
            with open(f"/proc/{self._proc.pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024 / 1e6
        except OSError:
            pass
        return None

    # -- HTTP helpers -------------------------------------------------------------------------
    def _request(self, path: str, body: Any = None, *, auth: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {DEFAULT_API_KEY}")
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        """The simulator's counters (requests by route, 1303 answers, peak running...)."""
        result: dict[str, Any] = self._request("/__sim/stats")["stats"]
        return result

    def lift_rate_limit(self) -> None:
        """No request-rate limit from now on (the harness's own reads are never refused)."""
        self.control(rate_limit=None)

    def control(self, **settings: Any) -> None:
        """Change the account at run time (concurrency, held_slots, ...)."""
        self._request("/__sim/control", settings)

    def reset(self) -> None:
        """Zero the counters (tasks stay)."""
        self._request("/__sim/reset", {})

    def tasks(self) -> list[dict[str, Any]]:
        """Every task of the account via the list endpoint (newest first)."""
        self.lift_rate_limit()
        out: list[dict[str, Any]] = []
        for page in range(1, 1001):
            answer = self._request(f"{API_PATH}?pageNum={page}&pageSize=500", auth=True)
            items = answer["data"]
            out.extend(items)
            if len(items) < 500:
                break
        return out

    def task_spans(self) -> list[tuple[float, float]]:
        """(created, ended) Unix seconds of each finished task, in creation order."""
        done = [t for t in self.tasks() if t["task_status"] in ("succeed", "failed")]
        done.sort(key=lambda t: (t["created_at"], int(t["task_id"])))
        return [(t["created_at"] / 1000.0, t["updated_at"] / 1000.0) for t in done]

    def generation_times(self) -> list[float]:
        """Seconds from creation to the terminal state of each finished task, oldest first."""
        return [end - start for start, end in self.task_spans()]

    def create_ready_task(self) -> dict[str, Any]:
        """Create one task as a harness (URL images), wait until it succeeds; return it."""
        body = {
            "image_list": [{"image": "https://images.example.com/a.png"}],
            "prompt": "download benchmark",
        }
        req = urllib.request.Request(
            self.url + API_PATH,
            data=json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {DEFAULT_API_KEY}",
            },
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            task_id = json.loads(resp.read())["data"]["task_id"]
        for _ in range(600):
            task: dict[str, Any] = self._request(f"{API_PATH}/{task_id}", auth=True)["data"]
            if task["task_status"] == "succeed":
                return task
            time.sleep(0.05)
        raise RuntimeError("simulator task did not finish")
