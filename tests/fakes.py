"""Small fakes shared by unit tests."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp


class Recorder:
    """A fake `sleep` that records each wait and advances a fake monotonic clock."""

    def __init__(self, now: float = 0.0) -> None:
        self.waits: list[float] = []
        self.now = now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)

    async def pace(self, seconds: float) -> None:
        """The request rate's waits: the clock advances, but they are not back-offs."""
        self.now += seconds
        await asyncio.sleep(0)

    def monotonic(self) -> float:
        return self.now


def token_trace(seen: list[str]) -> aiohttp.TraceConfig:
    """A session trace that records every Authorization value sent (the tokens on the wire)."""

    async def on_request_start(
        session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestStartParams
    ) -> None:
        value = params.headers.get("Authorization")
        if value is not None:
            seen.append(value)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request_start)
    return trace
