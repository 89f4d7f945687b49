"""What the Redis coordinator's shared slots cost, and how evenly they are shared.

    python benchmarks/coordinator.py [--cycles 2000] [--procs 3] [--seconds 5]

Starts a throwaway redis-server (the test suite's: 127.0.0.1, persistence off; needs the binary
and `pip install -e ".[redis]"`), then prints:
- one process: acquire + accepted + release of one slot, per cycle (µs) — the overhead a create
  pays on top of Kling's own answer;
- PROCS processes, 8 coroutines each, on one account of 4 slots, each slot held 5 ms: grants
  per second, the most slots ever held at once (must be ≤ 4) and each process's share.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `kling_async` importable from the tree
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kling_async._shared_link import RedisLink
from kling_async._shared_slots import SharedSlots

SLOTS = 4


async def one_process(url: str, cycles: int) -> float:
    link = await RedisLink.connect(url, "bench-one")
    gate = SharedSlots(link, SLOTS, slow_start=False)
    gate.start()
    start = time.perf_counter()
    for _ in range(cycles):
        lease = await gate.acquire()
        await gate.accepted(lease)
        gate.release(lease)
    for _ in range(10_000):  # until every release is written
        if not (await gate.snapshot())["in_use"]:
            break
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - start
    await gate.aclose()
    await link.aclose()
    return elapsed / cycles * 1e6


async def worker(url: str, seconds: float) -> None:
    link = await RedisLink.connect(url, "bench-many")
    gate = SharedSlots(link, SLOTS, slow_start=False)
    gate.start()
    counter = link.key("bench:held")
    deadline = time.monotonic() + seconds
    grants = 0

    async def churn() -> None:
        nonlocal grants
        while time.monotonic() < deadline:
            lease = await gate.acquire()
            grants += 1
            held = await link.client.incr(counter)
            await link.client.eval(
                "if tonumber(redis.call('GET', KEYS[1]) or 0) < tonumber(ARGV[1]) then "
                "redis.call('SET', KEYS[1], ARGV[1]) end",
                1,
                counter + ":peak",
                held,
            )
            await asyncio.sleep(0.005)
            await link.client.decr(counter)
            gate.release(lease)

    await asyncio.gather(*(churn() for _ in range(8)))
    print(grants, flush=True)
    await gate.aclose()
    await link.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=2000)
    parser.add_argument("--procs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker(args.worker, args.seconds))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from redis_helpers import REDIS_SERVER, RedisServer  # the test suite's throwaway server

    if REDIS_SERVER is None:
        sys.exit("redis-server is not installed (apt-get install -y redis-server)")
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        url = server.url
        try:
            per_cycle = asyncio.run(one_process(url, args.cycles))
            print(f"one process: {per_cycle:,.0f} µs per acquire + accepted + release")
            me = [sys.executable, __file__, "--worker", url, "--seconds", str(args.seconds)]
            procs = [
                subprocess.Popen(me, stdout=subprocess.PIPE, text=True) for _ in range(args.procs)
            ]
            shares = [int(p.communicate()[0]) for p in procs]
            peak = asyncio.run(read_peak(url))
            total = sum(shares)
            print(
                f"{args.procs} processes × 8 coroutines, {SLOTS} slots held 5 ms each: "
                f"{total / args.seconds:,.0f} grants/s, peak {peak} of {SLOTS} slots held, "
                f"shares {', '.join(f'{s / total:.0%}' for s in shares)}"
            )
        finally:
            server.stop()


async def read_peak(url: str) -> int:
    link = await RedisLink.connect(url, "bench-many")
    try:
        return int(await link.client.get(link.key("bench:held") + ":peak") or 0)
    finally:
        await link.aclose()


if __name__ == "__main__":
    main()
