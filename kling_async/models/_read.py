"""Reading tasks from answers: the tolerant rules applied, and what they could not read named.

Every task the client takes from an answer (create, query, list, lookup) goes through
`read_task` or `read_page`; a field off the documented shape raises `ResponseValidationError`
naming that field and showing (a short repr of) the offending value.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from .._errors import ResponseValidationError
from .._events import EventHook, TaskUnreadable, emit
from ._task import Task
from ._tolerant import Note

__all__ = ["TaskPage", "read_page", "read_task", "report_unreadable", "shown", "unreadable"]

logger = logging.getLogger("kling_async")

#: Long enough to recognise a value, short enough that no answer floods a message or a log.
_SHOWN = 80


def shown(value: Any) -> str:
    """A short repr of a value a server sent (never more than ~80 characters)."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _field(loc: tuple[int | str, ...]) -> str:
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def _task_id(data: Any) -> str | None:
    tid = data.get("task_id") if isinstance(data, dict) else None
    return None if tid is None or isinstance(tid, dict | list) else str(tid)[:80]


def unreadable(exc: ValidationError, what: str, data: Any) -> ResponseValidationError:
    """The error for an answer off the documented task shape: first field, its value, why."""
    first = exc.errors(include_url=False)[0]
    field = _field(first["loc"])
    tid = _task_id(data)
    where = f"{what}: task {tid}" if tid else what
    if first["type"] == "missing":
        return ResponseValidationError(
            f"{where}: required field {field!r} is missing", field=field, value=None
        )
    value = shown(first.get("input"))
    reason = first["msg"].removeprefix("Value error, ")
    return ResponseValidationError(
        f"{where}: cannot read {field or 'the task'} = {value}: {reason}",
        field=field or None,
        value=value,
    )


def _report(notes: list[Note], task: Task, what: str, hook: EventHook | None) -> None:
    for message, event in notes:
        logger.warning("%s: task %s: %s", what, task.task_id, message)
        emit(hook, event(task_id=task.task_id, source=what, message=message))


def read_task(data: Any, what: str, *, hook: EventHook | None = None) -> Task:
    """Read one task by the tolerant rules; warnings (a video without url) logged and emitted."""
    notes: list[Note] = []
    try:
        task = Task.model_validate(data, context={"notes": notes})
    except ValidationError as exc:
        raise unreadable(exc, what, data) from None
    _report(notes, task, what, hook)
    return task


class TaskPage(list[Task]):
    """One list page: the tasks that could be read; `unreadable` holds an error per other item.

    A page with an odd item still gives every readable task; each unreadable item is also
    logged (warning) and reported as a `task_unreadable` event.
    """

    def __init__(self, tasks: list[Task], unreadable: list[ResponseValidationError]) -> None:
        super().__init__(tasks)
        self.unreadable = unreadable

    @property
    def items(self) -> int:
        """How many items the server sent (readable or not): paging goes by this."""
        return len(self) + len(self.unreadable)


def read_page(items: list[Any], what: str, *, hook: EventHook | None = None) -> TaskPage:
    """Read every item of a list page; an unreadable one is reported and left out."""
    tasks: list[Task] = []
    bad: list[ResponseValidationError] = []
    for index, item in enumerate(items):
        try:
            tasks.append(read_task(item, f"{what} item {index}", hook=hook))
        except ResponseValidationError as exc:
            bad.append(exc)
            report_unreadable(exc, hook, task_id=_task_id(item), source=what, index=index)
    return TaskPage(tasks, bad)


def report_unreadable(
    exc: ResponseValidationError,
    hook: EventHook | None,
    *,
    level: int = logging.WARNING,
    task_id: str | None = None,
    source: str | None = None,
    index: int | None = None,
) -> None:
    """Log an unreadable answer and emit `TaskUnreadable` (field, value, message)."""
    logger.log(level, "unreadable answer: %s", exc)
    emit(hook, TaskUnreadable(exc.field, exc.value, str(exc), task_id, source, index))
