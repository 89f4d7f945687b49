"""Fixtures for the simulator tests: a fast simulator, a plain aiohttp session, a signed API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

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


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A tiny callback receiver on 127.0.0.1: (url, received bodies)."""
    received: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/cb", handle)
    server_runner = web.AppRunner(app, shutdown_timeout=0.5)
    await server_runner.setup()
    site = web.TCPSite(server_runner, "127.0.0.1", 0)
    await site.start()
    port = server_runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/cb", received
    await server_runner.cleanup()
