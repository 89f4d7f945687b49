"""Answer shapes: switches that make the simulator write answers the way other servers do.

Recordings of Kling's own endpoints and of look-alike servers show answers that differ from the
documented shape. Each switch changes only how answers are *written*, never the task state:

| switch                | effect                                                                |
|-----------------------|-----------------------------------------------------------------------|
| `numbers_for_strings` | task_id, final_unit_deduction and duration sent as JSON numbers (the  |
|                       | duration in whole seconds, `"duration": 5`, as some endpoints send it)|
| `seconds_timestamps`  | created_at / updated_at in epoch seconds instead of milliseconds      |
| `missing_timestamps`  | no created_at / updated_at at all                                     |
| `echo_task_info`      | the create answer echoes `"task_info": {"external_task_id": null}`;   |
|                       | queries, lists and callbacks send `"task_info": {}`                   |
| `videos_null`         | a task without videos says `"videos": null` (failed: `task_result`    |
|                       | null)                                                                 |
| `video_without_url`   | a succeeded task also lists a video object without `url`              |
| `callback_id_status`  | callbacks in the newer `{id, status, …}` shape                        |
| `errors_under_200`    | business errors (1303, 1201, …) answered under HTTP 200               |
| `unreadable`          | `{external_task_id: field}`: that task's query/list/callback answers  |
|                       | carry an unreadable `created_at`, `task_status` or `videos`           |

Set them with `SimulatorConfig(shapes={...})`, `Simulator.control(shapes={...})` or
`POST /__sim/control {"shapes": {...}}` (a partial object changes only the switches it names).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["FLAGS", "UNREADABLE_FIELDS", "AnswerShapes", "check_shapes"]

FLAGS = (
    "numbers_for_strings",
    "seconds_timestamps",
    "missing_timestamps",
    "echo_task_info",
    "videos_null",
    "video_without_url",
    "callback_id_status",
    "errors_under_200",
)
#: What an `unreadable` task's answers carry in the named field.
UNREADABLE_FIELDS: Mapping[str, tuple[str, Any]] = {
    "created_at": ("created_at", "not a time"),
    "task_status": ("task_status", "in_queue"),
    "videos": ("task_result", {"videos": "none"}),
}


def check_shapes(settings: Any) -> dict[str, Any]:
    """Validate a shapes object; ValueError naming the bad switch or value."""
    if not isinstance(settings, Mapping):
        raise ValueError(f"shapes must be an object (got {settings!r})")
    checked: dict[str, Any] = {}
    for name, value in settings.items():
        if name == "unreadable":
            if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and v in UNREADABLE_FIELDS for k, v in value.items()
            ):
                fields = ", ".join(UNREADABLE_FIELDS)
                raise ValueError(f"shapes.unreadable must map external ids to one of {fields}")
            checked[name] = dict(value)
        elif name in FLAGS:
            if not isinstance(value, bool):
                raise ValueError(f"shapes.{name} must be a boolean (got {value!r})")
            checked[name] = value
        else:
            raise ValueError(f"unknown shape switch {name!r}; expected one of {', '.join(FLAGS)}")
    return checked


def _number(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text else value


class AnswerShapes:
    """The current switches, and the hooks the answer builders call."""

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self.flags: dict[str, bool] = dict.fromkeys(FLAGS, False)
        self.unreadable: dict[str, str] = {}
        self.update(settings or {})

    def update(self, settings: Mapping[str, Any]) -> None:
        """Apply (validated) switches; the ones not named keep their value."""
        checked = check_shapes(settings)
        self.unreadable = checked.pop("unreadable", self.unreadable)
        self.flags.update(checked)

    def as_dict(self) -> dict[str, Any]:
        """The switches that are on, for /__sim/stats."""
        on: dict[str, Any] = {name: True for name, value in self.flags.items() if value}
        if self.unreadable:
            on["unreadable"] = dict(self.unreadable)
        return on

    def _common(self, data: dict[str, Any]) -> dict[str, Any]:
        flags = self.flags
        if flags["numbers_for_strings"]:
            data["task_id"] = _number(data["task_id"])
            if "final_unit_deduction" in data:
                data["final_unit_deduction"] = _number(data["final_unit_deduction"])
            for video in (data.get("task_result") or {}).get("videos") or ():
                video["duration"] = int(float(video["duration"]))
        if flags["missing_timestamps"]:
            data.pop("created_at", None)
            data.pop("updated_at", None)
        elif flags["seconds_timestamps"]:
            for key in ("created_at", "updated_at"):
                data[key] = data[key] // 1000
        return data

    def created(self, data: dict[str, Any]) -> dict[str, Any]:
        """The `data` of a create answer."""
        if self.flags["echo_task_info"]:
            data["task_info"] = {"external_task_id": None}
        return self._common(data)

    def task(self, data: dict[str, Any], external_task_id: str | None) -> dict[str, Any]:
        """A task object of a query, a list or a callback."""
        flags = self.flags
        result = data.get("task_result") or {}
        if flags["video_without_url"] and result.get("videos"):
            result["videos"].append({"id": "no-url-" + str(data["task_id"]), "duration": "5"})
        if flags["videos_null"] and not result.get("videos"):
            data["task_result"] = None if data["task_status"] == "failed" else {"videos": None}
        if flags["echo_task_info"]:
            data["task_info"] = {}
        data = self._common(data)
        field = self.unreadable.get(external_task_id or "")
        if field is not None:
            key, value = UNREADABLE_FIELDS[field]
            data[key] = value
        return data

    def callback(self, data: dict[str, Any]) -> dict[str, Any]:
        """A callback body (already shaped as a task)."""
        if not self.flags["callback_id_status"]:
            return data
        shaped = {"id": data.pop("task_id"), "status": data.pop("task_status")}
        return {**shaped, **data}

    def error_status(self, status: int) -> int:
        """The HTTP status of a business error's answer."""
        return 200 if self.flags["errors_under_200"] else status
