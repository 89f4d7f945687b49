"""The exception tree of kling-async, and the one table that maps Kling's answers onto it.

```
KlingError
├── ConfigurationError (also ValueError)    missing/invalid credentials or options; before any I/O
│   ├── OutputFolderError                   the output folder cannot be used (path and reason)
│   │   └── FolderBusyError                 another batch or process is writing to it
│   └── CoordinatorUnreachableError         (also CoordinatorError) bad URL / no Redis at start
├── ClientClosedError (also RuntimeError)   the Client was used after aclose()
├── InvalidRequestError (also ValueError)   a request breaks a documented limit; names the field
├── TransportError                          no usable HTTP answer
│   ├── ConnectError                        could not connect / connection reset
│   ├── RequestTimeoutError (also TimeoutError)
│   └── ResponseValidationError             an answer that is not the documented envelope/shape
├── APIError  .status .code .message .request_id
│   ├── AuthenticationError    401 / 1000–1004
│   ├── AccountError           1100–1103, 1304 (never retried)
│   ├── BadRequestError        1200–1203 / 400, 404
│   ├── ContentPolicyError     1300, 1301
│   ├── RateLimitError         1302, 1303 / 429  (.retry_after)
│   │   └── ConcurrencyLimitError   1303
│   └── ServerError            5000–5002 / 5xx
├── TaskError  .task
│   ├── TaskFailedError        task_status == failed (.reason)
│   └── TaskTimeoutError (also TimeoutError)  our deadline passed; the task may still finish
├── DownloadError  .url                       truncated, expired, refused, or not a video
│   ├── VideoExpiredError                     past Kling's 30-day retention
│   ├── DownloadHTTPError  .status            the CDN answered neither 200 nor 206
│   │   └── VideoUnavailableError             403/404/410: a stale URL (re-queried) or gone
│   │       └── VideoGoneError                410 (also VideoExpiredError): deleted by the CDN
│   └── DiskFullError                         no space left to save (ENOSPC, EDQUOT, EFBIG)
└── CoordinatorError                          the Redis coordinator shared by several processes
    ├── CoordinatorUnreachableError           (see above)
    └── CoordinatorUnavailableError           Redis lost mid-run: creates pause, following goes on
        └── CoordinatorLostError              away past ?lost_limit=: no more creates, for good
```

Which errors are retried is decided in `_retry.classify`, not here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import Task

__all__ = [
    "APIError",
    "AccountError",
    "ApiUnreachableError",
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "ConcurrencyLimitError",
    "ConfigurationError",
    "ConnectError",
    "ContentPolicyError",
    "CoordinatorError",
    "CoordinatorLostError",
    "CoordinatorUnavailableError",
    "CoordinatorUnreachableError",
    "DiskFullError",
    "DownloadError",
    "DownloadHTTPError",
    "FolderBusyError",
    "InvalidRequestError",
    "KlingError",
    "OutputFolderError",
    "RateLimitError",
    "RequestTimeoutError",
    "ResponseValidationError",
    "ServerError",
    "TaskError",
    "TaskFailedError",
    "TaskTimeoutError",
    "TransportError",
    "VideoExpiredError",
    "VideoGoneError",
    "VideoUnavailableError",
    "error_from_response",
    "is_no_such_task",
]


class KlingError(Exception):
    """Root of every error kling-async raises."""

    #: Seconds of the job timeout (`RetryPolicy.timeout`) that ended the retrying of this
    #: error, if it did (None: it ended for another reason).
    timed_out: float | None = None


class ConfigurationError(KlingError, ValueError):
    """Missing or invalid credentials or options, found before any I/O."""


class OutputFolderError(ConfigurationError):
    """The output folder cannot be used; the message names the path and the reason."""


class FolderBusyError(OutputFolderError):
    """Another process (or another batch of this one) is writing to the output folder."""


class ClientClosedError(KlingError, RuntimeError):
    """The Client was used after `aclose()` (or its `async with` block ended)."""


class InvalidRequestError(KlingError, ValueError):
    """A request breaks a documented limit; `field`, `limit` and `value` say which and how."""

    def __init__(
        self, message: str, *, field: str, limit: str | None = None, value: Any = None
    ) -> None:
        super().__init__(message)
        self.field = field
        self.limit = limit
        self.value = value


class TransportError(KlingError):
    """No usable HTTP answer (connection, timeout, or an answer that is not the API's)."""


class ConnectError(TransportError):
    """The connection could not be made, or was reset."""


class ApiUnreachableError(ConnectError):
    """The API never answered since start (about 10 s), or an outage passed its limit: every
    later call raises this at once, with the one message that says which URL and why."""


class RequestTimeoutError(TransportError, TimeoutError):
    """The request did not finish within its timeout."""


class ResponseValidationError(TransportError):
    """The server answered, but not with the documented envelope or task shape.

    For an unreadable task, `field` names the first field off the documented shape (e.g.
    `task_status`) and `value` is a short repr of what the server sent there.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: str = "",
        field: str | None = None,
        value: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body[:500]
        self.field = field
        self.value = value


class APIError(KlingError):
    """Kling answered with a business error code."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: int | None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id

    def __str__(self) -> str:
        rid = f", request_id={self.request_id}" if self.request_id else ""
        return f"{self.message} (HTTP {self.status}, code {self.code}{rid})"


class AuthenticationError(APIError):
    """401: the token or key was refused (codes 1000–1004)."""


class AccountError(APIError):
    """The account cannot run tasks: arrears, depleted pack, no permission, IP whitelist."""


class BadRequestError(APIError):
    """The request was refused as malformed or naming something that does not exist."""


class ContentPolicyError(APIError):
    """Kling's platform or content-security policy refused the input."""


class RateLimitError(APIError):
    """Too many requests (1302) or too many running tasks (1303); `retry_after` if given."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: int | None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, request_id=request_id)
        self.retry_after = retry_after


class ConcurrencyLimitError(RateLimitError):
    """1303: the account already runs as many tasks as its resource pack allows."""


class ServerError(APIError):
    """Kling's side failed (5000–5002 or a 5xx)."""


class TaskError(KlingError):
    """A task reached an outcome the caller did not want."""

    def __init__(self, message: str, *, task: Task) -> None:
        super().__init__(message)
        self.task = task


class TaskFailedError(TaskError):
    """The task ended as `failed`; `reason` is Kling's task_status_msg."""

    def __init__(self, task: Task) -> None:
        self.reason = task.task_status_msg or "no reason given"
        super().__init__(f"task {task.task_id} failed: {self.reason}", task=task)


class TaskTimeoutError(TaskError, TimeoutError):
    """Our deadline passed while waiting; the task itself may still finish."""


class DownloadError(KlingError):
    """A video could not be saved: truncated, refused, expired, or not a video."""

    def __init__(self, message: str, *, url: str = "") -> None:
        super().__init__(message)
        self.url = url


class VideoExpiredError(DownloadError):
    """The video is past Kling's retention period (30 days) and cannot be fetched any more."""


class DownloadHTTPError(DownloadError):
    """The CDN answered with a status that is not 200/206; `status` says which."""

    def __init__(self, message: str, *, url: str = "", status: int | None = None) -> None:
        super().__init__(message, url=url)
        self.status = status


class VideoUnavailableError(DownloadHTTPError):
    """403/404/410: the URL is stale or the video is gone; refresh the URL from a task query."""


class VideoGoneError(VideoUnavailableError, VideoExpiredError):
    """410 Gone: the CDN deleted the video, as it does after Kling's 30-day retention."""


class DiskFullError(DownloadError):
    """No space to save (ENOSPC, EDQUOT, EFBIG): nothing more fits until space is freed."""


class CoordinatorError(KlingError):
    """Root of the coordinator's errors."""


class CoordinatorUnreachableError(CoordinatorError, ConfigurationError):
    """The coordinator URL is malformed, or Redis did not answer at start."""


class CoordinatorUnavailableError(CoordinatorError):
    """Redis was lost mid-run: stop creating, keep following; it comes back by itself."""


class CoordinatorLostError(CoordinatorUnavailableError):
    """Redis stayed away longer than the URL's `lost_limit`: this client creates no more."""


# (first code, last code) → class; the business code decides before the HTTP status does.
_CODE_TABLE: tuple[tuple[int, int, type[APIError]], ...] = (
    (1000, 1004, AuthenticationError),
    (1100, 1103, AccountError),
    (1200, 1203, BadRequestError),
    (1300, 1301, ContentPolicyError),
    (1302, 1302, RateLimitError),
    (1303, 1303, ConcurrencyLimitError),
    (1304, 1304, AccountError),
    (5000, 5002, ServerError),
)


def _class_for(status: int, code: int | None) -> type[APIError]:
    if code is not None:
        for first, last, cls in _CODE_TABLE:
            if first <= code <= last:
                return cls
    if status == 401:
        return AuthenticationError
    if status == 403:
        return AccountError
    if status == 429:
        return RateLimitError
    if status >= 500:
        return ServerError
    return BadRequestError


def error_from_response(
    *,
    status: int,
    code: int | None,
    message: str,
    request_id: str | None,
    retry_after: float | None = None,
) -> APIError:
    """Build the right APIError for an answer: business code first, HTTP status second."""
    cls = _class_for(status, code)
    text = message or "no message"
    if issubclass(cls, RateLimitError):
        return cls(text, status=status, code=code, request_id=request_id, retry_after=retry_after)
    return cls(text, status=status, code=code, request_id=request_id)


def is_no_such_task(error: BaseException) -> bool:
    """Kling says the task (asked by task_id or external_task_id) does not exist: 1203 or 404."""
    return isinstance(error, APIError) and (error.code == 1203 or error.status == 404)
