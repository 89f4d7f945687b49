"""The one HTTP choke point: session, auth header (API origin only), timeouts and the retry loop
(with an injected sleep, so tests never wait).

Around each request: a token from the client's adaptive request rate (its lane: creates or
status reads), the answer's `Date` for the server clock, then its envelope parsed and any
failure mapped onto the error tree (`_envelope`), and the outcome told to the API's health and
the rate (`_http_outcomes`).
"""

from __future__ import annotations

import asyncio
import io
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
from ._envelope import parse_envelope, read_capped, transport_error
from ._errors import AuthenticationError, ClientClosedError, KlingError
from ._events import EventHook
from ._health import ApiHealth, HealthRules
from ._http_outcomes import RequestOutcomes
from ._request_rate import RequestRate
from ._retry import Retries, Verdict, classify
from ._server_time import ServerClock
from ._types import Clock, Sleep

__all__ = ["HttpLayer", "Limiter", "new_session"]

logger = logging.getLogger("kling_async")


def new_session(timeouts: Timeouts = DEFAULT_TIMEOUTS) -> aiohttp.ClientSession:
    """A session with no default headers: auth is added per API request, never to the CDN."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(
            total=timeouts.total, sock_connect=timeouts.connect, sock_read=timeouts.read
        ),
        connector=aiohttp.TCPConnector(limit=64),
        read_bufsize=1 << 20,
    )


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


class HttpLayer(RequestOutcomes):
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
        #: The client's request rate, learnt from 1302 (the `rps` ceiling is the limiter below).
        self.rate = rate or RequestRate(RateRules(), monotonic=monotonic, sleep=sleep)
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
                raw = await read_capped(resp, f"{method} {path}")
                status, resp_headers = resp.status, resp.headers
            self.server_clock.observe(resp_headers.get("Date"), sent_wall, self._wall())
        except (TimeoutError, aiohttp.ClientError) as exc:
            if isinstance(body, CreateBody) and body.failure is not None:
                raise body.failure from None
            raise transport_error(f"{method} {path}", exc, self.base_url) from exc
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
