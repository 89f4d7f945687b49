"""What asking for fresh video links costs when a folder is downloaded hours after its run.

    python benchmarks/requery.py [--jobs 2000] [--newer 0]

A batch of JOBS runs against the in-process simulator (links valid one hour) with every video
request refused, so its tasks end finished but not on disk; `--newer N` tasks are created
after it (an account busy since: the list pages must go past them). Three hours later the
folder is downloaded (`run_batch(client, None, out)`, what `kling-async download` does). It
prints the requests of that download: list pages and single queries that asked for fresh links
(one query per job would be JOBS), video requests (JOBS when no dead link is tried), and time.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kling_async import (
    Client,
    Limits,
    MultiImageToVideoRequest,
    PollPolicy,
    RetryPolicy,
    run_batch,
)
from kling_async.simulator import FaultConfig, Simulator

IMAGE = "https://example.com/a.jpg"
HOUR = 3600.0


def requests(n: int, tag: str) -> list[MultiImageToVideoRequest]:
    return [MultiImageToVideoRequest(images=[IMAGE], prompt=f"{tag} {i}") for i in range(n)]


def client(sim: Simulator, **options: object) -> Client:
    poll = PollPolicy(interval=0.05, min_interval=0.01, interval_max=0.2)
    limits = Limits(concurrency=1000, download_concurrency=16)
    return Client(
        access_key=sim.access_key,
        secret_key=sim.secret_key,
        base_url=sim.url,
        poll=poll,
        limits=limits,
        **options,  # type: ignore[arg-type]
    )


async def main(jobs: int, newer: int) -> None:
    faults = FaultConfig(rates={"video": {"404": 1.0}})
    out = Path(tempfile.mkdtemp(prefix="requery-"))
    config = {"concurrency": 1000, "gen_seconds": 0.05, "url_ttl": HOUR, "video_bytes": 4096}
    async with Simulator(**config, faults=faults) as sim:  # type: ignore[arg-type]
        async with client(sim, retry=RetryPolicy(attempts=1, wait_initial=0.01)) as first:
            async for _ in run_batch(first, requests(jobs, "job"), out):
                pass
            for request in requests(newer, "other"):  # the account's later tasks
                await first.submit(request)
        sim.faults.clear()
        sim.advance(3 * HOUR)
        sim.reset_stats()
        started = time.perf_counter()
        async with client(sim) as later:
            done = sum([r.ok async for r in run_batch(later, None, out)])
        took = time.perf_counter() - started
        asked = dict(sim.stats.requests)
    print(f"{jobs} jobs finished, not on disk; {newer} newer tasks on the account; 3 h later:")
    print(f"  downloaded {done}/{jobs} in {took:.2f} s")
    print(
        f"  fresh links: {asked.get('list', 0)} list pages + {asked.get('query', 0)} single "
        f"queries (one query per job: {jobs})"
    )
    print(f"  video requests: {asked.get('video', 0)} (one per job: {jobs})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--newer", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.newer))
