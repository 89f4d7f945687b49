"""The tolerant reader's rules: how an answer from Kling (or a look-alike server) is read.

Requests are strict (`_request.py`); answers are read by these rules, defined here only:

| what arrives                                          | read as                                  |
|-------------------------------------------------------|------------------------------------------|
| a number where the docs say string (`duration`,       | the documented string: 5 → "5",          |
| `final_unit_deduction`, ids, `task_status_msg`)       | 5.1 → "5.1", 5.0 → "5"                   |
| `created_at`/`updated_at` in epoch milliseconds       | as documented                            |
| … a value below 10¹¹ (seconds; 10¹¹ ms is 1973)       | epoch seconds                            |
| … a string of digits                                  | that number                              |
| … missing, null or 0                                  | unknown (so is the video's expiry)       |
| … an ISO 8601 time without offset                     | UTC                                      |
| `task_status` in another case, or padded              | lower-cased and stripped                 |
| `task_info`, `task_result` or `videos` null           | empty: no external id, no videos         |
| `external_task_id` ""                                 | none                                     |
| a video without `url` (missing, null or "")           | skipped, with a warning (`video_skipped`)|
| unknown fields anywhere                               | ignored                                  |
| anything else off the documented shape                | `ResponseValidationError` (field, value) |

A video skipped is a *note* of the reading: collected in the validation context when the
caller gives one (`read_task` does, then logs and emits it), logged here otherwise.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ValidationInfo

from .._events import Event, VideoSkipped

__all__ = [
    "SECONDS_BELOW",
    "ExternalId",
    "Note",
    "Stamp",
    "Text",
    "as_status",
    "as_text",
    "as_time",
    "epoch_seconds",
    "note",
    "readable_videos",
]

logger = logging.getLogger("kling_async")

#: An epoch timestamp below this is in seconds, at or above it in milliseconds: 10¹¹ ms is
#: March 1973 (no task is that old) and 10¹¹ s is the year 5138.
SECONDS_BELOW = 1e11
_NUMBER = re.compile(r"\s*-?\d+(\.\d+)?\s*")
#: A note of the reading: (event kind, message, event data).
#: (message, the event for it given the task id and where it was read).
Note = tuple[str, Callable[..., Event]]


def as_text(value: Any) -> Any:
    """A number where the docs say string becomes its documented string form."""
    if isinstance(value, bool):
        return value  # True is no duration: left for the type check to refuse
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else repr(value)
    return value


def epoch_seconds(value: Any) -> float | None:
    """Seconds since the epoch of a numeric timestamp (ms or s), or None if it is not one."""
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value) if abs(value) < SECONDS_BELOW else value / 1000
    except OverflowError:  # an int beyond float range: not a time, the caller says so
        return None


def as_time(value: Any) -> Any:
    """Epoch ms or s (or digits) become an aware datetime; missing, null and 0 become None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return value  # refused by the type check, naming the field
    if isinstance(value, str) and not _NUMBER.fullmatch(value):
        return value  # ISO 8601 or garbage: the type check decides
    seconds = epoch_seconds(value)
    if seconds == 0:
        return None  # "not set", as some servers write it
    try:
        if seconds is None:  # an int beyond float range
            raise OverflowError("out of range")
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:  # 1e300, inf, NaN: not a time
        raise ValueError(f"not a time in epoch ms or s ({exc})") from None


def _aware(value: datetime | None) -> datetime | None:
    # An ISO string without offset parses naive; compared with aware times it would raise.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def as_status(value: Any) -> Any:
    """`" Succeed "` reads as `succeed`; an unknown value stays unknown (and is refused)."""
    return value.strip().lower() if isinstance(value, str) else value


def note(info: ValidationInfo, message: str, event: Callable[..., Event]) -> None:
    """Record a note in the reading's context, or log it when read without one.

    `event(task_id=, source=, message=)` makes the event reported for it once the task is read.
    """
    notes = info.context.get("notes") if isinstance(info.context, dict) else None
    if isinstance(notes, list):
        notes.append((message, event))
    else:
        logger.warning("%s", message)


def readable_videos(value: Any, info: ValidationInfo) -> Any:
    """`videos: null` is no videos; a video object without a url is skipped with a note."""
    if value is None:
        return []
    if not isinstance(value, list):
        return value  # refused by the type check, naming the field
    kept = []
    for index, item in enumerate(value):
        if isinstance(item, dict) and item.get("url") in (None, ""):
            shown = as_text(item.get("id"))
            note(
                info,
                f"videos[{index}] (id {str(shown)[:60]!r}) has no url: skipped",
                partial(
                    VideoSkipped, index=index, video_id=shown if isinstance(shown, str) else None
                ),
            )
            continue
        kept.append(item)
    return kept


#: A string field that may arrive as a number.
Text = Annotated[str, BeforeValidator(as_text)]
#: The caller's own id: a number becomes its string, "" means none.
ExternalId = Annotated[str | None, BeforeValidator(as_text), AfterValidator(lambda v: v or None)]
#: created_at / updated_at: epoch ms or s, ISO 8601, or unknown (None).
Stamp = Annotated[datetime | None, BeforeValidator(as_time), AfterValidator(_aware)]
