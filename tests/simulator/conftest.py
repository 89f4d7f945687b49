"""Fixtures for the simulator tests: a fast simulator, a plain aiohttp session, a signed API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from kling_async.simulator import Simulator

from .helpers import Api


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp session."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A simulator with 50 ms tasks and a cap of 3."""
    async with Simulator(concurrency=3, gen_seconds=0.05, gen_spread=0.0) as simulator:
        yield simulator


@pytest.fixture
def api(sim: Simulator, http: aiohttp.ClientSession) -> Api:
    """Signed requests against ``sim``."""
    return Api(sim, http)
