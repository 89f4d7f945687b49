"""Pydantic v2 wire models: requests forbid unknown fields, responses tolerate them."""

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

__all__ = [
    "MAX_IMAGES",
    "MAX_PROMPT_CHARS",
    "RETENTION",
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
    "TaskResult",
    "TaskStatus",
    "Video",
]
