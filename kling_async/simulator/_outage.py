"""Outages of the API origin: down for a while, then back on the same port.

Two ways to be down, as real outages are:

- ``refuse``: nothing listens on the port (connections are refused) and connections already
  open are closed; a request on one of them gets no answer.
- ``hang``: connections are accepted but nothing answers until the outage ends, when they are
  dropped (clients see their own timeouts).

Either way the port is the same when the API comes back, so a client keeps its base URL. The
video origin is not touched. Control routes live on the API port too: during an outage they are
as unreachable as the rest (in-process, ``Simulator.outage(0)`` ends one early).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

__all__ = ["MODES", "Listener", "OutageSwitch"]

MODES = ("refuse", "hang")

logger = logging.getLogger("kling_async.simulator")


class Listener(Protocol):
    """What the switch needs from the server: stop listening, listen again on the same port."""

    async def close(self) -> None:
        """Stop accepting connections and close those open."""

    async def reopen(self) -> None:
        """Listen again on the same address."""


def check_mode(mode: str) -> str:
    """`mode` if it is one of MODES, else ValueError naming them."""
    if mode not in MODES:
        raise ValueError(f"outage mode must be one of {', '.join(MODES)} (got {mode!r})")
    return mode


class OutageSwitch:
    """Starts and ends outages; the API's middleware asks `down` for every request."""

    def __init__(self, stopping: asyncio.Event, default_mode: str = "refuse") -> None:
        self.default_mode = check_mode(default_mode)
        self.listener: Listener | None = None  # set once the API origin listens
        self.mode: str | None = None  # None: up
        self.count = 0  # outages started
        self._stopping = stopping
        self._up = asyncio.Event()
        self._up.set()
        self._timer: asyncio.TimerHandle | None = None
        self._planned: list[asyncio.TimerHandle] = []
        self._steps: list[asyncio.Task[None]] = []

    @property
    def down(self) -> bool:
        """True while the API origin is down."""
        return self.mode is not None

    def start(self, seconds: float, mode: str | None = None) -> None:
        """Go down now for `seconds` (a running outage is extended or cut to that); 0: end now."""
        if seconds < 0:
            raise ValueError(f"outage must be >= 0 seconds (got {seconds})")
        mode = check_mode(mode or self.default_mode)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if seconds == 0:
            self.end()
            return
        if self.mode is None:
            self.count += 1
            self.mode = mode
            self._up.clear()
            if mode == "refuse":
                self._step(lambda listener: listener.close())
        self._timer = asyncio.get_running_loop().call_later(seconds, self.end)

    def end(self) -> None:
        """Come back up now (on the same port)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        mode, self.mode = self.mode, None
        if mode == "refuse":
            self._step(lambda listener: listener.reopen())
        self._up.set()

    def _step(self, action: Callable[[Listener], Awaitable[None]]) -> None:
        """Run a listener action in order with the ones before it."""
        previous = self._steps[-1] if self._steps else None

        async def run() -> None:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous
            if self.listener is not None:
                try:
                    await action(self.listener)
                except OSError:
                    logger.exception("simulator outage: the API origin could not switch")

        self._steps = [t for t in self._steps if not t.done()]
        self._steps.append(asyncio.ensure_future(run()))

    async def settled(self) -> None:
        """Wait until the listener has done what was asked (closed, or listening again)."""
        for step in list(self._steps):
            with contextlib.suppress(Exception):
                await step

    async def hold(self) -> None:
        """Wait until the outage ends or the simulator stops (a hanging request)."""
        up = asyncio.ensure_future(self._up.wait())
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({up, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (up, stop):
                waiter.cancel()

    def schedule(self, plan: tuple[tuple[float, float], ...]) -> None:
        """Outages from the configuration: (seconds after start, seconds down) each."""
        loop = asyncio.get_running_loop()
        for after, seconds in plan:
            self._planned.append(loop.call_later(after, self.start, seconds))

    async def close(self) -> None:
        """Cancel timers and pending switches (the simulator stops)."""
        for timer in (self._timer, *self._planned):
            if timer is not None:
                timer.cancel()
        self.mode = None
        self._up.set()
        for step in self._steps:
            step.cancel()
        await asyncio.gather(*self._steps, return_exceptions=True)
