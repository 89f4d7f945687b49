"""A worker process for the coordinator tests: `python shared_worker.py URL ACCOUNT MODE JSON`.

It uses the Redis primitives as a real process would and reports on stdout, one line per step
(`held`, `leader`, `done …`), so a test can wait for a step and then kill it with -9.

Modes (options in the JSON object):
- churn: `tasks` coroutines each do `rounds` × (acquire, accepted, hold `hold` s, release),
  counting holders in Redis (`test:holding`, peak in `test:peak`); prints `done`.
- hold: take `count` slots (accepted), print `held`, then keep them (renewing) until killed.
- wait: join the queue for one slot, print `waiting`, stay until killed.
- reject: take `count` slots (accepted), then one more that Kling "refuses" (1303); prints
  `rejected HELD` and keeps its slots until killed.
- lead: campaign for leadership, print `leader` once elected, stay until killed.
- rate: take `tokens` tokens, appending Redis' TIME (ms) of each to `test:takes`; prints `done`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from kling_async._shared_link import RedisLink
from kling_async._shared_rate import SharedRate
from kling_async._shared_slots import SharedSlots
from kling_async._shared_status import LeaderLease

_COUNT = """
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if v > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], v) end
return v
"""


def say(line: str) -> None:
    print(line, flush=True)


async def forever() -> None:
    await asyncio.Event().wait()


def slots(link: RedisLink, opts: dict[str, Any]) -> SharedSlots:
    gate = SharedSlots(
        link,
        opts.get("maximum", 3),
        ttl=opts.get("ttl", 1.0),
        probe_interval=opts.get("probe_interval", 30.0),
        slow_start=opts.get("slow_start", False),
    )
    gate.start()
    return gate


async def churn(link: RedisLink, opts: dict[str, Any]) -> None:
    gate = slots(link, opts)
    count = link.script(_COUNT)

    async def one() -> None:
        for _ in range(opts["rounds"]):
            lease = await gate.acquire()
            await gate.accepted(lease)
            await count(keys=["test:holding", "test:peak"], args=[1])
            await asyncio.sleep(opts.get("hold", 0.01))
            await count(keys=["test:holding", "test:peak"], args=[-1])
            gate.release(lease)

    await asyncio.gather(*(one() for _ in range(opts["tasks"])))
    await link.client.incrby("test:done", opts["tasks"] * opts["rounds"])
    await gate.aclose()
    say("done")


async def hold(link: RedisLink, opts: dict[str, Any]) -> None:
    gate = slots(link, opts)
    for _ in range(opts.get("count", 1)):
        await gate.accepted(await gate.acquire())
    say("held")
    await forever()


async def wait(link: RedisLink, opts: dict[str, Any]) -> None:
    gate = slots(link, opts)
    taking = asyncio.ensure_future(gate.acquire())
    for _ in range(3000):  # until our queue entry is in Redis
        if await link.client.zcard(link.key("slots:queue")):
            break
        await asyncio.sleep(0.01)
    say("waiting")
    await taking
    say("granted")
    await forever()


async def reject(link: RedisLink, opts: dict[str, Any]) -> None:
    gate = slots(link, opts)
    for _ in range(opts.get("count", 1)):
        await gate.accepted(await gate.acquire())
    held = await gate.rejected(await gate.acquire())
    say(f"rejected {held}")
    await forever()


async def lead(link: RedisLink, opts: dict[str, Any]) -> None:
    elected = asyncio.Event()
    leader = LeaderLease(link, ttl=opts.get("ttl", 1.0), on_change=lambda on: on and elected.set())
    leader.start()
    await elected.wait()
    say("leader")
    await forever()


async def rate(link: RedisLink, opts: dict[str, Any]) -> None:
    bucket = SharedRate(link, opts["rate"], burst=opts.get("burst", 1.0))
    for _ in range(opts["tokens"]):
        await bucket.acquire()
        sec, usec = await link.client.time()
        await link.client.rpush("test:takes", sec * 1000 + usec // 1000)
    say("done")


MODES = {"churn": churn, "hold": hold, "wait": wait, "reject": reject, "lead": lead, "rate": rate}


async def main(url: str, account: str, mode: str, options: str) -> None:
    opts = json.loads(options)
    link = await RedisLink.connect(url, account, reconnect_max=opts.get("reconnect_max", 1.0))
    await MODES[mode](link, opts)
    await link.aclose()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
