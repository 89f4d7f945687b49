"""A user's own module, as it would sit in their project after `pip install -e .` of kling-async.

Not a test module: `.ci/run` and tests/test_packaging.py copy it into an empty folder and check
it with `mypy --strict` against a fresh virtual environment, proving that type checkers find the
editable install and its `py.typed`.
"""

from __future__ import annotations

from pathlib import Path

import kling_async as kling
from kling_async.simulator import Simulator


async def make_one(images: list[str], prompt: str, out: Path) -> list[Path]:
    """Submit, wait and download one video with credentials from the environment."""
    request = kling.MultiImageToVideoRequest(images=images, prompt=prompt, mode="pro")
    async with kling.Client(limits=kling.Limits(concurrency=3)) as client:
        task: kling.Task = await client.wait(await client.submit(request), timeout=900)
        return await client.download(task, out)


async def run_all(jobs: Path, out: Path) -> int:
    """Run a JSONL batch against the built-in simulator; count the failed jobs."""
    failed = 0
    async with (
        Simulator(concurrency=2, gen_seconds=0.1) as sim,
        kling.Client(access_key=sim.access_key, secret_key=sim.secret_key, base_url=sim.url) as c,
    ):
        async for result in kling.run_batch(c, jobs, out):
            failed += not result.ok
    return failed


def describe(error: kling.KlingError) -> str:
    """Kling's code and request id when the error carries them."""
    if isinstance(error, kling.APIError):
        return f"{error.code} {error.request_id}"
    return str(error)
