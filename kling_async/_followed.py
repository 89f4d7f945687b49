"""One task the tracker follows: the caller's result apart from the slot's lifetime.

`done` is what a caller awaits (`wait()`, the batch); `ended` is how long the task holds a
concurrency slot (the client's gate and the batch release on it). They part only when answers
about the task cannot be read: after `limit` such answers in a row the caller is told
(ResponseValidationError), while the task is still followed, its slot held, until an answer shows
it finished or its deadline passes.

A callback saying the task ended (a *claim*) ends the slot's lifetime at once: Kling has freed
the slot, and a false claim costs at most one create that Kling refuses (1303). The caller's
result still waits for a query to confirm it; a query that contradicts the claim gives the task
a fresh `ended` (its slot is held again).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ._errors import ResponseValidationError
from .models import Task, TaskStatus
from .models._tolerant import as_status

__all__ = ["Followed"]

_TERMINAL = frozenset(status.value for status in TaskStatus if status.is_terminal)


def _retrieve(future: asyncio.Future[Any]) -> None:
    # A result nobody awaits (a submit() without wait()) must not log "never retrieved".
    if not future.cancelled():
        future.exception()


def _result() -> asyncio.Future[Task]:
    future: asyncio.Future[Task] = asyncio.get_running_loop().create_future()
    future.add_done_callback(_retrieve)
    return future


class Followed:
    """A tracked task: its latest view, since when we follow it, and its two futures."""

    __slots__ = ("claimed", "done", "ended", "error", "since", "task", "unreadable", "urgent")

    def __init__(self, task: Task, since: float) -> None:
        self.task = task
        self.since = since  # our monotonic clock when we started following (≈ submission)
        self.done = _result()  # the caller's result
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.unreadable = 0  # answers in a row that could not be read
        self.error: ResponseValidationError | None = None  # once the caller was told so
        self.claimed = False  # a callback said it ended; a query has not confirmed it yet
        self.urgent = False  # a caller (`wait()`) blocks on the result: confirm claims at once

    def claim(self) -> bool:
        """A callback says the task ended: its slot is free now. True if that is news."""
        if self.claimed:
            return False
        self.claimed = True
        if not self.ended.done():
            self.ended.set_result(None)
        return True

    def read(self, task: Task) -> Task:
        """Take a readable view; an answer without task_info keeps the external id we know."""
        if task.external_task_id is None and self.task.external_task_id is not None:
            task = task.model_copy(update={"task_info": self.task.task_info})
        self.task, self.unreadable, self.error = task, 0, None
        return task

    def contradicted(self) -> bool:
        """A query shows a claimed task still running: True if its slot is to be held again
        (it then has a fresh `ended`)."""
        if not self.claimed:
            return False
        self.claimed = False
        if not self.ended.done():
            return False
        self.ended = asyncio.get_running_loop().create_future()
        return True

    def stop(self, result: Task | None = None, error: BaseException | None = None) -> None:
        """No longer followed: the caller's result is settled and the slot's lifetime ends."""
        if not self.done.done():
            if result is not None:
                self.done.set_result(result)
            else:
                self.done.set_exception(error or RuntimeError("tracking stopped"))
        if not self.ended.done():
            self.ended.set_result(None)

    def cancel(self) -> None:
        """The tracker closes: both futures are cancelled."""
        self.done.cancel()
        self.ended.cancel()

    def unreadable_answer(self, exc: ResponseValidationError, status: Any, limit: int) -> bool:
        """Count one unreadable answer (its raw `status` if any); True once following is over.

        A raw status saying the task ended frees the slot (Kling no longer counts the task);
        the `limit`-th answer in a row fails the caller's result, and a later caller gets a
        fresh future while the task is still followed.
        """
        self.unreadable += 1
        terminal = as_status(status) in _TERMINAL
        if terminal and not self.ended.done():
            self.ended.set_result(None)
        if self.unreadable < limit:
            return False
        self.unreadable, self.error = 0, exc
        waiter, self.done = self.done, _result()
        if not waiter.done():
            waiter.set_exception(exc)
        if terminal:  # over at Kling: nothing is left to follow
            self.stop(error=exc)
        return terminal

    def past(self, deadline: float, now: float) -> bool:
        """True for a task whose caller was told it is unreadable, `deadline` s ago or more."""
        return self.error is not None and now >= self.since + deadline
