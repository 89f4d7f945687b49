"""The one HTTP choke point: session, auth header (API origin only), timeouts, envelope parsing,
error mapping and the retry loop (with an injected sleep, so tests never wait)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiolimiter import AsyncLimiter

from ._auth import JwtSigner
from ._body import CreateBody
from ._config import DEFAULT_RETRY, DEFAULT_TIMEOUTS, RetryPolicy, Timeouts
from ._errors import (
    AuthenticationError,
    ClientClosedError,
    ConnectError,
    KlingError,
    RequestTimeoutError,
    ResponseValidationError,
    ServerError,
    TransportError,
    error_from_response,
)
from ._events import EventHook
from ._retry import Retries, Verdict, classify
from ._types import Clock, Sleep

__all__ = ["HttpLayer", "new_session", "parse_envelope"]

logger = logging.getLogger("kling_async")

#: The largest API answer we read (a 500-task list page is well under 1 MiB): no server may
#: make us buffer gigabytes.
MAX_ANSWER_BYTES = 16 * 1024 * 1024


def new_session(timeouts: Timeouts = DEFAULT_TIMEOUTS) -> aiohttp.ClientSession:
    """A session with no default headers: auth is added per API request, never to the CDN."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(
            total=timeouts.total, sock_connect=timeouts.connect, sock_read=timeouts.read
        ),
        connector=aiohttp.TCPConnector(limit=64),
        read_bufsize=1 << 20,
    )


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP-date: rare enough to fall back on our own back-off


async def _read_capped(resp: aiohttp.ClientResponse, what: str) -> bytes:
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


class HttpLayer:
    """Signs, sends, parses and retries API calls; owns (or borrows) the aiohttp session."""

    def __init__(
        self,
        *,
        base_url: str,
        signer: JwtSigner,
        session: aiohttp.ClientSession | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        retry: RetryPolicy = DEFAULT_RETRY,
        rps: float | None = None,
        sleep: Sleep = asyncio.sleep,
        monotonic: Clock = time.monotonic,
        event_hook: EventHook | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeouts = timeouts
        #: The policy, clocks, random source and event hook every retry loop of a client uses.
        self.retries = Retries(
            retry, sleep=sleep, monotonic=monotonic, rng=rng or random.Random(), hook=event_hook
        )
        self._signer = signer
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._limiter = AsyncLimiter(rps, 1.0) if rps else None
        self.requests_sent = 0

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session; ours is made lazily because aiohttp needs a running loop."""
        if self._closed:
            raise ClientClosedError("this client was closed (aclose()); make a new Client")
        if self._session is None:
            self._session = new_session(self.timeouts)
        return self._session

    @property
    def closed(self) -> bool:
        """True once `aclose()` was called: nothing more is sent."""
        return self._closed

    async def aclose(self) -> None:
        """Close the session if we made it; a borrowed one is the lender's to close."""
        self._closed = True
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: bytes | CreateBody | None = None,
        params: Mapping[str, str | int] | None = None,
        retry: bool = True,
    ) -> Any:
        """Send with retries (when `retry`), re-signing once on 1003/1004; return `data`."""
        resigned = False
        async for attempt in self.retries.attempts(method, path):
            try:
                data = await self.send_once(method, path, body=body, params=params)
            except KlingError as exc:
                verdict = classify(exc)
                if verdict is Verdict.RESIGN and not resigned:
                    resigned = True
                    self._signer.invalidate()
                    attempt.again()
                    continue
                if verdict is Verdict.RESIGN and isinstance(exc, AuthenticationError):
                    exc.args = (f"{exc.message} — refused twice; is this machine's clock right?",)
                    exc.message = exc.args[0]
                    raise
                if not retry or verdict is not Verdict.RETRY:
                    raise
                attempt.retry(exc)
        return data

    async def send_once(
        self,
        method: str,
        path: str,
        *,
        body: bytes | CreateBody | None = None,
        params: Mapping[str, str | int] | None = None,
    ) -> Any:
        """One request, no retry: map every failure onto the error tree.

        A `CreateBody` is streamed from its sources; if an image changed since it was checked,
        the body stops short (so the server cannot take it) and its InvalidRequestError is
        raised rather than the connection error that stopping short causes.
        """
        if self._limiter is not None:
            await self._limiter.acquire()
        headers = {"Authorization": self._signer.header(), "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        url = self.base_url + path
        data: bytes | io.BytesIO | CreateBody | None = body
        if isinstance(body, bytes) and len(body) > 1 << 20:
            data = io.BytesIO(body)  # aiohttp warns on raw bytes over 1 MiB; BytesIO is chunked
        started = time.perf_counter()
        self.requests_sent += 1
        try:
            async with self.session.request(
                method, url, data=data, params=params, headers=headers
            ) as resp:
                raw = await _read_capped(resp, f"{method} {path}")
                status, resp_headers = resp.status, resp.headers
        except (TimeoutError, aiohttp.ClientError) as exc:
            if isinstance(body, CreateBody) and body.failure is not None:
                raise body.failure from None
            raise self._transport_error(method, path, exc) from exc
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s %s → HTTP %d, %d bytes in %.1f ms",
                method,
                path,
                status,
                len(raw),
                (time.perf_counter() - started) * 1000,
            )
        return parse_envelope(status, raw, resp_headers)

    def _transport_error(self, method: str, path: str, exc: BaseException) -> TransportError:
        if isinstance(exc, TimeoutError):
            return RequestTimeoutError(f"{method} {path}: timed out")
        if isinstance(exc, aiohttp.ClientConnectorError):
            return ConnectError(f"{method} {path}: cannot connect to {self.base_url}")
        if isinstance(exc, aiohttp.ClientConnectionError):  # disconnected, reset, OS error…
            return ConnectError(f"{method} {path}: connection lost ({exc})")
        return TransportError(f"{method} {path}: {type(exc).__name__}: {exc}")
