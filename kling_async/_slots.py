"""A task's concurrency slot, held from its create until the task is seen finished.

`Slots` ties the slot gate (`_gate.Gate`) to the tracker that follows tasks: a create waits for
a slot; a 1303 gives it back and waits on the gate again (the gate, not a back-off, decides
when: one probe at a time, however long the account is full); an accepted create keeps its slot
until the tracker stops following the task. A task found running on resume holds a slot too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from ._create import CREATE_PATH
from ._errors import ConcurrencyLimitError
from ._events import ConcurrencyBackoff, emit
from ._gate import Gate, Slot
from ._poll import TaskTracker
from ._retry import Retries
from .models import Task

__all__ = ["Slots"]


class Slots:
    """Creates under the gate's slots, each slot held while its task is followed."""

    def __init__(
        self,
        gate: Gate,
        tracker: TaskTracker,
        retries: Retries,
        *,
        probe_interval: float | None = None,
    ) -> None:
        self.gate = gate
        self.tracker = tracker
        self._retries = retries
        #: The configured probe interval; None: 1.5 × the typical generation time seen so far.
        self._probe_interval = probe_interval
        tracker.retake = self._retake

    async def create(
        self, create: Callable[[bool], Awaitable[Task]]
    ) -> tuple[Task, asyncio.Future[Task]]:
        """Run `create(refused_before)` on a slot until Kling takes it (1303: on a new slot).

        `refused_before` tells the create whether an earlier attempt got 1303, so that a task
        found under its key may be that attempt's. Returns the task and the future of its end,
        taken as following began: the task may end before the caller gets to follow it, and a
        later `follow()` of its `submitted` view would follow (and report) it a second time.
        """
        async for attempt in self._retries.attempts("POST", CREATE_PATH):
            slot = await self.gate.acquire()
            try:
                task = await create(attempt.number > 1)
            except ConcurrencyLimitError:
                held = await self.gate.rejected(slot)
                emit(self._retries.hook, ConcurrencyBackoff(self.gate.limit, held))
                attempt.again()  # acquire() waits for the gate's next probe
            except BaseException:
                self.gate.release(slot)
                raise
            else:
                self._hold_until_ended(task, slot)  # first: given back even if cancelled below
                done = self.tracker.track(task)  # the entry just made: no await in between
                await self.gate.accepted(slot)
        return task, done

    def follow(self, task: Task, *, hold_slot: bool = False) -> asyncio.Future[Task]:
        """Follow `task`; with `hold_slot`, it holds a slot until seen finished (on resume)."""
        done = self.tracker.track(task)
        if hold_slot:
            self._hold_until_ended(task, self.gate.hold())
        return done

    def _hold_until_ended(self, task: Task, slot: Slot) -> None:
        # Held while the task is followed, which may outlast its result (an unreadable task).
        self.tracker.ended(task).add_done_callback(partial(self._freed, slot))

    def _freed(self, slot: Slot, _: asyncio.Future[Any]) -> None:
        # Runs however following ended (finished, lost, given up, cancelled): the slot is back.
        self.gate.release(slot)
        typical = self.tracker.typical_duration()
        if self._probe_interval is None and typical is not None:
            self.gate.probe_interval = max(0.05, 1.5 * typical)

    def _retake(self, _: Task, ended: asyncio.Future[None]) -> None:
        # A callback's claim freed this task's slot, but a query shows it still running.
        ended.add_done_callback(partial(self._freed, self.gate.hold()))
