"""Batch: a few hundred jobs through `run_batch`, with a progress line fed by the event hook.

    pip install -e .                                        # nothing more is needed
    python examples/batch.py --simulate                     # 300 jobs on a fast local simulator
    KLING_ACCESS_KEY=... KLING_SECRET_KEY=... python examples/batch.py --jobs 10 --concurrency 5

Run it again with the same --out and it resumes: nothing is created or downloaded twice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kling_async as kling

IMAGES = sorted((Path(__file__).parent / "images").glob("*.png"))


@contextlib.asynccontextmanager
async def connect(simulate: bool, concurrency: int, **options: Any) -> AsyncIterator[kling.Client]:
    """A client for your account (KLING_* variables), or for a fast built-in simulator."""
    limits = kling.Limits(concurrency=concurrency)  # default: 10 API requests per second
    if not simulate:
        async with kling.Client(limits=limits, **options) as client:
            yield client
        return
    from kling_async.simulator import Simulator

    limits = kling.Limits(concurrency=concurrency, rps=200)  # our own server: no need to pace
    fast = kling.PollPolicy(interval=0.1, min_interval=0.02)  # simulated tasks take 0.2 s
    async with (
        Simulator(concurrency=concurrency, gen_seconds=0.2) as sim,
        kling.Client(
            access_key=sim.access_key,
            secret_key=sim.secret_key,
            base_url=sim.url,
            limits=limits,
            poll=fast,
            **options,
        ) as client,
    ):
        yield client


class Progress:
    """The event hook: counts what the client reports, prints a line at most twice a second."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.submitted = self.finished = self.saved = self.retries = 0
        self.shown = 0.0

    def __call__(self, event: kling.Event) -> None:
        if event.kind == "task_submitted":
            self.submitted += 1
        elif event.kind == "task_finished":
            self.finished += 1
        elif event.kind in ("request_retry", "concurrency_backoff"):
            self.retries += 1
        self.show()

    def show(self, force: bool = False) -> None:
        if force or time.monotonic() - self.shown >= 0.5:
            self.shown = time.monotonic()
            print(
                f"{self.submitted}/{self.total} submitted, {self.finished} finished, "
                f"{self.saved} saved, {self.retries} retries",
                flush=True,
            )


async def main(simulate: bool, jobs: int, concurrency: int, out: Path) -> int:
    requests = [
        kling.MultiImageToVideoRequest(
            images=[IMAGES[i % len(IMAGES)], IMAGES[(i + 1) % len(IMAGES)]],
            prompt=f"Shot {i}: a slow dolly across the scene at golden hour",
        )
        for i in range(jobs)
    ]
    progress = Progress(jobs)
    failed = 0
    async with connect(simulate, concurrency, event_hook=progress) as client:
        async for result in kling.run_batch(client, requests, out):
            if result.ok:
                progress.saved += 1
            else:
                failed += 1
                print(f"job {result.line}: {result.state}: {result.error}")
    progress.show(force=True)
    print(f"done: {progress.saved} videos in {out / 'videos'}, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulate", action="store_true", help="use a local simulator")
    parser.add_argument("--jobs", type=int, default=300, help="how many videos")
    parser.add_argument("--concurrency", type=int, default=20, help="the account's task slots")
    parser.add_argument("--out", type=Path, default=Path("batch-out"), help="output folder")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.simulate, args.jobs, args.concurrency, args.out)))
