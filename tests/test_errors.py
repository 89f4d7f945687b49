"""The exception tree and the one (status, code) → class table (kling_async._errors)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kling_async import (
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
    Task,
    TaskError,
    TaskFailedError,
    TaskTimeoutError,
    TransportError,
    VideoExpiredError,
)
from kling_async._errors import error_from_response

# (HTTP status, code, class) — general.md's table, row by row.
DOCUMENTED = [
    (401, 1000, AuthenticationError),
    (401, 1001, AuthenticationError),
    (401, 1002, AuthenticationError),
    (401, 1003, AuthenticationError),
    (401, 1004, AuthenticationError),
    (429, 1100, AccountError),
    (429, 1101, AccountError),
    (429, 1102, AccountError),
    (403, 1103, AccountError),
    (400, 1200, BadRequestError),
    (400, 1201, BadRequestError),
    (404, 1202, BadRequestError),
    (404, 1203, BadRequestError),
    (400, 1300, ContentPolicyError),
    (400, 1301, ContentPolicyError),
    (429, 1302, RateLimitError),
    (429, 1303, ConcurrencyLimitError),
    (429, 1304, AccountError),
    (500, 5000, ServerError),
    (503, 5001, ServerError),
    (504, 5002, ServerError),
]


@pytest.mark.parametrize(("status", "code", "cls"), DOCUMENTED)
def test_documented_codes(status: int, code: int, cls: type[APIError]) -> None:
    err = error_from_response(status=status, code=code, message="m", request_id="rid-1")
    assert type(err) is cls
    assert (err.status, err.code, err.message, err.request_id) == (status, code, "m", "rid-1")
    assert "rid-1" in str(err)
    assert str(code) in str(err)
    assert isinstance(err, KlingError)


@pytest.mark.parametrize(("status", "code", "cls"), DOCUMENTED)
def test_code_beats_status(status: int, code: int, cls: type[APIError]) -> None:
    for other in (200, 400, 429, 500):
        assert type(error_from_response(status=other, code=code, message="", request_id=None)) is (
            cls
        )


def test_quirks() -> None:
    err = error_from_response(status=200, code=1201, message="bad", request_id="r")
    assert type(err) is BadRequestError
    err = error_from_response(status=429, code=1102, message="pack", request_id="r")
    assert type(err) is AccountError
    assert not isinstance(err, RateLimitError)
    assert type(error_from_response(status=429, code=1304, message="", request_id=None)) is (
        AccountError
    )


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (401, AuthenticationError),
        (403, AccountError),
        (429, RateLimitError),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (400, BadRequestError),
        (404, BadRequestError),
        (200, BadRequestError),
    ],
)
@pytest.mark.parametrize("code", [None, 4242, 9999])
def test_status_fallback(status: int, code: int | None, cls: type[APIError]) -> None:
    err = error_from_response(status=status, code=code, message="", request_id=None)
    assert type(err) is cls
    assert err.code == code
    assert err.message == "no message"


def test_rate_limit_carries_retry_after() -> None:
    err = error_from_response(status=429, code=1302, message="", request_id=None, retry_after=3.0)
    assert isinstance(err, RateLimitError)
    assert err.retry_after == 3.0
    err = error_from_response(status=429, code=1303, message="", request_id=None, retry_after=2)
    assert isinstance(err, ConcurrencyLimitError)
    assert err.retry_after == 2
    assert error_from_response(status=429, code=1302, message="", request_id=None).retry_after is (
        None
    )


def test_str_without_request_id() -> None:
    err = error_from_response(status=500, code=5000, message="boom", request_id=None)
    assert str(err) == "boom (HTTP 500, code 5000)"
    err = error_from_response(status=500, code=5000, message="boom", request_id="abc")
    assert str(err) == "boom (HTTP 500, code 5000, request_id=abc)"


def test_tree() -> None:
    assert issubclass(ConfigurationError, KlingError)
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(InvalidRequestError, ValueError)
    for cls in (ConnectError, RequestTimeoutError, ResponseValidationError):
        assert issubclass(cls, TransportError)
    assert issubclass(RequestTimeoutError, TimeoutError)
    for cls in (
        AuthenticationError,
        AccountError,
        BadRequestError,
        ContentPolicyError,
        RateLimitError,
        ServerError,
    ):
        assert issubclass(cls, APIError)
    assert issubclass(ConcurrencyLimitError, RateLimitError)
    assert issubclass(TaskFailedError, TaskError)
    assert issubclass(TaskTimeoutError, TaskError)
    assert issubclass(TaskTimeoutError, TimeoutError)
    assert issubclass(VideoExpiredError, DownloadError)
    for cls in (TransportError, APIError, TaskError, DownloadError):
        assert issubclass(cls, KlingError)


def _task(status: str, msg: str | None) -> Task:
    ms = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000)
    return Task.model_validate(
        {
            "task_id": "t1",
            "task_status": status,
            "task_status_msg": msg,
            "created_at": ms,
            "updated_at": ms,
        }
    )


def test_task_errors() -> None:
    failed = _task("failed", "Image pixel is invalid")
    err = TaskFailedError(failed)
    assert err.reason == "Image pixel is invalid"
    assert err.task is failed
    assert "t1" in str(err)
    assert "Image pixel is invalid" in str(err)
    assert TaskFailedError(_task("failed", None)).reason == "no reason given"
    timeout = TaskTimeoutError("late", task=failed)
    assert timeout.task is failed


def test_other_fields() -> None:
    err = InvalidRequestError("prompt: too long", field="prompt", limit="≤ 2500", value=3000)
    assert (err.field, err.limit, err.value) == ("prompt", "≤ 2500", 3000)
    bad = ResponseValidationError("x", status=200, body="y" * 1000)
    assert bad.status == 200
    assert len(bad.body) == 500
    assert DownloadError("d", url="http://cdn/x").url == "http://cdn/x"
