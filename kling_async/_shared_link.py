"""RedisLink: one process's connection to the coordinator (Redis), for one Kling account.

Every key is namespaced as `ka:{<account>}:<name>`, where <account> is a hash of the access key
or API key (never the key itself), so two accounts can share one Redis; the braces make every
key of an account one Redis Cluster hash slot, as multi-key scripts need.

Failure behaviour: an unreachable Redis at start raises `CoordinatorUnreachableError` (a
`ConfigurationError`: rc 2 in the CLI). A connection lost later marks the link unavailable:
calls raise `CoordinatorUnavailableError` at once (nothing is half-done on our side), one
background loop pings with back-off, and when Redis answers again the link is available,
listeners are re-subscribed and the `on_change` callbacks run, so holders re-establish their
leases. redis-py's own retries are off: a lost answer must not silently run a script twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._auth import Credentials
from ._errors import (
    ConfigurationError,
    CoordinatorUnavailableError,
    CoordinatorUnreachableError,
)

__all__ = [
    "KeepAlive",
    "RedisLink",
    "account_id",
]

log = logging.getLogger("kling_async")

#: What a lost or refused connection looks like (BusyLoadingError is a ConnectionError).
_LOST = (RedisConnectionError, RedisTimeoutError, OSError)


def account_id(credentials: Credentials) -> str:
    """A stable, non-reversible name for the account: 16 hex digits of a SHA-256."""
    kind, key = (
        ("api", credentials.api_key) if credentials.api_key else ("ak", credentials.access_key)
    )
    if not key:
        raise ConfigurationError("the coordinator needs credentials to name the account")
    return hashlib.sha256(f"kling-async:{kind}:{key}".encode()).hexdigest()[:16]


def shown_url(url: str) -> str:
    """The URL without its password, fit for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    user = f"{parts.username}:***@" if parts.username else ":***@"
    netloc = f"{user}{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RedisLink:
    """Namespaced keys, script calls that fail clearly, availability, and one pub/sub loop."""

    def __init__(
        self,
        client: aioredis.Redis,
        account: str,
        *,
        url: str = "redis",
        reconnect_initial: float = 0.05,
        reconnect_max: float = 1.0,
    ) -> None:
        self.client = client
        self.account = account
        self.url = shown_url(url)
        self.available = True
        self._back = asyncio.Event()
        self._back.set()
        self._reconnect_initial, self._reconnect_max = reconnect_initial, reconnect_max
        self._recovering: asyncio.Task[None] | None = None
        self._on_change: list[Callable[[bool], None]] = []
        self._handlers: dict[str, list[Callable[[str], None]]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._closed = False  # loops check it: a cancel inside a redis-py call can be lost

    @classmethod
    async def connect(
        cls,
        url: str,
        account: str,
        *,
        connect_timeout: float = 5.0,
        socket_timeout: float = 5.0,
        **options: Any,
    ) -> RedisLink:
        """Open and check the connection; `CoordinatorUnreachableError` if Redis is not there."""
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise CoordinatorUnreachableError(
                f"coordinator URL {shown_url(url)!r}: expected redis://host:port/db "
                "(or rediss://, unix://)"
            )
        client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        try:
            await client.ping()
        except (*_LOST, ValueError) as exc:
            await client.aclose()
            raise CoordinatorUnreachableError(
                f"coordinator {shown_url(url)} is unreachable: {exc or type(exc).__name__}"
            ) from exc
        return cls(client, account, url=url, **options)

    def __repr__(self) -> str:
        return f"RedisLink({self.url!r}, account={self.account!r}, available={self.available})"

    def key(self, name: str) -> str:
        """This account's key (or channel) for `name`."""
        return f"ka:{{{self.account}}}:{name}"

    def script(self, source: str) -> AsyncScript:
        """Register a Lua script (EVALSHA, re-loaded by redis-py after a Redis restart)."""
        return self.client.register_script(source)

    def on_change(self, callback: Callable[[bool], None]) -> None:
        """Call `callback(available)` whenever the link is lost or comes back."""
        self._on_change.append(callback)

    async def run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a script; `CoordinatorUnavailableError` if Redis is (or just got) unreachable."""
        return await self.call(lambda: script(keys=keys, args=args))

    async def call(self, action: Callable[[], Awaitable[Any]]) -> Any:
        """Run one Redis call, turning a lost connection into `CoordinatorUnavailableError`."""
        if not self.available:
            raise CoordinatorUnavailableError(f"coordinator {self.url} is unavailable")
        try:
            return await action()
        except _LOST as exc:
            self.lost(exc)
            raise CoordinatorUnavailableError(
                f"coordinator {self.url} is unavailable: {exc or type(exc).__name__}"
            ) from exc

    def lost(self, exc: BaseException) -> None:
        """Mark the link unavailable and start pinging until Redis answers again."""
        if not self.available:
            return
        log.warning("coordinator %s unavailable (%s): not creating until it is back", self.url, exc)
        self.available = False
        self._back.clear()
        self._recovering = asyncio.ensure_future(self._recover())
        self._notify(False)

    async def wait_available(self) -> None:
        """Return once the link is available."""
        await self._back.wait()

    async def _recover(self) -> None:
        wait = self._reconnect_initial
        while not self._closed:
            await asyncio.sleep(wait)
            try:
                # Pooled connections to the old server are dead: start afresh, or the first
                # calls after the recovery would fail on them and mark the link lost again.
                await self.client.connection_pool.disconnect()
                await self.client.ping()
            except _LOST:
                wait = min(self._reconnect_max, wait * 2)
                continue
            log.warning("coordinator %s is back", self.url)
            self.available = True
            self._back.set()
            self._notify(True)
            return

    def _notify(self, available: bool) -> None:
        for callback in list(self._on_change):
            try:
                callback(available)
            except Exception:  # a listener's bug must not break the link
                log.exception("coordinator on_change callback failed")

    def listen(self, name: str, handler: Callable[[str], None]) -> None:
        """Call `handler(message)` for each message on this account's channel `name`."""
        self._handlers.setdefault(self.key(name), []).append(handler)
        if self._listener is not None:
            self._listener.cancel()  # re-subscribes with the new channel in the set
        self._listener = asyncio.ensure_future(self._listen())

    async def _listen(self) -> None:
        while not self._closed:
            await self.wait_available()
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(*self._handlers)
                # Messages sent while we were away are lost: wake every listener once.
                for channel in self._handlers:
                    self._dispatch(channel, "subscribed")
                while not self._closed:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        self._dispatch(message["channel"], message["data"])
            except _LOST:
                # Our own connection broke (Redis gone, or the pool renewed after a recovery):
                # the calls of the primitives decide availability; we only subscribe again.
                await asyncio.sleep(self._reconnect_initial)
            finally:
                with contextlib.suppress(*_LOST):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py: untyped

    def _dispatch(self, channel: str, message: str) -> None:
        for handler in self._handlers.get(channel, []):
            try:
                handler(message)
            except Exception:  # one bad handler must not stop the others or the listener
                log.exception("coordinator message handler failed")

    async def aclose(self) -> None:
        """Stop the listener and the reconnect loop; close the connection pool."""
        self._closed = True
        for task in (self._listener, self._recovering):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.client.aclose()


class KeepAlive:
    """One loop per owner: run `flush` every `interval` seconds, or at once after `poke()`.

    A flush that finds Redis unavailable is tried again as soon as it is back, so whatever the
    owner keeps pending (renewals, releases) reaches Redis exactly when it can.
    """

    def __init__(
        self, link: RedisLink, interval: float, flush: Callable[[], Awaitable[None]]
    ) -> None:
        self.link, self.interval, self._flush = link, interval, flush
        self._poked = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        link.on_change(self._changed)

    def start(self) -> None:
        """Start the loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def _changed(self, available: bool) -> None:
        if available:
            self.poke()

    def poke(self) -> None:
        """Flush now rather than at the next period."""
        self._poked.set()

    async def _run(self) -> None:
        # A flag, not only cancel(): redis-py may finish a call it was cancelled in and return
        # normally, so a cancel that lands during a flush is lost.
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._poked.wait()
            self._poked.clear()
            await self.link.wait_available()
            try:
                await self._flush()
            except CoordinatorUnavailableError:
                pass  # pending work stays pending; the link's recovery pokes us
            except Exception:
                log.exception("coordinator keep-alive failed; trying again")

    async def aclose(self) -> None:
        """Stop the loop (pending work is left to the TTLs)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
