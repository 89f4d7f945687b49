"""Kling's answers read: a capped body, the envelope parsed, each failure named by the tree."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from ._errors import (
    ConnectError,
    RequestTimeoutError,
    ResponseValidationError,
    ServerError,
    TransportError,
    error_from_response,
)

__all__ = ["MAX_ANSWER_BYTES", "parse_envelope", "read_capped", "transport_error"]

#: The largest API answer we read (a 500-task list page is well under 1 MiB): no server may
#: make us buffer gigabytes.
MAX_ANSWER_BYTES = 16 * 1024 * 1024


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP-date: rare enough to fall back on our own back-off


async def read_capped(resp: aiohttp.ClientResponse, what: str) -> bytes:
    """The body, refused once it passes MAX_ANSWER_BYTES."""
    declared = resp.content_length
    chunks: list[bytes] = []
    size = 0 if declared is None else declared
    if size <= MAX_ANSWER_BYTES:
        size = 0
        async for chunk in resp.content.iter_any():
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                break
            chunks.append(chunk)
    if size > MAX_ANSWER_BYTES:
        raise ResponseValidationError(
            f"{what}: answer larger than {MAX_ANSWER_BYTES} bytes refused", status=resp.status
        )
    return b"".join(chunks)


def parse_envelope(status: int, body: bytes, headers: Mapping[str, str]) -> Any:
    """Return `data` of a successful answer, or raise the error the answer stands for."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested 100 000 deep
        payload = None
    code = payload.get("code") if isinstance(payload, dict) else None
    if not isinstance(code, int) or isinstance(code, bool):
        if status >= 500:
            raise ServerError(f"HTTP {status} without a Kling envelope", status=status, code=None)
        raise ResponseValidationError(
            f"HTTP {status}: answer is not a Kling envelope (no integer 'code')",
            status=status,
            body=body[:500].decode("utf-8", "replace"),
        )
    assert isinstance(payload, dict)
    if code != 0 or status >= 400:
        message = payload.get("message")
        request_id = payload.get("request_id")
        raise error_from_response(
            status=status,
            code=code if code != 0 else None,
            message=message[:1000] if isinstance(message, str) else "",  # bounded, whatever sent
            request_id=request_id[:200] if isinstance(request_id, str) else None,
            retry_after=_retry_after(headers),
        )
    return payload.get("data")


def transport_error(what: str, exc: BaseException, base_url: str) -> TransportError:
    """The error tree's name for a request (`what`: "METHOD path") that got no HTTP answer."""
    if isinstance(exc, TimeoutError):
        return RequestTimeoutError(f"{what}: timed out")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectError(f"{what}: cannot connect to {base_url}")
    if isinstance(exc, aiohttp.ClientConnectionError):  # disconnected, reset, OS error…
        return ConnectError(f"{what}: connection lost ({exc})")
    return TransportError(f"{what}: {type(exc).__name__}: {exc}")
