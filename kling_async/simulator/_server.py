"""The Simulator: starts both origins and exposes settings, counters and helpers in-process."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from types import TracebackType
from typing import Any

import jwt
from aiohttp import web

from ._app import build_api_app
from ._clock import SimClock
from ._config import SimulatorConfig
from ._control import apply_control, describe
from ._core import WATERMARK_SUFFIX, Core
from ._faults import FaultInjector
from ._persist import SavedState
from ._stats import SimulatorStats
from ._videos import build_video_app

__all__ = ["BindError", "Simulator"]

_SHUTDOWN_TIMEOUT = 1.0


class BindError(OSError):
    """An origin could not listen on its address (port in use, not allowed, …); names which."""

    def __init__(self, origin: str, host: str, port: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.origin, self.host, self.port = origin, host, port

    def __str__(self) -> str:
        where = f"the {self.origin} port {self.port} on {self.host}"
        if self.errno == errno.EADDRINUSE:
            return f"{where} is already in use"
        return f"{where}: {self.strerror}"


def _bind(host: str, port: int, origin: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BindError(origin, host, port, exc) from exc
    sock.setblocking(False)
    return sock


def _bind_video(host: str, port: int, saved_port: int | None) -> socket.socket:
    """The video origin's socket: on the saved port when restarting, so that video links handed
    out before still work (a free port if that one is taken now: new links work, old ones not)."""
    if not port and saved_port:
        with contextlib.suppress(BindError):
            return _bind(host, saved_port, "video")
    return _bind(host, port, "video")


class _ApiListener:
    """The API origin's listening side, which an outage closes and opens again."""

    def __init__(self, runner: web.AppRunner, site: web.SockSite, host: str, port: int) -> None:
        self.runner, self.site, self.host, self.port = runner, site, host, port

    async def close(self) -> None:
        """Stop listening (connections are refused) and drop the connections still open."""
        await self.site.stop()
        server = self.runner.server
        if server is not None:
            for handler in server.connections:
                handler.force_close()

    async def reopen(self) -> None:
        """Listen again on the same port (retried briefly while the old socket lets go)."""
        for _ in range(100):
            try:
                sock = _bind(self.host, self.port, "API")
                break
            except BindError:
                await asyncio.sleep(0.05)
        else:
            sock = _bind(self.host, self.port, "API")
        self.site = web.SockSite(self.runner, sock)
        await self.site.start()


def _origin(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Simulator:
    """A local Kling Multi-Image to Video server: ``async with Simulator(...) as sim: sim.url``."""

    def __init__(self, config: SimulatorConfig | None = None, **overrides: Any) -> None:
        base = config or SimulatorConfig()
        self._config = base.replace(**overrides) if overrides else base
        self._core = Core(self._config)
        path = self._config.state_path
        self._saved = SavedState(path) if path is not None else None
        self._runners: list[web.AppRunner] = []
        self._url = ""
        self._stopped = False

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> Simulator:
        """Bind both origins (ephemeral ports by default) and start serving."""
        if self._runners or self._stopped:
            raise RuntimeError("a Simulator starts once; create a new one instead")
        cfg = self._config
        saved_port = self._saved.load() if self._saved else None
        api_sock = _bind(cfg.host, cfg.port, "API")
        try:
            video_sock = _bind_video(cfg.host, cfg.video_port, saved_port)
        except OSError:
            api_sock.close()
            raise
        self._url = _origin(cfg.host, api_sock)
        self._core.video_base = _origin(cfg.host, video_sock)
        try:
            if self._saved is not None:
                self._saved.attach(self._core.store, video_sock.getsockname()[1])
            for app, sock in (
                (build_api_app(self._core), api_sock),
                (build_video_app(self._core), video_sock),
            ):
                runner = web.AppRunner(
                    app,
                    access_log=None,
                    handler_cancellation=True,
                    shutdown_timeout=_SHUTDOWN_TIMEOUT,
                )
                await runner.setup()
                self._runners.append(runner)
                site = web.SockSite(runner, sock)
                await site.start()
                if sock is api_sock:
                    host, port = cfg.host, api_sock.getsockname()[1]
                    self._core.outage.listener = _ApiListener(runner, site, host, port)
            self._core.outage.schedule(cfg.outages)
        except BaseException:
            await self.stop()
            api_sock.close()
            video_sock.close()
            raise
        return self

    async def stop(self) -> None:
        """Stop serving: end stalls, cancel timers and callbacks, close both origins."""
        self._stopped = True
        core = self._core
        core.stopping.set()
        await core.outage.close()
        core.store.close()
        if self._saved is not None:
            self._saved.close()
        await core.callbacks.close()
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()

    async def __aenter__(self) -> Simulator:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- addresses and credentials ------------------------------------------------------------

    @property
    def config(self) -> SimulatorConfig:
        """The configuration the simulator started with (runtime changes are not reflected)."""
        return self._config

    @property
    def url(self) -> str:
        """Base URL of the API origin, e.g. ``http://127.0.0.1:PORT``."""
        return self._url

    @property
    def video_url(self) -> str:
        """Base URL of the separate video origin."""
        return self._core.video_base

    @property
    def access_key(self) -> str:
        """The accepted access key (JWT ``iss``)."""
        return self._config.access_key

    @property
    def secret_key(self) -> str:
        """The HS256 signing secret."""
        return self._config.secret_key

    @property
    def api_key(self) -> str | None:
        """The single API key accepted directly as bearer token, if configured."""
        return self._config.api_key

    def make_token(self, lifetime: float = 1800.0) -> str:
        """A JWT as the official snippet makes it, dated by the simulator clock."""
        now = int(self._core.clock.now() if self._config.auth_uses_sim_clock else time.time())
        claims = {"iss": self.access_key, "exp": now + int(lifetime), "nbf": now - 5}
        return jwt.encode(claims, self.secret_key, headers={"alg": "HS256", "typ": "JWT"})

    def auth_headers(self) -> dict[str, str]:
        """``{"Authorization": "Bearer <fresh JWT>"}``."""
        return {"Authorization": f"Bearer {self.make_token()}"}

    # -- runtime state ------------------------------------------------------------------------

    @property
    def stats(self) -> SimulatorStats:
        """Live counters (``.as_dict()`` for a snapshot)."""
        return self._core.stats

    def reset_stats(self) -> None:
        """Zero the counters (tasks and slots stay)."""
        self._core.stats.reset()

    @property
    def faults(self) -> FaultInjector:
        """The runtime fault plan: ``set_rate``, ``script``, ``clear``."""
        return self._core.faults

    @property
    def clock(self) -> SimClock:
        """The simulator clock (wall time + offset)."""
        return self._core.clock

    def advance(self, seconds: float) -> None:
        """Move the simulator clock forward (retention, JWT times, timestamps, and the running
        tasks' lifecycles: one past its finish time ends now)."""
        apply_control(self._core, {"advance": seconds})

    @property
    def concurrency(self) -> int:
        """The account's concurrent-task cap (settable at runtime)."""
        return self._core.store.concurrency

    @concurrency.setter
    def concurrency(self, value: int) -> None:
        apply_control(self._core, {"concurrency": value})

    @property
    def held_slots(self) -> int:
        """Slots held by "someone else" on the account (settable at runtime)."""
        return self._core.store.held_slots

    @held_slots.setter
    def held_slots(self, value: int) -> None:
        apply_control(self._core, {"held_slots": value})

    @property
    def rate_limit(self) -> float | None:
        """Requests per second over all API routes, or None (settable at runtime)."""
        return self._core.rate_limit

    @rate_limit.setter
    def rate_limit(self, value: float | None) -> None:
        apply_control(self._core, {"rate_limit": value})

    def outage(self, seconds: float, *, mode: str | None = None) -> None:
        """Take the API origin down for `seconds`, then bring it back on the same port; 0 ends
        an outage now. `mode`: "refuse" (nothing listens; the default unless configured) or
        "hang" (connections accepted, never answered). Needs the running event loop."""
        self._core.outage.start(seconds, mode)

    async def switched(self) -> None:
        """Wait until the API origin has closed or reopened as the last outage change asked."""
        await self._core.outage.settled()

    @property
    def down(self) -> bool:
        """True during an outage of the API origin."""
        return self._core.outage.down

    def control(self, **settings: Any) -> dict[str, Any]:
        """Apply settings as ``POST /__sim/control`` would; return stats and settings."""
        apply_control(self._core, settings)
        return describe(self._core)

    def task(self, ident: str) -> dict[str, Any] | None:
        """The task object a single query would answer now (by task_id or external id)."""
        task = self._core.store.get(ident)
        return None if task is None else self._core.task_json(task)

    # -- videos -------------------------------------------------------------------------------

    def video_size(self, video_id: str, *, watermark: bool = False) -> int:
        """Byte length of the video served for ``video_id``."""
        return self._core.content.size(video_id + (WATERMARK_SUFFIX if watermark else ""))

    def video_sha256(self, video_id: str, *, watermark: bool = False) -> str:
        """Hex sha256 of the video bytes served for ``video_id``."""
        return self._core.content.sha256(video_id + (WATERMARK_SUFFIX if watermark else ""))

    def __repr__(self) -> str:
        return f"Simulator(url={self._url!r}, video_url={self.video_url!r})"
