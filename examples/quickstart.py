"""Quickstart: two local images and a prompt become one video on disk.

Run it against a local simulator, or against your account:

    pip install -e .                    # nothing more is needed
    python examples/quickstart.py --simulate
    KLING_ACCESS_KEY=... KLING_SECRET_KEY=... python examples/quickstart.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import kling_async as kling

IMAGES = Path(__file__).parent / "images"


@contextlib.asynccontextmanager
async def connect(simulate: bool) -> AsyncIterator[kling.Client]:
    """A client for your account (KLING_* variables), or for a built-in simulator."""
    if not simulate:
        async with kling.Client() as client:
            yield client
        return
    from kling_async.simulator import Simulator

    async with (
        Simulator(gen_seconds=1.0) as sim,
        kling.Client(
            access_key=sim.access_key, secret_key=sim.secret_key, base_url=sim.url
        ) as client,
    ):
        yield client


async def main(simulate: bool, out: Path) -> None:
    request = kling.MultiImageToVideoRequest(
        images=[IMAGES / "sunrise.png", IMAGES / "ocean.png"],
        prompt="The sun rises over a calm ocean, slow camera push-in",
    )
    async with connect(simulate) as client:
        task = await client.submit(request)  # returns once Kling has accepted the task
        print(f"submitted task {task.task_id}, waiting for the video...")
        task = await client.wait(task, timeout=900)  # raises TaskFailedError if it failed
        for path in await client.download(task, out):
            print(f"saved {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulate", action="store_true", help="use a local simulator")
    parser.add_argument("--out", type=Path, default=Path("videos"), help="output folder")
    args = parser.parse_args()
    asyncio.run(main(args.simulate, args.out))
