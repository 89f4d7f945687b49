"""Structured events: one hook a user can attach for logging, metrics or progress."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

__all__ = ["Event", "EventHook", "EventKind", "emit"]

logger = logging.getLogger("kling_async")

EventKind: TypeAlias = Literal[
    "request_retry",  # a call failed and will be retried after `delay`
    "concurrency_backoff",  # 1303: the slot gate shrank to `limit`
    "task_submitted",
    "task_status",  # a task's status changed
    "task_finished",
    "download_progress",
    "download_finished",
    "job_rejected",  # a bulk job was invalid and skipped
    "callback_received",  # a valid callback arrived: a status sweep follows (not trusted)
    "task_unreadable",  # an answer or list item about a task is off the documented shape
    "video_skipped",  # a video without url in an answer: left out of the task
]


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened; `data` holds plain values (never secrets)."""

    kind: EventKind
    data: dict[str, Any] = field(default_factory=dict)


EventHook: TypeAlias = Callable[[Event], None]


def emit(hook: EventHook | None, kind: EventKind, **data: Any) -> None:
    """Log the event at DEBUG and hand it to the user's hook; a failing hook never breaks us."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("%s %s", kind, data)
    if hook is None:
        return
    try:
        hook(Event(kind, data))
    except Exception:  # a user's hook must not take down a batch
        logger.exception("event hook raised on %s", kind)
