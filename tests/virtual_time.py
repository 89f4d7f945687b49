"""An event loop on virtual time: timers fire at once, in order, and the clock jumps to them.

`run(coro)` runs a coroutine on it; inside, `asyncio.sleep` and `loop.time()` are the injected
sleep and clock of the code under test, so minutes of pacing run in milliseconds and no test
waits or depends on the machine's load. Real I/O is not expected: a loop with nothing to run
and no timer is a deadlock and raises.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _Selector(selectors.SelectSelector):
    """Polls without blocking; a wait for a timer moves the loop's clock instead."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if events or timeout == 0:
            return events
        if timeout is None:
            raise RuntimeError("virtual-time loop: nothing to run and no timer (deadlock)")
        assert self.loop is not None
        self.loop.now += timeout
        return events


class VirtualLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose `time()` is virtual."""

    def __init__(self) -> None:
        selector = _Selector()
        super().__init__(selector)
        selector.loop = self
        self.now = 0.0

    def time(self) -> float:
        return self.now


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion on a fresh virtual-time loop."""
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        # A failed test may leave tasks behind: end them before the loop closes.
        loop.run_until_complete(_cancel_all())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _cancel_all() -> None:
    left = asyncio.all_tasks() - {asyncio.current_task()}
    for task in left:
        task.cancel()
    await asyncio.gather(*left, return_exceptions=True)


def clock() -> float:
    """The running loop's (virtual) time: the `monotonic` to inject."""
    return asyncio.get_running_loop().time()
