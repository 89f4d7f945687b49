"""Callbacks: Kling calls us back when a task changes, so `wait()` returns at once.

Polling is deliberately slow here (every 30 s): the callback wakes the client, which confirms
the news with a status query (a callback is only a hint, never trusted). If a callback is lost,
the slow poll still finds the result: polling stays the safety net.

    pip install -e .                    # nothing more is needed
    python examples/callbacks.py --simulate
    KLING_ACCESS_KEY=... KLING_SECRET_KEY=... python examples/callbacks.py --port 8765 \\
        --public-url https://your-tunnel.example.com/kling/callback [--secret whsec_...]

With a real account Kling must reach the receiver: expose --port through a tunnel or reverse
proxy and pass its public address. Without --public-url only polling is used.
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

IMAGES = Path(__file__).parent / "images"
SLOW_POLL = kling.PollPolicy(interval=30.0, interval_max=60.0)


@contextlib.asynccontextmanager
async def connect(simulate: bool, **options: Any) -> AsyncIterator[kling.Client]:
    """A client for your account (KLING_* variables), or for a built-in simulator."""
    if not simulate:
        async with kling.Client(**options) as client:
            yield client
        return
    from kling_async.simulator import Simulator

    async with (
        Simulator(gen_seconds=2.0) as sim,
        kling.Client(
            access_key=sim.access_key, secret_key=sim.secret_key, base_url=sim.url, **options
        ) as client,
    ):
        yield client


def show(event: kling.Event) -> None:
    """The event hook: print callbacks and the confirmed status changes they led to."""
    match event:
        case kling.CallbackReceived(claimed_status=claimed):
            print(f"  callback: task says {claimed!r}; checking with a query")
        case kling.TaskStatusChanged(status=status):
            print(f"  confirmed: {status}")


async def main(args: argparse.Namespace) -> None:
    request = kling.MultiImageToVideoRequest(
        images=[IMAGES / "forest.png", IMAGES / "sunrise.png"],
        prompt="Morning mist drifting through a pine forest",
    )
    async with (
        connect(args.simulate, poll=SLOW_POLL, event_hook=show) as client,
        kling.CallbackReceiver(
            client, port=args.port, secret=args.secret, public_url=args.public_url
        ) as receiver,
    ):
        if args.simulate or args.public_url:
            client.callback_url = receiver.url  # every submit() now asks Kling to call us
        else:
            print("no --public-url: Kling cannot reach this machine, so only polling is used")
        started = time.monotonic()
        task = await client.wait(await client.submit(request), timeout=900)
        took = time.monotonic() - started
        print(
            f"task {task.task_id} {task.task_status.value} after {took:.1f} s "
            f"({receiver.accepted} callbacks); the first poll was due after "
            f"{SLOW_POLL.interval:.0f} s"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulate", action="store_true", help="use a local simulator")
    parser.add_argument("--port", type=int, default=0, help="receiver port (0: any free one)")
    parser.add_argument("--public-url", help="the address Kling should call back")
    parser.add_argument("--secret", help="Standard Webhooks secret (whsec_...), if configured")
    asyncio.run(main(parser.parse_args()))
