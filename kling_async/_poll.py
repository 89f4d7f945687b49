"""TaskTracker: one background sweep reports every task we wait on.

With many tasks in flight one list request (pageSize ≤ 500) reports them all; single GETs are kept
for the few a sweep did not find (one sweep: `_sweep.py`). When to sweep is the Pacer's call
(`_pacing.py`): from the generation times learnt so far, sweep once the slot-time that unseen
completions are expected to have cost is worth a request. A callback wakes the sweeper (no status
given) or, saying a task ended, frees its slot at once and is confirmed by a later sweep; while
callbacks announce every completion, polling is only the safety net.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ._config import PollPolicy
from ._errors import (
    AccountError,
    ApiUnreachableError,
    AuthenticationError,
    KlingError,
)
from ._events import EventHook, TaskFinished, TaskStatusChanged, emit
from ._followed import Followed
from ._pacing import Alarm, Pacer
from ._sweep import GetOne, ListPage, StatusSweep
from ._types import Clock, Sleep
from .models import Task, TaskStatus

__all__ = ["GetOne", "ListPage", "TaskTracker"]

logger = logging.getLogger("kling_async")

#: A task whose slot a false claim freed is held again: (the task, its new `ended`).
Retake = Callable[[Task, "asyncio.Future[None]"], None]
#: Fatal for every tracked task: retrying a query cannot help.
_FATAL = (AuthenticationError, AccountError, ApiUnreachableError)
_TERMINAL = frozenset(status.value for status in TaskStatus if status.is_terminal)
_RUNNING = frozenset(status.value for status in TaskStatus if not status.is_terminal)


class TaskTracker(StatusSweep):
    """Tracks non-terminal tasks and resolves a future for each when it ends.

    `track()` gives the caller's result, `ended()` how long the task holds a slot; they differ
    only for a task whose answers cannot be read (see `_followed.py`): its result fails after
    `policy.unreadable_limit` such answers in a row, and it is followed until an answer shows it
    finished or `policy.timeout` after tracking began.
    """

    def __init__(
        self,
        *,
        list_page: ListPage,
        get_one: GetOne,
        policy: PollPolicy,
        page_size: int = 500,
        max_pages: int = 4,
        sleep: Sleep = asyncio.sleep,
        monotonic: Clock = time.monotonic,
        event_hook: EventHook | None = None,
        retake: Retake | None = None,
        creates_runway: Callable[[int], float] | None = None,
    ) -> None:
        self._list_page = list_page
        self._get_one = get_one
        self.pacer = Pacer(policy)
        #: Called when a query contradicts a callback's claim (the slot is ours again).
        self.retake = retake
        #: Given how many followed tasks hold slots: seconds until creates queued for the
        #: request rate run out of slots (0: the rate does not bind; None: never asked).
        self.creates_runway = creates_runway
        self._answer_time = 0.0  # how long the last sweep took, its token's wait included
        self.page_size = page_size
        self.max_pages = max_pages
        self._sleep = sleep
        self._monotonic = monotonic
        self._hook = event_hook
        self._tracked: dict[str, Followed] = {}
        self._alarm = Alarm(sleep)
        self._runner: asyncio.Task[None] | None = None
        self.sweeps = 0
        self.list_calls = 0
        self.get_calls = 0

    def __len__(self) -> int:
        return len(self._tracked)

    @property
    def policy(self) -> PollPolicy:
        """How sweeps are paced (kept by the Pacer)."""
        return self.pacer.policy

    @policy.setter
    def policy(self, policy: PollPolicy) -> None:
        self.pacer.policy = policy

    def track(self, task: Task, *, urgent: bool = False) -> asyncio.Future[Task]:
        """Follow `task` until it ends; the future resolves with its terminal view.

        It fails with the error if Kling says the task does not exist (1203), with a fatal
        error (authentication, account) that stops all polling, or with
        ResponseValidationError after `policy.unreadable_limit` unreadable answers in a row (a
        later `track()` of the same task gives a fresh future, as the task is still followed).
        `urgent`: a caller blocks on the result, so a callback's claim is confirmed at once
        rather than with the next batch of claims.
        """
        entry = self._tracked.get(task.task_id)
        if entry is None:
            entry = Followed(task, self._monotonic())
            if task.is_terminal:
                entry.stop(result=task)
                return entry.done
            self._tracked[task.task_id] = entry
        entry.urgent = entry.urgent or urgent
        self._ensure_running()
        return entry.done

    def ended(self, task: Task) -> asyncio.Future[None]:
        """Resolves when we stop following `task` (tracking it if need be): hold its slot
        until then. Seen finished, lost (1203), a fatal error, its deadline, or `aclose()`."""
        self.track(task)
        entry = self._tracked.get(task.task_id)
        if entry is not None:
            return entry.ended
        over: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        over.set_result(None)
        return over

    def hint(self) -> None:
        """Sweep now (a callback said something changed)."""
        self._alarm.wake()

    def claim(self, task_id: str, status: str | None = None) -> None:
        """A callback about `task_id` claims `status` (unconfirmed).

        A terminal claim about a task we follow frees its slot at once; a sweep confirms it
        (soon if nothing else runs). A claim of a running state changes nothing; one without a
        status we can read (or about a task we do not know) wakes the sweeper.
        """
        entry = self._tracked.get(task_id)
        if entry is not None and status in _TERMINAL:
            if entry.claim():
                # A blocked caller: confirm now; else maybe nothing else is left to wait for.
                self._alarm.wake() if entry.urgent else self._alarm.replan()
        elif entry is None or status not in _RUNNING:
            self.hint()

    def observe(self, task: Task) -> None:
        """Take a fresh view of a task from anywhere (a query, a confirmed callback)."""
        entry = self._tracked.get(task.task_id)
        if entry is None:
            return
        if task.task_status != entry.task.task_status:
            emit(self._hook, TaskStatusChanged(task.task_id, task.task_status.value))
        task = entry.read(task)
        if not task.is_terminal and entry.contradicted():
            logger.warning("task %s: a callback said it ended, but it runs on", task.task_id)
            if self.retake is not None:
                self.retake(task, entry.ended)
        if task.is_terminal:
            took = None
            if task.created_at is not None and task.updated_at is not None:
                took = (task.updated_at - task.created_at).total_seconds()
            self.pacer.finished(took, announced=entry.claimed)
            emit(self._hook, TaskFinished(task.task_id, task.task_status.value))
            self._stop(entry, result=task)

    def _ensure_running(self) -> None:
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="kling-sweep")

    async def aclose(self) -> None:
        """Stop sweeping; waiters still pending are cancelled."""
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        for entry in self._tracked.values():
            entry.cancel()
        self._tracked.clear()

    def _fail_all(self, error: BaseException) -> None:
        for entry in list(self._tracked.values()):
            self._stop(entry, error=error)

    async def _run(self) -> None:
        self.pacer.begin(self._monotonic())
        while self._busy():
            if not await self._alarm.pause(self._next_delay()):
                continue  # re-planned: the pause is computed again
            if not self._busy():
                break
            started = self._monotonic()
            try:
                changed = await self.sweep()
            except _FATAL as exc:
                self._fail_all(exc)
                return
            except KlingError as exc:  # already retried inside: wait longer, then go on
                logger.warning("status sweep failed: %s", exc)
                self.pacer.failed(started)
            else:
                self.pacer.swept(started, changed)
                self._answer_time = self._monotonic() - started

    def _busy(self) -> bool:
        return bool(self._tracked or self._also_running())

    def _also_running(self) -> list[float]:
        """When each task we sweep for but do not follow began (a shared tracker's leader)."""
        return []

    def typical_duration(self) -> float | None:
        """Median generation time seen so far (server stamps), once three tasks have ended."""
        return self.pacer.typical()

    def _next_delay(self) -> float:
        """Seconds until the next sweep (see `Pacer.delay`)."""
        running = [e.since for e in self._tracked.values() if not e.claimed]
        claimed = len(self._tracked) - len(running)
        running += self._also_running()
        now = self._monotonic()
        delay = self.pacer.delay(now, running, claimed)
        runway = 0.0
        if self.creates_runway is not None and not claimed:
            runway = self.creates_runway(len(self._tracked))
        if runway > 0:
            delay = max(delay, self._slot_delay(now, runway, running))
        return delay

    def _slot_delay(self, now: float, runway: float, running: list[float]) -> float:
        """While creates wait for the request rate, not for slots: the pause that sweeps just
        before they would run out of slots.

        Each sweep costs a create its token, and seeing a task end sooner frees a slot nobody
        needs yet; one sweep, however late, reports every task that ended meanwhile. So the
        sweep goes when the slots not held by running tasks (`runway`: seconds of creates at
        the rate) are used up, less the time its own answer takes. Capped so results are not
        held back for long: one median generation time, or (none known yet) the age of the
        oldest task followed, so the first completions are seen within about twice their age.
        """
        cap = self.typical_duration()
        if cap is None:
            cap = max((now - start for start in running), default=0.0)
        cap = max(cap, self.policy.interval_max)
        return min(cap, runway - self._answer_time)

    def replan(self) -> None:
        """Compute the pause before the next sweep again (e.g. the creates' queue drained)."""
        self._alarm.replan()
