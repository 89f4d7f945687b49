"""Fresh answers for tasks whose stored answer (and so its video links) may be stale.

Video links can be signed for a limited time, so a download that starts long after its task
was seen (`kling-async download`, a rerun of a folder) asks Kling again first. Several such
tasks at once are asked through the list endpoint, up to 500 a page, as the poller's sweeps do;
what paging does not find, or where paging would cost more than it saves, is asked one by one.
Answers found for other tasks of the round are kept (briefly) for when their download starts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._errors import KlingError, ResponseValidationError
from ._queries import list_raw
from ._server_time import ServerClock
from .models import Task, epoch_seconds, read_task

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["FRESH", "Requery", "stale"]

#: A task answer younger than this (seconds) is used as it is: its video links still work.
FRESH = 300.0
#: A list round asks at most one page per this many wanted tasks (a page is a heavier request
#: than one query: paging deep into an account's history must not cost more than it saves).
PER_PAGE = 4
PAGE = 500  # the list endpoint's largest page


def stale(task: Task, seen: float | None, clock: ServerClock, now: float) -> bool:
    """Whether `task`'s answer is too old to trust its links.

    `seen`: when (monotonic `now`'s clock) this process received it; None: stored earlier,
    so only its `updated_at` bounds its age (the answer came after the task last changed), by
    the server's clock — unknown before any answer, and then the answer counts as stale.
    """
    if seen is not None:
        return now - seen > FRESH
    if clock.offset is None or task.updated_at is None:
        return True
    return clock.server_now() - task.updated_at.timestamp() > FRESH


class Requery:
    """Re-queries tasks for the download stage: a list round for several, else one by one."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._lock = asyncio.Lock()  # one round at a time: a waiting worker may find its answer
        self._answers: dict[str, tuple[Task, float]] = {}  # task_id → (answer, monotonic time)
        self.list_calls = 0
        self.get_calls = 0

    async def fresh(self, task: Task, others: Iterable[Task] = ()) -> Task:
        """A fresh answer about `task`; `others`: tasks also due a query soon (the round asks
        about them too when that saves requests). Raises KlingError from a single query."""
        async with self._lock:
            now = time.monotonic()
            self._answers = {k: v for k, v in self._answers.items() if now - v[1] <= FRESH}
            kept = self._answers.pop(task.task_id, None)
            if kept is not None:
                return kept[0]
            wanted = {t.task_id: t for t in others if t.task_id not in self._answers}
            wanted[task.task_id] = task
            if len(wanted) > 2:  # as a sweep: a page answers for many at the cost of one
                found = await self._listed(wanted)
                now = time.monotonic()
                self._answers.update((tid, (answer, now)) for tid, answer in found.items())
                kept = self._answers.pop(task.task_id, None)
                if kept is not None:
                    return kept[0]
        self.get_calls += 1
        return await self._client.get_task(task.task_id)

    async def _listed(self, wanted: dict[str, Task]) -> dict[str, Task]:
        """Page through the list (newest first) until every wanted task is found, paging is
        past the oldest of them, or the round's page budget is spent."""
        created = [t.created_at for t in wanted.values()]
        oldest = None if None in created else min(c.timestamp() for c in created if c)
        found: dict[str, Task] = {}
        for page in range(1, max(1, len(wanted) // PER_PAGE) + 1):
            self.list_calls += 1
            try:
                items = await list_raw(self._client._http, page, PAGE)
            except KlingError:
                break  # the single queries decide (and report) what is wrong
            for item in items:
                if not isinstance(item, dict) or str(item.get("task_id")) not in wanted:
                    continue
                try:
                    task = read_task(item, "list")
                except ResponseValidationError:
                    continue  # an abridged item: its single query decides
                found[task.task_id] = task
            if len(found) == len(wanted) or len(items) < PAGE:
                break
            stamps = [epoch_seconds(i.get("created_at")) for i in items if isinstance(i, dict)]
            numbers = [t for t in stamps if t is not None]
            if oldest is not None and numbers and min(numbers) < oldest:
                break  # newest first and already past the oldest wanted: the rest are not ours
        return found
