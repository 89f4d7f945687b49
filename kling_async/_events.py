"""Structured events: one hook a user can attach for logging, metrics or progress.

Each event is a frozen dataclass of plain values (never a secret, never a signed URL); its
`kind` names it, so a hook may dispatch on `event.kind` or on the class:

```python
def hook(event: kling.Event) -> None:
    match event:
        case kling.TaskFinished(task_id=task_id, status=status):
            ...
        case kling.RequestRetry(attempt=n, delay=delay):
            ...
```
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal, TypeAlias

__all__ = [
    "ApiHealthChanged",
    "CallbackReceived",
    "ConcurrencyBackoff",
    "CoordinatorBack",
    "CoordinatorLost",
    "DownloadFinished",
    "DownloadProgress",
    "Event",
    "EventHook",
    "EventKind",
    "JobRejected",
    "RequestRetry",
    "TaskFinished",
    "TaskStatusChanged",
    "TaskSubmitted",
    "TaskUnreadable",
    "UnitsOvershoot",
    "VideoSkipped",
    "emit",
]

logger = logging.getLogger("kling_async")

EventKind: TypeAlias = Literal[
    "request_retry",
    "concurrency_backoff",
    "task_submitted",
    "task_status",
    "task_finished",
    "download_progress",
    "download_finished",
    "job_rejected",
    "callback_received",
    "task_unreadable",
    "video_skipped",
    "api_health",
    "units_overshoot",
    "coordinator_lost",
    "coordinator_back",
]


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened: `kind` names it, the fields of its class say what."""

    kind: ClassVar[EventKind]

    @property
    def data(self) -> dict[str, Any]:
        """The fields as a dict (what the DEBUG log shows)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class RequestRetry(Event):
    """A request failed and will be sent again after `delay` seconds.

    `path`: the API path, or the video's address without its query string; `attempt`: how many
    attempts have failed so far (1 for the first retry); `error`: the error's class name;
    `code`: Kling's business code, when it gave one.
    """

    kind: ClassVar[EventKind] = "request_retry"
    method: str
    path: str
    attempt: int
    delay: float
    error: str
    code: int | None


@dataclass(frozen=True, slots=True)
class ApiHealthChanged(Event):
    """The API stopped answering ("down": waiting for it), answers again ("up"), or was given
    up ("gave up": every later call fails); `message` is the one line to show."""

    kind: ClassVar[EventKind] = "api_health"
    health: str
    message: str


@dataclass(frozen=True, slots=True)
class ConcurrencyBackoff(Event):
    """1303: the account is full. The slot gate now allows `limit` slots; we hold `held`."""

    kind: ClassVar[EventKind] = "concurrency_backoff"
    limit: int
    held: int


@dataclass(frozen=True, slots=True)
class TaskSubmitted(Event):
    """Kling has the task (created now, or found under its external id after a lost answer)."""

    kind: ClassVar[EventKind] = "task_submitted"
    task_id: str
    external_task_id: str


@dataclass(frozen=True, slots=True)
class TaskStatusChanged(Event):
    """A followed task's `status` (a `TaskStatus` value) changed."""

    kind: ClassVar[EventKind] = "task_status"
    task_id: str
    status: str


@dataclass(frozen=True, slots=True)
class TaskFinished(Event):
    """A followed task was seen ending with `status` (`succeed` or `failed`)."""

    kind: ClassVar[EventKind] = "task_finished"
    task_id: str
    status: str


@dataclass(frozen=True, slots=True)
class DownloadProgress(Event):
    """`bytes` of video `index` of the task are on disk (`total`: None when not announced).

    Throttled: at most about two a second per video, plus the last one.
    """

    kind: ClassVar[EventKind] = "download_progress"
    task_id: str
    index: int
    bytes: int
    total: int | None


@dataclass(frozen=True, slots=True)
class DownloadFinished(Event):
    """Video `index` of the task was saved to `path` (`resumed_from`: bytes kept from a .part)."""

    kind: ClassVar[EventKind] = "download_finished"
    task_id: str
    index: int
    path: str
    bytes: int
    resumed_from: int


@dataclass(frozen=True, slots=True)
class JobRejected(Event):
    """A bulk job was not sent: invalid, or its id is taken (`line` of the jobs file; `error`)."""

    kind: ClassVar[EventKind] = "job_rejected"
    line: int | None
    error: str


@dataclass(frozen=True, slots=True)
class UnitsOvershoot(Event):
    """A task cost more units than estimated (`price_kind`, e.g. "kling-v1-6 pro 10 s"): the
    estimate of its kind is now `raised_to` (units as strings: exact)."""

    kind: ClassVar[EventKind] = "units_overshoot"
    task_id: str | None
    price_kind: str
    units: str
    estimate: str
    raised_to: str | None


@dataclass(frozen=True, slots=True)
class CallbackReceived(Event):
    """A valid callback arrived (unconfirmed: a query decides). `claimed_status`: what it said."""

    kind: ClassVar[EventKind] = "callback_received"
    task_id: str | None
    claimed_status: str | None


@dataclass(frozen=True, slots=True)
class TaskUnreadable(Event):
    """An answer or list item about a task is off the documented shape.

    `field` and `value` name what could not be read (`value`: a short repr of what was sent);
    `source`: `query`, `list`, `create`, …; `index`: the item's place in a list page.
    """

    kind: ClassVar[EventKind] = "task_unreadable"
    field: str | None
    value: str | None
    message: str
    task_id: str | None = None
    source: str | None = None
    index: int | None = None


@dataclass(frozen=True, slots=True)
class VideoSkipped(Event):
    """Video `index` of an answer had no url: it was left out of the task."""

    kind: ClassVar[EventKind] = "video_skipped"
    task_id: str
    source: str
    message: str
    index: int
    video_id: str | None


@dataclass(frozen=True, slots=True)
class CoordinatorLost(Event):
    """Redis stopped answering mid-run: creating pauses, following and downloading go on.

    `url`: the coordinator, its password masked; `lost_limit`: seconds after which, Redis
    still away, this client stops creating for good (`CoordinatorLostError`).
    """

    kind: ClassVar[EventKind] = "coordinator_lost"
    url: str
    lost_limit: float


@dataclass(frozen=True, slots=True)
class CoordinatorBack(Event):
    """Redis answers again after `after` seconds; creating resumes unless `gave_up` (it was
    away longer than the lost limit)."""

    kind: ClassVar[EventKind] = "coordinator_back"
    url: str
    after: float
    gave_up: bool


EventHook: TypeAlias = Callable[[Event], None]


def emit(hook: EventHook | None, event: Event) -> None:
    """Log the event at DEBUG and hand it to the user's hook; a failing hook never breaks us."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("%s %s", event.kind, event.data)
    if hook is None:
        return
    try:
        hook(event)
    except Exception:  # a user's hook must not take down a batch
        logger.exception("event hook raised on %s", event.kind)
