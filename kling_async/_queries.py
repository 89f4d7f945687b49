"""Reading tasks back: one task by id, one page of the list; arguments checked before sending."""

from __future__ import annotations

from typing import Any

from ._create import CREATE_PATH, task_path
from ._errors import InvalidRequestError, ResponseValidationError
from ._http import HttpLayer

__all__ = ["check_page", "check_task_id", "list_raw", "query_raw"]


def check_task_id(task_id: str) -> None:
    """InvalidRequestError for an id no task can have (empty, a path, `.` or `..`)."""
    if not task_id or "/" in task_id or task_id in (".", ".."):
        raise InvalidRequestError(f"task_id: invalid id {task_id!r}", field="task_id")


def check_page(page_num: int, page_size: int) -> None:
    """InvalidRequestError unless 1 ≤ page_num ≤ 1000 and 1 ≤ page_size ≤ 500 (the API's)."""
    for name, value, high in (("page_num", page_num, 1000), ("page_size", page_size, 500)):
        if not 1 <= value <= high:
            raise InvalidRequestError(
                f"{name} must be in [1, {high}], got {value}",
                field=name,
                limit=f"[1, {high}]",
                value=value,
            )


async def query_raw(http: HttpLayer, task_id: str) -> Any:
    """The `data` of one task's query (by task_id or external_task_id), not yet read."""
    return await http.call("GET", task_path(task_id))


async def list_raw(http: HttpLayer, page_num: int, page_size: int) -> list[Any]:
    """The items of one list page, not yet read (the tolerant reader decides each)."""
    params = {"pageNum": page_num, "pageSize": page_size}
    data = await http.call("GET", CREATE_PATH, params=params)
    if not isinstance(data, list):
        raise ResponseValidationError(f"list: expected an array, got {type(data).__name__}")
    return data
