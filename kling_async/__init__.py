"""kling-async: an asyncio-native client for Kling AI's Multi-Image to Video API, for bulk work."""

from types import FunctionType

from ._auth import Credentials
from ._batch import Batch, run_batch
from ._batch_status import BatchStatus, FileProblem, batch_status
from ._callbacks import CallbackReceiver
from ._client import Client
from ._config import Limits, PollPolicy, RetryPolicy, Timeouts
from ._download_stream import DownloadResult
from ._errors import (
    AccountError,
    APIError,
    ApiUnreachableError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConcurrencyLimitError,
    ConfigurationError,
    ConnectError,
    ContentPolicyError,
    CoordinatorError,
    CoordinatorLostError,
    CoordinatorUnavailableError,
    CoordinatorUnreachableError,
    DiskFullError,
    DownloadError,
    DownloadHTTPError,
    FolderBusyError,
    InvalidRequestError,
    KlingError,
    OutputFolderError,
    RateLimitError,
    RequestTimeoutError,
    ResponseValidationError,
    ServerError,
    TaskError,
    TaskFailedError,
    TaskTimeoutError,
    TransportError,
    VideoExpiredError,
    VideoGoneError,
    VideoUnavailableError,
)
from ._events import (
    ApiHealthChanged,
    CallbackReceived,
    ConcurrencyBackoff,
    CoordinatorBack,
    CoordinatorLost,
    DownloadFinished,
    DownloadProgress,
    Event,
    EventHook,
    EventKind,
    JobRejected,
    RequestRetry,
    TaskFinished,
    TaskStatusChanged,
    TaskSubmitted,
    TaskUnreadable,
    UnitsOvershoot,
    VideoSkipped,
)
from ._images import EncodingCache, ImageInput
from ._journal import JobState
from ._journal_schema import JournalError
from ._preflight import PreflightReport, preflight
from ._prices import PriceTable
from ._records import FileRecord, JobError
from ._results import BatchResult
from ._stats import ClientStats
from .models import MultiImageToVideoRequest, Task, TaskPage, TaskStatus, Video

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AccountError",
    "ApiHealthChanged",
    "ApiUnreachableError",
    "AuthenticationError",
    "BadRequestError",
    "Batch",
    "BatchResult",
    "BatchStatus",
    "CallbackReceived",
    "CallbackReceiver",
    "Client",
    "ClientClosedError",
    "ClientStats",
    "ConcurrencyBackoff",
    "ConcurrencyLimitError",
    "ConfigurationError",
    "ConnectError",
    "ContentPolicyError",
    "CoordinatorBack",
    "CoordinatorError",
    "CoordinatorLost",
    "CoordinatorLostError",
    "CoordinatorUnavailableError",
    "CoordinatorUnreachableError",
    "Credentials",
    "DiskFullError",
    "DownloadError",
    "DownloadFinished",
    "DownloadHTTPError",
    "DownloadProgress",
    "DownloadResult",
    "EncodingCache",
    "Event",
    "EventHook",
    "EventKind",
    "FileProblem",
    "FileRecord",
    "FolderBusyError",
    "ImageInput",
    "InvalidRequestError",
    "JobError",
    "JobRejected",
    "JobState",
    "JournalError",
    "KlingError",
    "Limits",
    "MultiImageToVideoRequest",
    "OutputFolderError",
    "PollPolicy",
    "PreflightReport",
    "PriceTable",
    "RateLimitError",
    "RequestRetry",
    "RequestTimeoutError",
    "ResponseValidationError",
    "RetryPolicy",
    "ServerError",
    "Task",
    "TaskError",
    "TaskFailedError",
    "TaskFinished",
    "TaskPage",
    "TaskStatus",
    "TaskStatusChanged",
    "TaskSubmitted",
    "TaskTimeoutError",
    "TaskUnreadable",
    "Timeouts",
    "TransportError",
    "UnitsOvershoot",
    "Video",
    "VideoExpiredError",
    "VideoGoneError",
    "VideoSkipped",
    "VideoUnavailableError",
    "__version__",
    "batch_status",
    "preflight",
    "run_batch",
]


# Exported names show where users import them from (as httpx and anyio do): `kling_async.Task`,
# not `kling_async.models._task.Task`, in reprs, tracebacks and documentation.
for _obj in [globals()[name] for name in __all__]:
    if isinstance(_obj, type | FunctionType):
        _obj.__module__ = __name__
del _obj
