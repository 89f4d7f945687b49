"""Pydantic v2 wire models: requests forbid unknown fields, responses tolerate them."""

from ._read import TaskPage, read_page, read_task, report_unreadable
from ._request import (
    MAX_IMAGES,
    MAX_PROMPT_CHARS,
    AspectRatio,
    Duration,
    ImageLike,
    ImageParser,
    Mode,
    ModelName,
    MultiImageToVideoRequest,
)
from ._task import RETENTION, Envelope, Task, TaskInfo, TaskResult, TaskStatus, Video
from ._tolerant import SECONDS_BELOW, epoch_seconds

__all__ = [
    "MAX_IMAGES",
    "MAX_PROMPT_CHARS",
    "RETENTION",
    "SECONDS_BELOW",
    "AspectRatio",
    "Duration",
    "Envelope",
    "ImageLike",
    "ImageParser",
    "Mode",
    "ModelName",
    "MultiImageToVideoRequest",
    "Task",
    "TaskInfo",
    "TaskPage",
    "TaskResult",
    "TaskStatus",
    "Video",
    "epoch_seconds",
    "read_page",
    "read_task",
    "report_unreadable",
]
