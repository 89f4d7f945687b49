"""Child process: the same jobs the way users write them today (plain aiohttp + pyjwt).

Modelled on public Kling "skills" and client libraries: `asyncio.gather` over one coroutine per
job; each takes an `asyncio.Semaphore(N)` (N = the cap the user configured), creates its task
(retrying 1303 / 1302 / 5xx with jittered exponential back-off), polls its own task every 5 s
(scaled like T: 5 s × T / 120 s; a refused poll, e.g. 1302, is tried again at the next tick),
releases the semaphore when the task ends, and downloads the video with ``await resp.read()``.
Written plainly but fairly: the JWT is re-signed only when close to expiry, one session is
shared, image files are read and base64-encoded just before their own create (inside the
semaphore), not all up front.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt

from ._common import ClientResult, Meter, RunSpec, child_main

__all__ = ["run"]

PATH = "/v1/videos/multi-image2video"
POLL_SECONDS = 5.0  # at real scale
BACKOFF_SECONDS = 1.0  # first back-off at real scale; doubles up to BACKOFF_CAP
BACKOFF_CAP = 30.0


class Auth:
    """The official snippet's JWT (HS256, 30 min), re-signed 5 minutes before it expires."""

    def __init__(self, access_key: str, secret_key: str) -> None:
        self.ak, self.sk = access_key, secret_key
        self.token, self.exp = "", 0.0

    def headers(self) -> dict[str, str]:
        now = time.time()
        if now > self.exp - 300:
            claims = {"iss": self.ak, "exp": int(now) + 1800, "nbf": int(now) - 5}
            self.token = jwt.encode(claims, self.sk, headers={"alg": "HS256", "typ": "JWT"})
            self.exp = now + 1800
        return {"Authorization": f"Bearer {self.token}"}


class Baseline:
    def __init__(self, spec: RunSpec, session: aiohttp.ClientSession) -> None:
        self.spec = spec
        self.session = session
        self.auth = Auth(spec.access_key, spec.secret_key)
        self.sem = asyncio.Semaphore(spec.concurrency)
        self.poll = POLL_SECONDS * spec.scale
        self.out = Path(spec.out_dir)
        self.retries = 0

    def body(self, index: int) -> dict[str, Any]:
        images = []
        for image in self.spec.images_for(index):
            if image.startswith("https://"):
                images.append({"image": image})
            else:
                with open(image, "rb") as fh:
                    images.append({"image": base64.b64encode(fh.read()).decode()})
        return {
            "model_name": "kling-v1-6",
            "image_list": images,
            "prompt": f"benchmark job {index}: a calm sea at dawn",
            "mode": "std",
            "duration": "5",
            "aspect_ratio": "16:9",
        }

    async def create(self, body: dict[str, Any]) -> str:
        attempt = 0
        while True:
            url = self.spec.api_url + PATH
            async with self.session.post(url, json=body, headers=self.auth.headers()) as resp:
                data = await resp.json()
                status = resp.status
            if data.get("code") == 0:
                return str(data["data"]["task_id"])
            if data.get("code") in (1302, 1303) or status >= 500:
                wait = min(BACKOFF_CAP, BACKOFF_SECONDS * 2**attempt) * random.uniform(0.5, 1.5)
                attempt += 1
                self.retries += 1
                await asyncio.sleep(wait * self.spec.scale)
                continue
            raise RuntimeError(f"create failed: {data}")

    async def wait(self, task_id: str) -> dict[str, Any]:
        url = f"{self.spec.api_url}{PATH}/{task_id}"
        while True:
            await asyncio.sleep(self.poll)
            async with self.session.get(url, headers=self.auth.headers()) as resp:
                data = await resp.json()
            if data.get("code") != 0:
                continue  # throttled (1302) or a server error: ask again at the next tick
            task: dict[str, Any] = data["data"]
            if task["task_status"] in ("succeed", "failed"):
                return task

    async def job(self, index: int) -> bool:
        async with self.sem:
            task_id = await self.create(self.body(index))
            task = await self.wait(task_id)
        if task["task_status"] != "succeed":
            return False
        for number, video in enumerate(task["task_result"]["videos"]):
            async with self.session.get(video["url"]) as resp:
                resp.raise_for_status()
                content = await resp.read()
            (self.out / f"job-{index}-{number}.mp4").write_bytes(content)
        return True


async def _main(spec: RunSpec) -> ClientResult:
    meter = Meter()
    async with aiohttp.ClientSession() as session:
        baseline = Baseline(spec, session)
        meter.start()
        done = await asyncio.gather(*(baseline.job(i) for i in range(spec.jobs)))
        ok = sum(done)
        return meter.result(ok, spec.jobs - ok, create_retries=baseline.retries)


def run(spec: RunSpec) -> ClientResult:
    """Run the jobs and measure them."""
    Path(spec.out_dir).mkdir(parents=True, exist_ok=True)
    return asyncio.run(_main(spec))


if __name__ == "__main__":
    child_main(run)
