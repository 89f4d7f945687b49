"""kling-async: an asyncio-native client for Kling AI's Multi-Image to Video API, for bulk work."""

from ._auth import Credentials
from ._batch import Batch, run_batch
from ._batch_io import BatchResult
from ._batch_status import BatchStatus, FileProblem, batch_status
from ._callbacks import CallbackReceiver
from ._client import Client
from ._config import Limits, PollPolicy, RetryPolicy, Timeouts
from ._errors import (
    AccountError,
    APIError,
    AuthenticationError,
    BadRequestError,
    ConcurrencyLimitError,
    ConfigurationError,
    ConnectError,
    ContentPolicyError,
    DownloadError,
    InvalidRequestError,
    KlingError,
    RateLimitError,
    RequestTimeoutError,
    ResponseValidationError,
    ServerError,
    TaskError,
    TaskFailedError,
    TaskTimeoutError,
    TransportError,
    VideoExpiredError,
)
from ._events import Event, EventHook
from ._folder import FolderBusyError, OutputFolderError
from ._images import EncodingCache, ImageInput
from ._journal_schema import JournalError
from ._preflight import PreflightReport, preflight
from ._prices import PriceTable
from .models import MultiImageToVideoRequest, Task, TaskPage, TaskStatus, Video

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AccountError",
    "AuthenticationError",
    "BadRequestError",
    "Batch",
    "BatchResult",
    "BatchStatus",
    "CallbackReceiver",
    "Client",
    "ConcurrencyLimitError",
    "ConfigurationError",
    "ConnectError",
    "ContentPolicyError",
    "Credentials",
    "DownloadError",
    "EncodingCache",
    "Event",
    "EventHook",
    "FileProblem",
    "FolderBusyError",
    "ImageInput",
    "InvalidRequestError",
    "JournalError",
    "KlingError",
    "Limits",
    "MultiImageToVideoRequest",
    "OutputFolderError",
    "PollPolicy",
    "PreflightReport",
    "PriceTable",
    "RateLimitError",
    "RequestTimeoutError",
    "ResponseValidationError",
    "RetryPolicy",
    "ServerError",
    "Task",
    "TaskError",
    "TaskFailedError",
    "TaskPage",
    "TaskStatus",
    "TaskTimeoutError",
    "Timeouts",
    "TransportError",
    "Video",
    "VideoExpiredError",
    "__version__",
    "batch_status",
    "preflight",
    "run_batch",
]
