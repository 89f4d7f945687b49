"""TaskTracker: one background sweep reports every task we wait on.

With many tasks in flight one list request (pageSize ≤ 500) reports them all; single GETs are
kept for the few a sweep did not find. Sweeps are paced by what we have learnt about generation
times: slow while nothing can be done yet, quick while some task is due, so a finished task (which
frees a concurrency slot) is noticed soon without a request per task per tick. A hint (e.g. a
callback) wakes the sweeper at once; polling stays the safety net.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ._config import PollPolicy
from ._errors import (
    AccountError,
    AuthenticationError,
    BadRequestError,
    KlingError,
    ResponseValidationError,
)
from ._events import EventHook, emit
from ._followed import Followed
from ._types import Clock, Sleep
from .models import Task, epoch_seconds, read_task, report_unreadable
from .models._tolerant import as_status

__all__ = ["TaskTracker"]

logger = logging.getLogger("kling_async")

#: (page, size) → the raw items: only the ones we track get parsed (a page may hold 500).
ListPage = Callable[[int, int], Awaitable[list[Any]]]
#: task_id → the raw `data` of its single query; read here, by the tolerant reader's rules.
GetOne = Callable[[str], Awaitable[Any]]
#: Fatal for every tracked task: retrying a query cannot help.
_FATAL = (AuthenticationError, AccountError)


class TaskTracker:
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
    ) -> None:
        self._list_page = list_page
        self._get_one = get_one
        self.policy = policy
        self.page_size = page_size
        self.max_pages = max_pages
        self._sleep = sleep
        self._monotonic = monotonic
        self._hook = event_hook
        self._tracked: dict[str, Followed] = {}
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._durations: deque[float] = deque(maxlen=256)
        self._interval = policy.interval
        self.sweeps = 0
        self.list_calls = 0
        self.get_calls = 0

    def __len__(self) -> int:
        return len(self._tracked)

    def track(self, task: Task) -> asyncio.Future[Task]:
        """Follow `task` until it ends; the future resolves with its terminal view.

        It fails with the error if Kling says the task does not exist (1203), with a fatal
        error (authentication, account) that stops all polling, or with
        ResponseValidationError after `policy.unreadable_limit` unreadable answers in a row (a
        later `track()` of the same task gives a fresh future, as the task is still followed).
        """
        entry = self._tracked.get(task.task_id)
        if entry is None:
            entry = Followed(task, self._monotonic())
            if task.is_terminal:
                entry.stop(result=task)
                return entry.done
            self._tracked[task.task_id] = entry
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
        self._wake.set()

    def observe(self, task: Task) -> None:
        """Take a fresh view of a task from anywhere (a query, a confirmed callback)."""
        entry = self._tracked.get(task.task_id)
        if entry is None:
            return
        if task.task_status != entry.task.task_status:
            emit(self._hook, "task_status", task_id=task.task_id, status=task.task_status.value)
        task = entry.read(task)
        if task.is_terminal:
            if task.created_at is not None and task.updated_at is not None:
                self._durations.append((task.updated_at - task.created_at).total_seconds())
            emit(self._hook, "task_finished", task_id=task.task_id, status=task.task_status.value)
            self._stop(entry, result=task)

    def _stop(
        self, entry: Followed, *, result: Task | None = None, error: BaseException | None = None
    ) -> None:
        self._tracked.pop(entry.task.task_id, None)
        entry.stop(result, error)

    def _unreadable(self, entry: Followed, exc: ResponseValidationError, data: Any) -> None:
        """One more answer about `entry` that could not be read."""
        report_unreadable(
            exc,
            self._hook,
            # Once its caller was told, the task's log goes quiet until its deadline.
            level=logging.DEBUG if entry.error is not None else logging.WARNING,
            task_id=entry.task.task_id,
            source="query",
        )
        status = data.get("task_status") if isinstance(data, dict) else None
        if entry.unreadable_answer(exc, status, self.policy.unreadable_limit):
            self._tracked.pop(entry.task.task_id, None)

    def _past_deadline(self) -> None:
        """Stop following unreadable tasks whose deadline (`policy.timeout`) has passed."""
        now = self._monotonic()
        for entry in list(self._tracked.values()):
            if entry.past(self.policy.timeout, now):
                logger.warning(
                    "task %s: answers still unreadable after %g s; no longer followed",
                    entry.task.task_id,
                    self.policy.timeout,
                )
                self._stop(entry, error=entry.error)

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
        while self._tracked:
            await self._pause(self._next_delay())
            if not self._tracked:
                break
            changed = 0
            try:
                changed = await self.sweep()
            except _FATAL as exc:
                self._fail_all(exc)
                return
            except KlingError as exc:  # already retried inside: wait longer, then go on
                logger.warning("status sweep failed: %s", exc)
            if changed:
                self._interval = self.policy.interval
            else:
                self._interval = min(self.policy.interval_max, self._interval * self.policy.backoff)

    async def _pause(self, seconds: float) -> None:
        if self._wake.is_set():
            self._wake.clear()
            return
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)
            self._wake.clear()

    def typical_duration(self) -> float | None:
        """Median generation time seen so far (server stamps), once three tasks have ended."""
        return statistics.median(self._durations) if len(self._durations) >= 3 else None

    def _next_delay(self) -> float:
        """Back off while we know nothing; once durations are learnt, sleep until the soonest
        task is due, then sweep every `typical duration × due_fraction` while tasks are due."""
        policy = self.policy
        if len(self._durations) < 3:
            return self._interval
        ordered = sorted(self._durations)
        early = ordered[len(ordered) // 10]  # 10th percentile: few finish sooner
        due_cadence = statistics.median(ordered) * policy.due_fraction
        soonest = min(e.since for e in self._tracked.values()) + early
        wait = max(soonest - self._monotonic(), due_cadence)
        return min(policy.interval_max, max(policy.min_interval, wait))

    async def _sweep_list(self, pending: set[str]) -> None:
        """Page through the list until every pending task is seen (or paging cannot help)."""
        # Our running tasks are among the newest: a page a few times their number finds them,
        # and a small page costs less to send and parse than 500 finished tasks.
        size = min(self.page_size, max(30, 4 * len(pending)))
        created = [self._tracked[tid].task.created_at for tid in pending]
        # Unknown creation times: we cannot tell when paging is past our tasks.
        oldest = None if None in created else min(c.timestamp() for c in created if c)
        for page in range(1, self.max_pages + 1):
            self.list_calls += 1
            items = await self._list_page(page, size)
            stamps = []
            for item in items:
                if not isinstance(item, dict):
                    continue  # about no task we can name: the page's reader reports it
                stamps.append(epoch_seconds(item.get("created_at")))
                tid = str(item.get("task_id"))
                if tid in pending:
                    status = as_status(item.get("task_status"))
                    if status == self._tracked[tid].task.task_status.value:
                        pending.discard(tid)  # unchanged: nothing to parse (the common case)
                        continue
                    try:
                        task = read_task(item, "list", hook=self._hook)
                    except ResponseValidationError as exc:
                        # A list item may be abridged: its single query below decides.
                        quiet = self._tracked[tid].error is not None
                        level = logging.DEBUG if quiet else logging.WARNING
                        report_unreadable(exc, self._hook, level=level, task_id=tid, source="list")
                        continue
                    pending.discard(tid)
                    self.observe(task)
            if not pending or len(items) < size:
                return
            numbers = [t for t in stamps if t is not None]
            if oldest is not None and numbers and min(numbers) < oldest:
                return  # newest-first and already past our oldest: the rest are stragglers

    async def sweep(self) -> int:
        """One status pass over every tracked task; returns how many changed status."""
        self.sweeps += 1
        self._past_deadline()
        before = {tid: e.task.task_status for tid, e in self._tracked.items()}
        pending = set(before)
        if len(pending) > 2:
            await self._sweep_list(pending)
        for tid in pending:
            entry = self._tracked.get(tid)
            if entry is None:
                continue
            self.get_calls += 1
            try:
                data = await self._get_one(tid)
            except ResponseValidationError as exc:  # no Kling envelope at all: ask again later
                logger.warning("status of task %s unreadable: %s", tid, exc)
                continue
            except BadRequestError as exc:
                if exc.code != 1203 and exc.status != 404:
                    raise
                self._stop(entry, error=exc)  # Kling has no such task: stop following it
                continue
            try:
                task = read_task(data, "query", hook=self._hook)
            except ResponseValidationError as exc:
                self._unreadable(entry, exc, data)
                continue
            self.observe(task)
        return sum(
            1
            for tid, status in before.items()
            if tid not in self._tracked or self._tracked[tid].task.task_status != status
        )
