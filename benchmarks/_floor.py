"""Child process: the CPU floor — bare aiohttp doing the requests kling-async does, nothing else.

Not a client anyone should use: no retries beyond 1303, no journal, no identity, no checks. It
sends what kling-async sends for a batch (one create per job, list-page sweeps sized by what is
pending, one GET per video) at the same cap, and saves each video the way kling-async must
(written, fsynced, renamed, directory fsynced, in one worker-thread job). Its CPU per job is
what any aiohttp-based client pays for the same work; ours cannot go below it.

The sweep interval is T / 20 (12.5 ms at T = 0.25 s): about as many list pages per job as
kling-async's own sweeps ask for at that T (`FLOOR_SWEEP_S` overrides it). `FLOOR_SAVE=0`
drops the saving: HTTP alone.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import aiohttp

from ._baseline import PATH, Auth
from ._common import ClientResult, Meter, RunSpec, child_main

__all__ = ["run"]


def _save(path: Path, body: bytes) -> None:
    """What a durable save costs at least: write, fsync, rename, fsync the directory."""
    part = path.with_name(path.name + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(part, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class Floor:
    def __init__(self, spec: RunSpec, session: aiohttp.ClientSession) -> None:
        self.spec = spec
        self.session = session
        self.auth = Auth(spec.access_key, spec.secret_key)
        self.url = spec.api_url + PATH
        self.waiting: dict[str, asyncio.Future[str]] = {}
        self.next = 0
        self.lists = 0
        self.out = Path(spec.out_dir)
        self.save = os.environ.get("FLOOR_SAVE", "1") == "1"  # 0: HTTP alone

    async def worker(self) -> int:
        done = 0
        while self.next < self.spec.jobs:
            index, self.next = self.next, self.next + 1
            body = {
                "model_name": "kling-v1-6",
                "image_list": [{"image": url} for url in self.spec.images_for(index)],
                "prompt": f"benchmark job {index}: a calm sea at dawn",
                "external_task_id": f"floor-{index}",
            }
            while True:
                async with self.session.post(self.url, json=body, headers=self.auth.headers()) as r:
                    data = await r.json()
                if data["code"] == 0:
                    break
                await asyncio.sleep(0.01)  # 1303: a slot frees soon
            task_id = data["data"]["task_id"]
            future = self.waiting[task_id] = asyncio.get_running_loop().create_future()
            video = await future
            async with self.session.get(video) as r:
                content = await r.read()
            if self.save:
                await asyncio.to_thread(_save, self.out / f"{index}.mp4", content)
            done += 1
        return done

    async def poller(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if not self.waiting:
                continue
            size = min(500, 2 * len(self.waiting) + 10)
            params = {"pageNum": 1, "pageSize": size}
            async with self.session.get(self.url, params=params, headers=self.auth.headers()) as r:
                data: Any = await r.json()
            self.lists += 1
            for task in data["data"]:
                future = self.waiting.get(task["task_id"])
                if future is not None and task["task_status"] == "succeed":
                    del self.waiting[task["task_id"]]
                    future.set_result(task["task_result"]["videos"][0]["url"])


async def _main(spec: RunSpec) -> ClientResult:
    meter = Meter()
    interval = float(os.environ.get("FLOOR_SWEEP_S", spec.gen_seconds / 20))
    async with aiohttp.ClientSession() as session:
        floor = Floor(spec, session)
        meter.start()
        poller = asyncio.create_task(floor.poller(interval))
        done = await asyncio.gather(*(floor.worker() for _ in range(spec.concurrency)))
        poller.cancel()
        ok = sum(done)
        return meter.result(ok, spec.jobs - ok, list_calls=floor.lists, sweeps=floor.lists)


def run(spec: RunSpec) -> ClientResult:
    """Run the jobs and measure them."""
    Path(spec.out_dir).mkdir(parents=True, exist_ok=True)
    return asyncio.run(_main(spec))


if __name__ == "__main__":
    child_main(run)
