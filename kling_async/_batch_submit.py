"""One job's create as the batch sees it: created, refused, unknown, fatal, or abandoned."""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from ._errors import (
    AccountError,
    APIError,
    ApiUnreachableError,
    AuthenticationError,
    CoordinatorLostError,
    InvalidRequestError,
    KlingError,
    is_no_such_task,
)
from ._retry import Verdict, classify
from .models import MultiImageToVideoRequest, Task

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["CreateOutcome", "Outcome", "create_for_batch", "lookup_external"]


class Outcome(Enum):
    """What a create attempt means for the job's journal row."""

    CREATED = "created"  # Kling has the task (perhaps adopted from a lost earlier answer)
    REJECTED = "rejected"  # refused for this job only (invalid, policy): never billed, final
    UNSUBMITTED = "unsubmitted"  # transient or unknown outcome: a rerun asks, then creates
    FATAL = "fatal"  # account, credentials, a dead API, coordinator lost: every later create too
    ABANDONED = "abandoned"  # the batch stopped while this job waited for a slot


@dataclass(frozen=True, slots=True)
class CreateOutcome:
    """The outcome, the task when there is one, and the error behind a refusal."""

    outcome: Outcome
    task: Task | None = None
    adopted: bool = False  # found by external id after an abandoned POST: nobody tracks it yet
    error: KlingError | None = None
    #: The created task's end, taken as the client began following it (None when adopted).
    done: asyncio.Future[Task] | None = None


async def lookup_external(client: Client, external_id: str) -> Task | None:
    """The task Kling holds under this external id, or None if it has none (1203)."""
    try:
        return await client.get_task(external_id)
    except APIError as exc:
        if is_no_such_task(exc):
            return None
        raise


class _StopWatch:
    """The creates waiting on one `stopped` event: a single waiter cancels them all once it is
    set (not two tasks, `asyncio.wait` and `gather` per create)."""

    def __init__(self, stopped: asyncio.Event) -> None:
        self._stopped = stopped
        self._waiting: set[asyncio.Task[Any]] = set()
        self.stopping: set[asyncio.Task[Any]] = set()  # cancelled by the watcher
        self._watcher: asyncio.Task[None] | None = None

    def enter(self, task: asyncio.Task[Any]) -> None:
        self._waiting.add(task)
        if self._watcher is None:
            self._watcher = asyncio.ensure_future(self._watch())

    def leave(self, task: asyncio.Task[Any]) -> None:
        self._waiting.discard(task)
        self.stopping.discard(task)
        if not self._waiting and self._watcher is not None:  # nothing left to stop
            self._watcher.cancel()
            self._watcher = None

    async def _watch(self) -> None:
        await self._stopped.wait()
        self._watcher = None
        for task in self._waiting:
            self.stopping.add(task)
            task.cancel()


_WATCHES: weakref.WeakKeyDictionary[asyncio.Event, _StopWatch] = weakref.WeakKeyDictionary()


async def _submit_unless_stopped(
    client: Client, request: MultiImageToVideoRequest, ext: str, stopped: asyncio.Event
) -> tuple[Task | None, asyncio.Future[Task] | None]:
    """`client.submit` (and the future of the task's end), abandoned if `stopped` is set while
    it waits for a slot.

    Abandoned mid-POST, the create may still have happened: ask Kling by external id and adopt
    the task (no future: nobody follows it yet), or return None when it does not exist (the
    row stays `submitting`; a rerun asks again before creating).
    """
    task = asyncio.current_task()
    assert task is not None
    if not stopped.is_set():
        watch = _WATCHES.get(stopped) or _WATCHES.setdefault(stopped, _StopWatch(stopped))
        watch.enter(task)
        try:
            # The future now: the task may end while the batch writes its journal row.
            created = await client._submit_followed(request, adopt_existing=True)
        except asyncio.CancelledError:
            if task not in watch.stopping or task.uncancel() > 0:  # not (only) the stop's
                raise
        else:
            if task in watch.stopping:  # the stop's cancellation was swallowed: forget it
                task.uncancel()
            return created
        finally:
            watch.leave(task)
    return await lookup_external(client, ext), None


async def create_for_batch(
    client: Client, request: MultiImageToVideoRequest, ext: str, stopped: asyncio.Event
) -> CreateOutcome:
    """Create the job's task once and say what the attempt means for the job."""
    try:
        task, done = await _submit_unless_stopped(client, request, ext, stopped)
    except InvalidRequestError as exc:
        return CreateOutcome(Outcome.REJECTED, error=exc)
    except (AccountError, AuthenticationError, ApiUnreachableError, CoordinatorLostError) as exc:
        return CreateOutcome(Outcome.FATAL, error=exc)
    except APIError as exc:
        # 5xx / 1302 past every retry are transient: not "rejected" for good (a rerun skips
        # those), so the row stays `submitting` and a rerun asks Kling, then sends.
        kind = Outcome.UNSUBMITTED if classify(exc) is Verdict.RETRY else Outcome.REJECTED
        return CreateOutcome(kind, error=exc)
    except KlingError as exc:  # outcome unknown even after reconciling: a rerun decides
        return CreateOutcome(Outcome.UNSUBMITTED, error=exc)
    if task is None:
        return CreateOutcome(Outcome.ABANDONED)
    return CreateOutcome(Outcome.CREATED, task, adopted=done is None, done=done)
