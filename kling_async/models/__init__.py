"""Pydantic v2 wire models: requests forbid unknown fields, responses tolerate them."""

from ._request import (
    MAX_IMAGES,
    MAX_PROMPT_CHARS,
    AspectRatio,
    Duration,
    ImageLike,
    Mode,
    ModelName,
    MultiImageToVideoRequest,
)
from ._task import RETENTION, Envelope, Task, TaskInfo, TaskResult, TaskStatus, Video

__all__ = [
    "MAX_IMAGES",
    "MAX_PROMPT_CHARS",
    "RETENTION",
    "AspectRatio",
    "Duration",
    "Envelope",
    "ImageLike",
    "Mode",
    "ModelName",
    "MultiImageToVideoRequest",
    "Task",
    "TaskInfo",
    "TaskResult",
    "TaskStatus",
    "Video",
]
