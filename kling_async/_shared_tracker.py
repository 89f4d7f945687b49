"""SharedTracker: one status sweep serves every process of an account (through the coordinator).

The process holding the status leadership (`LeaderLease`) sweeps Kling for everyone: its own
tasks and every task another live process watches (`SharedStatus.watched()`). It paces its
sweeps for all of them (the Pacer sees every running task) and publishes each task's raw state
as the list gave it. Every other process watches the tasks it follows, is told over pub/sub
which states were published, and reads them from Redis — no request to Kling.

A follower sweeps Kling itself only when the coordinator is unavailable (until it is back),
when no process leads, or for a task nobody has published for `stale` seconds (one the leader's
list pages did not reach): following never depends on another process being alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

from ._errors import CoordinatorUnavailableError
from ._poll import ListPage, TaskTracker
from .models import Task, epoch_seconds
from .models._tolerant import as_status

if TYPE_CHECKING:
    from ._shared_status import LeaderLease, SharedStatus

__all__ = ["SharedTracker"]

_TERMINAL = frozenset({"succeed", "failed"})


class SharedTracker(TaskTracker):
    """A TaskTracker that leads the account's sweeps or reads the leader's results."""

    def __init__(self, *, list_page: ListPage, stale: float = 60.0, **options: Any) -> None:
        self._real_list = list_page
        self._served: list[Any] | None = None  # this sweep's list items, already at hand
        super().__init__(list_page=self._listed, **options)
        #: Seconds a followed task may stay unpublished before we sweep for it ourselves.
        self.stale = stale
        self._leader: LeaderLease | None = None
        self._status: SharedStatus | None = None
        self._foreign: dict[str, float] = {}  # others' running tasks we lead for: id → since
        self.reads = 0  # sweeps answered from Redis instead of Kling

    def share(self, leader: LeaderLease, status: SharedStatus) -> None:
        """Take part in the account's shared status (called once the coordinator is up)."""
        self._leader, self._status = leader, status
        status.watch(self._tracked)

    def _leading(self) -> bool:
        leader, status = self._leader, self._status
        return (
            leader is not None
            and status is not None
            and status.link.available
            and (leader.is_leader)
        )

    def leadership(self, leading: bool) -> None:
        """The status leadership was won or lost."""
        if not leading:
            self._foreign.clear()
        self.hint()

    def published(self, task_ids: list[str]) -> None:
        """States were published (an empty list: maybe any): read ours now if we follow them."""
        if self._leading():
            return
        if not task_ids or not self._tracked.keys().isdisjoint(task_ids):
            self.hint()

    def track(self, task: Task, *, urgent: bool = False) -> asyncio.Future[Task]:
        """As TaskTracker.track; the task is also watched, so the leader covers it."""
        done = super().track(task, urgent=urgent)
        if self._status is not None and task.task_id in self._tracked:
            self._status.watch([task.task_id])
        return done

    def _also_running(self) -> list[float]:
        return list(self._foreign.values()) if self._leading() else []

    def _listed_already(self) -> bool:
        return self._served is not None

    async def _listed(self, page: int, size: int) -> list[Any]:
        if self._served is None:
            return await self._real_list(page, size)
        self.list_calls -= 1  # counted by the caller, but no request was sent
        return self._served if page == 1 else []

    async def refresh(self) -> None:
        """As leader: learn which tasks other processes follow (and wake the sweeper)."""
        if not self._leading() or self._status is None:
            return
        watched = set(await self._status.watched()) - self._tracked.keys()
        now = self._monotonic()
        self._foreign = {tid: self._foreign.get(tid, now) for tid in watched}
        if self._foreign:
            self._ensure_running()

    async def sweep(self) -> int:
        """Lead (sweep Kling for all and publish), follow (read Redis), or sweep alone."""
        status = self._status
        if status is None or not status.link.available:
            return await super().sweep()
        self._unwatch_gone(status)
        try:
            if self._leading():
                return await self._lead(status)
            return await self._follow(status)
        except CoordinatorUnavailableError:
            return await super().sweep()  # Redis just went away: this sweep is ours alone

    def _unwatch_gone(self, status: SharedStatus) -> None:
        gone = status.watching - self._tracked.keys()
        if gone:
            status.unwatch(gone)

    async def _lead(self, status: SharedStatus) -> int:
        assert self._leader is not None
        await self.refresh()
        items = await self._cover({*self._tracked, *self._foreign})
        self._served = items
        try:
            changed = await super().sweep()
        finally:
            self._served = None
        states = {}
        for item in items:
            tid = str(item["task_id"])
            states[tid] = json.dumps(item, separators=(",", ":"))
            if tid in self._foreign and as_status(item.get("task_status")) in _TERMINAL:
                del self._foreign[tid]
                changed += 1  # a change the pacer must hear of, or it backs off
                start, end = (
                    epoch_seconds(item.get("created_at")),
                    epoch_seconds(item.get("updated_at")),
                )
                took = None if start is None or end is None else end - start
                self.pacer.finished(took, announced=False)  # learnt from every process's tasks
        await status.publish(self._leader, states)
        return changed

    async def _cover(self, ids: set[str]) -> list[dict[str, Any]]:
        """List pages until every task in `ids` is seen (or paging cannot help)."""
        pending, found = set(ids), []
        size = min(self.page_size, max(30, 4 * len(pending)))
        for page in range(1, self.max_pages + 1):
            self.list_calls += 1
            items = await self._real_list(page, size)
            for item in items:
                if isinstance(item, dict) and str(item.get("task_id")) in pending:
                    pending.discard(str(item["task_id"]))
                    found.append(item)
            if not pending or len(items) < size:
                break
        return found

    async def _follow(self, status: SharedStatus) -> int:
        assert self._leader is not None
        ids = list(self._tracked)
        states = await status.read(ids)
        now = self._monotonic()
        lost = [
            tid for tid in ids if tid not in states and now - self._tracked[tid].since > self.stale
        ]
        if lost or (len(states) < len(ids) and not await self._someone_leads()):
            return await super().sweep()
        self.reads += 1
        self._past_deadline()
        before = {tid: e.task.task_status for tid, e in self._tracked.items()}
        published = set(states) & self._tracked.keys()
        self._served = [json.loads(value) for value in states.values()]
        try:
            if published:
                await self._sweep_list(published)
        finally:
            self._served = None
        return self._changed(before)

    async def _someone_leads(self) -> bool:
        assert self._leader is not None and self._status is not None
        link, key = self._status.link, self._leader.key
        with contextlib.suppress(CoordinatorUnavailableError):
            return bool(await link.call(lambda: link.client.exists(key)))
        return False
