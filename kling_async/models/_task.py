"""Response models: the envelope and the task. They tolerate fields Kling adds later."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from ._tolerant import ExternalId, Stamp, Text, as_status, readable_videos

__all__ = ["RETENTION", "Envelope", "Task", "TaskInfo", "TaskResult", "TaskStatus", "Video"]

#: Kling deletes generated videos this long after generation.
RETENTION = timedelta(days=30)


class TaskStatus(StrEnum):
    """A task's documented states: submitted → processing → succeed | failed."""

    SUBMITTED = "submitted"
    PROCESSING = "processing"
    SUCCEED = "succeed"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        """True for succeed and failed: the task no longer holds a concurrency slot."""
        return self in (TaskStatus.SUCCEED, TaskStatus.FAILED)


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Envelope(_Tolerant):
    """Every JSON answer: `code` 0 is success; error bodies may carry no `data`."""

    code: int
    message: str = ""
    request_id: str | None = None
    data: Any = None


class Video(_Tolerant):
    """One generated video: its id, its (expiring) URL and duration in seconds as a string."""

    id: Text = ""
    url: str
    watermark_url: str | None = None
    duration: Text | None = None


class TaskInfo(_Tolerant):
    """What Kling echoes back of the creation parameters."""

    external_task_id: ExternalId = None


class TaskResult(_Tolerant):
    """The result; `{}` (no videos) for a failed task."""

    videos: Annotated[list[Video], BeforeValidator(readable_videos)] = Field(default_factory=list)


class Task(_Tolerant):
    """A Multi-Image-to-Video task as a query reports it (the create answer is a subset).

    Answers are read by the tolerant reader's rules (`models/_tolerant.py`): numbers where the
    docs say string, timestamps in ms or s, missing timestamps (then `expires_at` is None).
    """

    task_id: Text = Field(min_length=1)
    task_status: Annotated[TaskStatus, BeforeValidator(as_status)]
    task_status_msg: Text | None = None
    task_info: TaskInfo = Field(default_factory=TaskInfo)
    task_result: TaskResult = Field(default_factory=TaskResult)
    final_unit_deduction: Text | None = None
    created_at: Stamp = None
    updated_at: Stamp = None

    @field_validator("task_info", "task_result", mode="before")
    @classmethod
    def _none_as_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("task_id")
    @classmethod
    def _id_is_path_safe(cls, value: str) -> str:
        if value in (".", ".."):  # it names the task in a URL path: "." / ".." would not
            raise ValueError(f"task_id {value!r} cannot name a task")
        return value

    @property
    def status(self) -> TaskStatus:
        """Shorthand for `task_status`."""
        return self.task_status

    @property
    def is_terminal(self) -> bool:
        """True once the task succeeded or failed."""
        return self.task_status.is_terminal

    @property
    def external_task_id(self) -> str | None:
        """The caller's own id for this task, if one was given at creation."""
        return self.task_info.external_task_id

    @property
    def videos(self) -> list[Video]:
        """The generated videos (empty until the task succeeds)."""
        return self.task_result.videos

    @property
    def expires_at(self) -> datetime | None:
        """When Kling deletes the videos: created_at + 30 days (the earlier, safer clock).

        None when the answer carried no created_at: the expiry is unknown (fetch such videos
        first).
        """
        if self.created_at is None:
            return None
        try:
            return self.created_at + RETENTION
        except OverflowError:  # created_at within 30 days of year 9999: never, in practice
            return datetime.max.replace(tzinfo=UTC)
