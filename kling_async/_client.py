"""Client: the public entry point; builds the shared session, gate and tracker, and closes them."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from functools import partial
from types import TracebackType
from typing import Any, Self, cast

import aiohttp

from ._auth import Credentials, JwtSigner, base_url_from_env
from ._client_tasks import TaskOperations
from ._config import (
    DEFAULT_LIMITS,
    DEFAULT_POLL,
    DEFAULT_RETRY,
    DEFAULT_TIMEOUTS,
    Limits,
    PollPolicy,
    RetryPolicy,
    Timeouts,
)
from ._coordinator import Coordinator, coordinator_url
from ._events import EventHook
from ._gate import Gate
from ._health import ApiHealth, check_base_url
from ._http import HttpLayer
from ._images import EncodingCache
from ._limits import SlotGate
from ._poll import TaskTracker
from ._queries import list_raw, query_raw
from ._request_rate import RequestRate
from ._server_time import ServerClock
from ._shared_tracker import SharedTracker
from ._slots import Slots
from ._stats import ClientStats
from ._types import Clock, Sleep

__all__ = ["Client"]


class Client(TaskOperations):
    """An async Kling client; use as `async with Client(...) as client:` and share it widely."""

    def __init__(
        self,
        credentials: Credentials | None = None,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        retry: RetryPolicy = DEFAULT_RETRY,
        poll: PollPolicy = DEFAULT_POLL,
        limits: Limits = DEFAULT_LIMITS,
        event_hook: EventHook | None = None,
        callback_url: str | None = None,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        environ: Mapping[str, str] | None = None,
        coordinator: str | None = None,
    ) -> None:
        self.credentials = credentials or Credentials.from_env(
            access_key, secret_key, api_key, environ=environ
        )
        self.base_url = check_base_url(
            base_url or base_url_from_env(environ),
            what="base_url" if base_url else "KLING_BASE_URL",
        ).rstrip("/")
        self.timeouts, self.retry, self.poll, self.limits = timeouts, retry, poll, limits
        self.event_hook = event_hook
        #: Given to every submitted request that has none (e.g. a CallbackReceiver's url).
        self.callback_url = callback_url
        self._clock = clock
        rng = random.Random()
        #: The server's time, learnt from the `Date` of every answer: tokens are signed by it
        #: and video expiry is judged by it, so a machine whose clock is off still works.
        self.server_clock = ServerClock(wall=clock)
        self._http = HttpLayer(
            base_url=self.base_url,
            signer=JwtSigner(self.credentials, clock=self.server_clock.server_now),
            session=session,
            timeouts=timeouts,
            retry=retry,
            rps=limits.rps,
            sleep=sleep,
            monotonic=monotonic,
            event_hook=self._emit,
            rng=rng,
            server_clock=self.server_clock,
            wall=clock,
        )
        url = coordinator_url(coordinator, environ)  # several processes, one budget in Redis
        tracker_type = TaskTracker if url is None else SharedTracker
        self._tracker = tracker_type(
            list_page=partial(list_raw, self._http),
            get_one=partial(query_raw, self._http),
            policy=poll,
            page_size=limits.page_size,
            sleep=sleep,
            monotonic=monotonic,
            event_hook=self._emit,
            creates_runway=self._creates_runway,
        )
        self._coordinator = (
            None
            if url is None
            else Coordinator(
                url,
                self.credentials,
                self._http,
                cast(SharedTracker, self._tracker),
                maximum=limits.concurrency,
                probe_interval=limits.probe_interval or 30.0,
                rps=limits.rps,
                event_hook=self._emit,
            )
        )
        self._gate: Gate = (
            self._coordinator.gate
            if self._coordinator
            else SlotGate(
                limits.concurrency,
                probe_interval=limits.probe_interval or 30.0,
                # 1303 with nothing of ours running: the documented back-off (≥ 1 s) comes first.
                first_wait=min(retry.concurrency_wait_initial, limits.probe_interval or 30.0),
                slow_start=True,
                monotonic=monotonic,
                rng=rng,
            )
        )
        self._http.rate.on_drained = self._drained
        self._slots = Slots(
            self._gate, self._tracker, self._http.retries, probe_interval=limits.probe_interval
        )
        self.encodings = EncodingCache()

    def _creates_runway(self, followed: int) -> float:
        # The slots our followed tasks do not hold are creates still to be sent (see
        # RequestRate.runway): the tracker sweeps once they are about used up. Slots free
        # account-wide are not known to one of several processes: only its own count then.
        gate = self._gate
        free = 0 if self._coordinator else max(0, gate.limit - gate.in_use)
        return self._http.rate.runway("create", max(0, gate.in_use - followed) + free, free)

    def _drained(self, lane: str) -> None:
        if lane == "create":  # sweeps were spaced out behind queued creates: plan anew
            self._tracker.replan()

    @classmethod
    def from_env(cls, **options: Any) -> Client:
        """Credentials and base URL from KLING_* variables; keyword options as for `Client`."""
        return cls(**options)

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r}, credentials={self.credentials!r})"

    async def __aenter__(self) -> Self:
        self._check_open()
        if self._coordinator is not None:
            try:  # unreachable: CoordinatorUnreachableError now, not at the first create
                await self._coordinator.connect()
            except BaseException:
                await self.aclose()
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop following tasks and close our session (never a borrowed one); the client
        cannot be used afterwards (`ClientClosedError`)."""
        await self._tracker.aclose()
        if self._coordinator is not None:
            await self._coordinator.aclose()
        await self._http.aclose()

    @property
    def closed(self) -> bool:
        """True once `aclose()` was called."""
        return self._http.closed

    @property
    def health(self) -> ApiHealth:
        """The API's health as this client sees it: never answered, up, down, or given up."""
        return self._http.health

    @property
    def request_rate(self) -> RequestRate:
        """The adaptive request rate all this client's API requests share (`.state()`)."""
        return self._http.rate

    @property
    def slot_limit(self) -> int:
        """How many concurrency slots may be held now (lowered by 1303, raised by probes)."""
        return self._gate.limit

    @property
    def stats(self) -> ClientStats:
        """What the client has done so far: requests, sweeps, the slot gate, encodings."""
        gate, tracker = self._gate, self._tracker
        return ClientStats(
            requests_sent=self._http.requests_sent,
            sweeps=tracker.sweeps,
            list_calls=tracker.list_calls,
            get_calls=tracker.get_calls,
            following=len(tracker),
            slots_in_use=gate.in_use,
            slot_limit=gate.limit,
            slot_peak=gate.peak,
            rejections=gate.rejections,
            probes=gate.probes,
            encoding_hits=self.encodings.hits,
            encoding_misses=self.encodings.misses,
        )
