"""Coordinator: one client's share of an account's budget in Redis (`Client(coordinator=URL)`).

Every process given the same Redis URL and the same credentials shares, through it:
- the concurrency slots (`SharedGate` over `SharedSlots`: leases with a TTL, one FIFO queue,
  the learned limit, the 1303 back-off and the upward probes);
- the request rate (`Limits.rps` becomes the account's rate, not each process's: `SharedRate`);
- status tracking (`SharedTracker`: an elected leader sweeps and publishes, the others read).

The URL is `redis://[:password@]host:port/db` (or rediss://, unix://), from the argument or
`KLING_COORDINATOR`; `?ttl=SECONDS` sets the lease TTL (default 15: a process killed with -9
gives its slots back within it; the status leader's TTL is 2/3 of it). redis-py is imported
only when a URL is given (`pip install 'kling-async[redis]'`). The connection is made on
`async with Client(...)` or the first create; Redis unreachable then is a
`CoordinatorUnreachableError` (a ConfigurationError: rc 2 in the CLI), the password masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ._auth import Credentials
from ._errors import ConfigurationError
from ._shared_gate import SharedGate
from ._shared_tracker import SharedTracker

if TYPE_CHECKING:
    from ._http import HttpLayer
    from ._shared_link import KeepAlive, RedisLink
    from ._shared_slots import SharedSlots
    from ._shared_status import LeaderLease, SharedStatus

__all__ = ["ENV", "Coordinator", "coordinator_url"]

#: The environment variable that names the coordinator when `Client(coordinator=)` does not.
ENV = "KLING_COORDINATOR"
_DEFAULT_TTL = 15.0


def coordinator_url(given: str | None, environ: Mapping[str, str] | None) -> str | None:
    """The coordinator URL: the argument, else `KLING_COORDINATOR`; None: in-process only."""
    url = given if given is not None else (environ if environ is not None else os.environ).get(ENV)
    return (url.strip() or None) if url else None


def _split_ttl(url: str) -> tuple[str, float]:
    """The URL without our own `ttl` parameter (redis-py would refuse it), and the TTL."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ttl = _DEFAULT_TTL
    for name, value in query:
        if name == "ttl":
            try:
                ttl = float(value)
            except ValueError:
                ttl = -1.0
            if not 0 < ttl < 3600:
                raise ConfigurationError(
                    f"coordinator URL: ttl must be seconds between 0 and 3600, got {value!r}"
                )
    rest = urlencode([(n, v) for n, v in query if n != "ttl"])
    return urlunsplit(parts._replace(query=rest)), ttl


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
        rps: float | None,
    ) -> None:
        self._url, self.ttl = _split_ttl(url)
        self._credentials, self._http, self.tracker = credentials, http, tracker
        self._rps = rps
        tracker.stale = 4 * self.ttl
        self.gate = SharedGate(self.connect, maximum, probe_interval=probe_interval)
        self.link: RedisLink | None = None
        self._slots: SharedSlots | None = None
        self._leader: LeaderLease | None = None
        self._status: SharedStatus | None = None
        self._refresher: KeepAlive | None = None
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
        if self._rps:
            self._http.pace_with(SharedRate(link, self._rps))
        return slots

    async def aclose(self) -> None:
        """Leave the queue, hand leadership over, stop the loops; leases expire by their TTL."""
        for part in (self._refresher, self._leader, self._status, self._slots):
            if part is not None:
                with contextlib.suppress(Exception):  # closing must never fail the caller
                    await part.aclose()
        if self.link is not None:
            await self.link.aclose()
