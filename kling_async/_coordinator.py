"""Coordinator: one client's share of an account's budget in Redis (`Client(coordinator=URL)`).

Every process given the same Redis URL and the same credentials shares, through it:
- the concurrency slots (`SharedGate` over `SharedSlots`: leases with a TTL, one FIFO queue,
  the learned limit, the 1303 back-off and the upward probes);
- the adaptive request rate (`SharedTokens` in the client's `RequestRate`): one token bucket;
  a 1302 anywhere cuts it once for all, and every process follows that cut's recovery curve
  (`Limits.rps`, a ceiling, becomes the account's);
- status tracking (`SharedTracker`: an elected leader sweeps and publishes, the others read).

The URL is `redis://[:password@]host:port/db` (or rediss://, unix://), from the argument or
`KLING_COORDINATOR`; `?ttl=SECONDS` sets the lease TTL (default 15: a process killed with -9
gives its slots back within it; the status leader's TTL is 2/3 of it); `?lost_limit=SECONDS`
how long Redis may be away mid-run (default 600) before the client stops creating for good
(`CoordinatorLostError`; events `CoordinatorLost` / `CoordinatorBack` either way). redis-py
is imported only when a URL is given (`pip install 'kling-async[redis]'`). The connection is made on
`async with Client(...)` or the first create; Redis unreachable then is a
`CoordinatorUnreachableError` (a ConfigurationError: rc 2 in the CLI), the password masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ._auth import Credentials
from ._errors import ConfigurationError, CoordinatorLostError, CoordinatorUnavailableError
from ._events import CoordinatorBack, CoordinatorLost, EventHook, emit
from ._shared_gate import SharedGate
from ._shared_tracker import SharedTracker

if TYPE_CHECKING:
    from ._http import HttpLayer
    from ._shared_link import KeepAlive, RedisLink
    from ._shared_rate import SharedRate
    from ._shared_slots import SharedSlots
    from ._shared_status import LeaderLease, SharedStatus

__all__ = ["DEFAULT_LOST_LIMIT", "ENV", "Coordinator", "coordinator_url"]

#: The environment variable that names the coordinator when `Client(coordinator=)` does not.
ENV = "KLING_COORDINATOR"
_DEFAULT_TTL = 15.0
#: Seconds Redis may stay away mid-run before a client stops creating for good.
DEFAULT_LOST_LIMIT = 600.0
#: How often a process looks for a rate cut made by another (seconds).
_RATE_WATCH = 0.25
_PARAMS = {"ttl": (_DEFAULT_TTL, 3600.0), "lost_limit": (DEFAULT_LOST_LIMIT, float("inf"))}


def coordinator_url(given: str | None, environ: Mapping[str, str] | None) -> str | None:
    """The coordinator URL: the argument, else `KLING_COORDINATOR`; None: in-process only."""
    url = given if given is not None else (environ if environ is not None else os.environ).get(ENV)
    return (url.strip() or None) if url else None


def _split_params(url: str) -> tuple[str, dict[str, float]]:
    """The URL without our own parameters (redis-py would refuse them), and their values."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    values = {name: default for name, (default, _) in _PARAMS.items()}
    for name, value in query:
        if name in _PARAMS:
            top = _PARAMS[name][1]
            try:
                values[name] = float(value)
            except ValueError:
                values[name] = -1.0
            if not 0 < values[name] <= top:
                most = f" and at most {top:g}" if math.isfinite(top) else ""
                raise ConfigurationError(
                    f"coordinator URL: {name} must be seconds above 0{most}, got {value!r}"
                )
    rest = urlencode([(n, v) for n, v in query if n not in _PARAMS])
    return urlunsplit(parts._replace(query=rest)), values


class Coordinator:
    """Connects on first need and owns the shared parts of one client."""

    def __init__(
        self,
        url: str,
        credentials: Credentials,
        http: HttpLayer,
        tracker: SharedTracker,
        *,
        maximum: int,
        probe_interval: float,
        rps: float | None = None,
        event_hook: EventHook | None = None,
    ) -> None:
        self._url, params = _split_params(url)
        self.ttl, self.lost_limit = params["ttl"], params["lost_limit"]
        self._hook = event_hook
        self._rps = rps
        self._lost_at: float | None = None  # loop time Redis was lost, while it is away
        self._give_up: asyncio.TimerHandle | None = None
        self._credentials, self._http, self.tracker = credentials, http, tracker
        tracker.stale = 4 * self.ttl
        self.gate = SharedGate(self.connect, maximum, probe_interval=probe_interval)
        self.link: RedisLink | None = None
        self._slots: SharedSlots | None = None
        self._leader: LeaderLease | None = None
        self._status: SharedStatus | None = None
        self._refresher: KeepAlive | None = None
        self._rate_watch: KeepAlive | None = None
        self._jobs: set[asyncio.Future[None]] = set()
        self._lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        from ._shared_link import shown_url

        return f"Coordinator({shown_url(self._url)!r}, ttl={self.ttl:g})"

    async def connect(self) -> SharedSlots:
        """Connect once (later callers wait for it); the shared slots."""
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if self._slots is None:
                self._slots = await self._start()
            return self._slots

    async def _start(self) -> SharedSlots:
        try:
            from ._shared_link import KeepAlive, RedisLink, account_id
            from ._shared_rate import SharedRate
            from ._shared_slots import SharedSlots
            from ._shared_status import LeaderLease, SharedStatus
        except ImportError as exc:  # redis-py is an optional extra
            raise ConfigurationError(
                f"a coordinator needs redis-py ({exc}): pip install 'kling-async[redis]'"
            ) from None
        link = await RedisLink.connect(self._url, account_id(self._credentials))
        self.link = link
        link.on_change(self._availability)
        slots = SharedSlots(link, self.gate.maximum, ttl=self.ttl)
        self.gate.attach(slots)
        tracker = self.tracker
        self._leader = LeaderLease(link, ttl=self.ttl * 2 / 3, on_change=tracker.leadership)
        self._status = SharedStatus(link, watch_ttl=self.ttl, on_update=tracker.published)
        slots.start()
        self._status.start()
        self._leader.start()
        tracker.share(self._leader, self._status)
        # The leader learns others' tasks from their watches: often enough to cover a new one
        # before its first status matters, rarely enough to cost nothing (one call a second).
        self._refresher = KeepAlive(link, min(1.0, self.ttl / 3), tracker.refresh)
        self._refresher.start()
        self._share_rate(link, SharedRate(link))
        if self._rps:  # the user's ceiling is the account's: its own bucket, beside the adaptive
            self._http.pace_with(SharedRate(link, self._rps, name="rate:ceiling"))
        return slots

    def _share_rate(self, link: RedisLink, shared: SharedRate) -> None:
        """The client's adaptive rate takes its tokens from Redis and shares its cuts."""
        from ._shared_link import KeepAlive
        from ._shared_tokens import SharedTokens

        rate = self._http.rate
        tokens = SharedTokens(shared, adopt=rate.adopt)
        rules = rate.controller.rules

        async def share_cut(measured: float) -> None:
            with contextlib.suppress(CoordinatorUnavailableError):  # our own cut stands
                rate.adopt(*await tokens.cut(rules.beta, rules.window, measured))

        def on_cut(measured: float) -> None:
            job = asyncio.ensure_future(share_cut(measured))
            self._jobs.add(job)
            job.add_done_callback(self._jobs.discard)

        rate.share(tokens)
        rate.on_cut = on_cut
        # A process not throttled itself follows another's cut within this (one call each).
        self._rate_watch = KeepAlive(link, _RATE_WATCH, tokens.follow)
        self._rate_watch.start()

    def _availability(self, available: bool) -> None:
        """Redis lost or back: tell the user (events), and stop creating past the lost limit."""
        assert self.link is not None
        loop = asyncio.get_running_loop()
        if not available:
            self._lost_at = loop.time()
            if self._give_up is None and math.isfinite(self.lost_limit):
                self._give_up = loop.call_later(self.lost_limit, self._stop_creating)
            emit(self._hook, CoordinatorLost(self.link.url, self.lost_limit))
            return
        if self._lost_at is None:
            return
        after, self._lost_at = loop.time() - self._lost_at, None
        gave_up = self.gate.refused
        if self._give_up is not None and not gave_up:
            self._give_up.cancel()
            self._give_up = None
        emit(self._hook, CoordinatorBack(self.link.url, after, gave_up))

    def _stop_creating(self) -> None:
        assert self.link is not None
        self.gate.close(
            CoordinatorLostError(
                f"coordinator {self.link.url} unavailable for more than {self.lost_limit:g} s "
                "(lost_limit): no more creates from this run; running tasks are followed and "
                "downloaded, a rerun creates the rest"
            )
        )

    async def aclose(self) -> None:
        """Leave the queue, hand leadership over, stop the loops; leases expire by their TTL."""
        if self._give_up is not None:
            self._give_up.cancel()
        for job in self._jobs:
            job.cancel()
        for part in (self._rate_watch, self._refresher, self._leader, self._status, self._slots):
            if part is not None:
                with contextlib.suppress(Exception):  # closing must never fail the caller
                    await part.aclose()
        if self.link is not None:
            await self.link.aclose()
