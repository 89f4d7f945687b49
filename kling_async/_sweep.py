"""One status sweep: list pages (and when paging stops), single queries, what each answer means."""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any

from ._config import PollPolicy
from ._errors import BadRequestError, ResponseValidationError, is_no_such_task
from ._events import EventHook
from ._followed import Followed
from ._types import Clock
from .models import Task, TaskStatus, epoch_seconds, read_task, report_unreadable
from .models._tolerant import as_status

__all__ = ["GetOne", "ListPage", "StatusSweep"]

logger = logging.getLogger("kling_async")

#: (page, size) → the raw items: only the ones we track get parsed (a page may hold 500).
ListPage = Callable[[int, int], Awaitable[list[Any]]]
#: task_id → the raw `data` of its single query; read here, by the tolerant reader's rules.
GetOne = Callable[[str], Awaitable[Any]]


class StatusSweep:
    """A TaskTracker's sweep: ask Kling about every followed task as cheaply as it can."""

    # Set by TaskTracker.__init__ (following, futures and the sweep loop live in _poll).
    policy: PollPolicy
    page_size: int
    max_pages: int
    sweeps: int
    list_calls: int
    get_calls: int
    _list_page: ListPage
    _get_one: GetOne
    _monotonic: Clock
    _hook: EventHook | None
    _tracked: dict[str, Followed]

    @abstractmethod
    def observe(self, task: Task) -> None:
        """Take a fresh view of a task (TaskTracker: status events, slots, futures)."""

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

    async def _sweep_list(self, pending: set[str]) -> None:
        """Page through the list until every pending task is seen (or paging cannot help)."""
        # Our running tasks are among the newest: a page twice their number (room for those ended
        # since the oldest began) finds them, and each item on a page costs decoding time.
        size = min(self.page_size, max(30, 2 * len(pending) + 10))
        created = [self._tracked[tid].task.created_at for tid in pending]
        # Unknown creation times: we cannot tell when paging is past our tasks.
        oldest = None if None in created else min(c.timestamp() for c in created if c)
        for page in range(1, self.max_pages + 1):
            self.list_calls += 1
            items = await self._list_page(page, size)
            for item in items:
                if not isinstance(item, dict):
                    continue  # about no task we can name: the page's reader reports it
                tid = str(item.get("task_id"))
                if tid in pending:
                    status = as_status(item.get("task_status"))
                    entry = self._tracked[tid]
                    if status == entry.task.task_status.value and not entry.claimed:
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
            # Only now (rarely) are the creation times needed: is the next page worth asking?
            stamps = (
                epoch_seconds(item.get("created_at")) for item in items if isinstance(item, dict)
            )
            numbers = [t for t in stamps if t is not None]
            if oldest is not None and numbers and min(numbers) < oldest:
                return  # newest-first and already past our oldest: the rest are stragglers

    async def sweep(self) -> int:
        """One status pass over every tracked task; returns how many changed status."""
        self.sweeps += 1
        self._past_deadline()
        before = {tid: e.task.task_status for tid, e in self._tracked.items()}
        pending = set(before)
        if len(pending) > 2 or (pending and self._listed_already()):
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
                if not is_no_such_task(exc):
                    raise
                self._stop(entry, error=exc)  # Kling has no such task: stop following it
                continue
            try:
                task = read_task(data, "query", hook=self._hook)
            except ResponseValidationError as exc:
                self._unreadable(entry, exc, data)
                continue
            self.observe(task)
        return self._changed(before)

    def _changed(self, before: dict[str, TaskStatus]) -> int:
        return sum(
            1
            for tid, status in before.items()
            if tid not in self._tracked or self._tracked[tid].task.task_status != status
        )

    def _listed_already(self) -> bool:
        """Whether this sweep's list page is at hand (no request): read it for every task."""
        return False
