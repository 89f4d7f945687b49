"""The one HTTP choke point: session, auth header (API origin only), timeouts, envelope parsing,
error mapping and the retry loop (with an injected sleep, so tests never wait).

Around each request: a token from the client's adaptive request rate (its lane: creates or
status reads), the answer's `Date` for the server clock, the outcome for the API's health (an
`ApiHealthChanged` event when it changes), and 1302 or not for the rate.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import random
import time
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp
from aiolimiter import AsyncLimiter

from ._adaptive import RateRules
from ._auth import JwtSigner
from ._body import CreateBody
from ._config import DEFAULT_RETRY, DEFAULT_TIMEOUTS, RetryPolicy, Timeouts
from ._errors import (
    ApiUnreachableError,
    AuthenticationError,
    ClientClosedError,
    ConnectError,
    KlingError,
    RateLimitError,
    RequestTimeoutError,
    ResponseValidationError,
    ServerError,
    TransportError,
    error_from_response,
)
from ._events import ApiHealthChanged, EventHook, emit
from ._health import ApiHealth, Change, Health, HealthRules, Outcome, outcome_of
from ._request_rate import RequestRate
from ._retry import Retries, Verdict, classify
from ._server_time import ServerClock
from ._types import Clock, Sleep

__all__ = ["HttpLayer", "Limiter", "new_session", "parse_envelope"]

logger = logging.getLogger("kling_async")

#: While the API has not answered yet (or is down), a request in flight is looked at this often
#: (seconds): a hung request reports nothing, and the API must be given up on time.
WATCH_EVERY = 0.5

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


class Limiter(Protocol):
    """A fixed pace on every request: the user's `rps` ceiling, or the coordinator's shared rate."""

    async def acquire(self) -> None:
        """Wait for one request's token."""


def _small(body: bytes | CreateBody | None) -> bool:
    """True unless the request uploads more than 1 MiB (an upload may take a while)."""
    if body is None:
        return True
    size = len(body) if isinstance(body, bytes) else body.size
    return size is not None and size <= 1 << 20


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
        rate: RequestRate | None = None,
        server_clock: ServerClock | None = None,
        wall: Clock = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeouts = timeouts
        #: The API's health as this client sees it (never answered / up / down / given up).
        self.health = ApiHealth(
            self.base_url,
            HealthRules(outage_limit=retry.outage_limit),
        )
        #: The client's request rate: adaptive, with `rps` as a ceiling.
        self.rate = rate or RequestRate(RateRules(cap=rps), monotonic=monotonic, sleep=sleep)
        #: The server's time, learnt from the `Date` of every answer.
        self.server_clock = server_clock or ServerClock(wall=wall)
        #: The policy, clocks, random source and event hook every retry loop of a client uses.
        self.retries = Retries(
            retry,
            sleep=sleep,
            monotonic=monotonic,
            rng=rng or random.Random(),
            hook=event_hook,
            health=self.health,
        )
        self._signer = signer
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._monotonic = monotonic
        self._wall = wall
        self._hook = event_hook
        # The user's fixed ceiling is a plain leaky bucket, which aiolimiter does well; the
        # adaptive rate above learns, below it, what the server allows.
        self._limiter: Limiter | None = AsyncLimiter(rps, 1.0) if rps else None
        self.requests_sent = 0
        self.throttled = 0  # answers of 1302

    def pace_with(self, limiter: Limiter) -> None:
        """Take a token from `limiter` for every request from now on (a rate shared by several
        processes, which replaces the local ceiling), after the client's own adaptive rate."""
        self._limiter = limiter

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
        await self.rate.aclose()
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
        lane: str = "status",
    ) -> Any:
        """Send with retries (when `retry`), re-signing once on 1003/1004; return `data`.

        `lane`: the request rate's queue it waits in ("create" or "status"), which take turns.
        """
        resigned = False
        async for attempt in self.retries.attempts(method, path):
            try:
                data = await self.send_once(method, path, body=body, params=params, lane=lane)
            except KlingError as exc:
                verdict = classify(exc)
                if verdict is Verdict.RESIGN and not resigned:
                    resigned = True
                    self.server_clock.trust_latest()  # the refusal's Date is the server's time
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
        lane: str = "status",
    ) -> Any:
        """One request, no retry: map every failure onto the error tree.

        A `CreateBody` is streamed from its sources; if an image changed since it was checked,
        the body stops short (so the server cannot take it) and its InvalidRequestError is
        raised rather than the connection error that stopping short causes.
        """
        self._check_health()
        ticket = await self.rate.acquire(lane)
        if self._limiter is not None:
            await self._limiter.acquire()
        self._check_health()
        sent_at = self._monotonic()
        try:
            data = await self._watched(
                self._send(method, path, body=body, params=params), sent_at, _small(body)
            )
        except KlingError as exc:
            self._answered(exc, sent_at, ticket)
            raise
        self._answered(None, sent_at, ticket)
        return data

    def _check_health(self) -> None:
        gave_up = self.health.gave_up
        if gave_up is not None:
            raise ApiUnreachableError(gave_up.message)

    async def _watched(self, request: Any, sent_at: float, small: bool) -> Any:
        """Await `request`; while the API is not known to answer, give it up on time even if
        this request hangs (a timer rather than the read timeout decides).

        A `small` request (no large body to upload) unanswered for `never_worked` seconds
        counts as failed: a server that accepts connections and never answers is no API.
        """
        if self.health.health is Health.UP:
            return await request
        task = asyncio.ensure_future(request)
        hung = False
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=WATCH_EVERY)
                if done:
                    return task.result()
                now = self._monotonic()
                if small and not hung and now - sent_at >= self.health.rules.never_worked:
                    hung = True
                    error = f"no answer within {now - sent_at:.0f} s (requests hang)"
                    change = self.health.record(Outcome.TRANSPORT, now, error, sent_at=sent_at)
                else:
                    change = self.health.check(now)
                self._health_changed(change)
                self._check_health()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def _answered(self, error: KlingError | None, sent_at: float, ticket: float) -> None:
        """Tell the health, the rate and the server clock what this request's outcome says."""
        if isinstance(error, ApiUnreachableError):
            return  # our own verdict, not an outcome
        now = self._monotonic()
        self._health_changed(self.health.record(outcome_of(error), now, error, sent_at=sent_at))
        if isinstance(error, RateLimitError) and error.code == 1302:
            self.throttled += 1
            self.rate.on_throttled(ticket)
        elif outcome_of(error) is Outcome.ANSWERED:  # no answer says nothing about the rate
            self.rate.on_success()

    def _health_changed(self, change: Change | None) -> None:
        if change is not None:
            emit(self._hook, ApiHealthChanged(change.health.value, change.message))

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | CreateBody | None,
        params: Mapping[str, str | int] | None,
    ) -> Any:
        headers = {"Authorization": self._signer.header(), "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        url = self.base_url + path
        data: bytes | io.BytesIO | CreateBody | None = body
        if isinstance(body, bytes) and len(body) > 1 << 20:
            data = io.BytesIO(body)  # aiohttp warns on raw bytes over 1 MiB; BytesIO is chunked
        started = time.perf_counter()
        self.requests_sent += 1
        sent_wall = self._wall()
        try:
            async with self.session.request(
                method, url, data=data, params=params, headers=headers
            ) as resp:
                raw = await _read_capped(resp, f"{method} {path}")
                status, resp_headers = resp.status, resp.headers
            self.server_clock.observe(resp_headers.get("Date"), sent_wall, self._wall())
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
