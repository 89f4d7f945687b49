"""Small fakes shared by unit tests."""

from __future__ import annotations

import asyncio


class Recorder:
    """A fake `sleep` that records each wait and advances a fake monotonic clock."""

    def __init__(self, now: float = 0.0) -> None:
        self.waits: list[float] = []
        self.now = now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)

    def monotonic(self) -> float:
        return self.now
