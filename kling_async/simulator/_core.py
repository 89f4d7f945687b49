"""The shared state behind both origins: clock, tasks, faults, rate limit, links, rendering."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections import deque
from collections.abc import Mapping
from email.utils import formatdate
from typing import Any

from ._auth import Authenticator
from ._callbacks import CallbackSender
from ._clock import SimClock
from ._config import SimulatorConfig
from ._content import VideoContent
from ._faults import FaultInjector
from ._outage import OutageSwitch
from ._protocol import SimError
from ._shapes import AnswerShapes
from ._state import Task, TaskStore
from ._stats import SimulatorStats

__all__ = ["WATERMARK_SUFFIX", "Core"]

WATERMARK_SUFFIX = "-wm"


class Core:
    """Everything the API and video apps share; one per Simulator."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.clock = SimClock(config.clock_offset)
        self.stats = SimulatorStats()
        self.faults = FaultInjector(config.faults, seed=config.seed)
        self.content = VideoContent(config.video_bytes)
        self.callbacks = CallbackSender(
            self.stats,
            enabled=config.callbacks,
            duplicate=config.duplicate_callbacks,
            timeout=config.callback_timeout,
        )
        self.store = TaskStore(config, self.clock, self.stats, on_change=self._on_change)
        self.rate_limit = config.rate_limit
        self.shapes = AnswerShapes(config.shapes)
        self.auth = Authenticator(config.access_key, config.secret_key, config.api_key)
        self.retention_ms = int(config.retention_days * 86_400_000)
        self.video_base = ""
        self.stopping = asyncio.Event()
        self.outage = OutageSwitch(self.stopping, config.outage_mode)
        self._url_secret = secrets.token_bytes(32)
        self._window: deque[float] = deque()

    # -- request gates ------------------------------------------------------------------------

    def check_rate(self) -> None:
        """Sliding one-second window over API requests; raise 1302 above ``rate_limit``."""
        if self.rate_limit is None:
            return
        now = asyncio.get_running_loop().time()
        window = self._window
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) + 1 > self.rate_limit:
            raise SimError(1302, f"requests too fast: more than {self.rate_limit:g} per second")
        window.append(now)

    def authorize(self, header: str | None) -> None:
        """Raise SimError 1000-1004 unless the Authorization header is valid now."""
        now = self.clock.now()
        if not self.config.auth_uses_sim_clock:
            now -= self.clock.offset
        self.auth.check(header, now)

    async def pause(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return True early if the simulator is stopping."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    # -- videos -------------------------------------------------------------------------------

    def expired(self, task: Task) -> bool:
        """True once the retention period after created_at has passed (simulator clock)."""
        return self.clock.now_ms() >= task.created_ms + self.retention_ms

    def _signature(self, name: str, exp: int) -> str:
        message = f"{name}:{exp}".encode()
        return hmac.new(self._url_secret, message, hashlib.sha256).hexdigest()[:32]

    def video_link(self, name: str) -> str:
        """URL of a video on the video origin; with url_ttl, signed with ``exp`` (simulator
        milliseconds): each query hands out a link valid for url_ttl seconds from that query."""
        url = f"{self.video_base}/videos/{name}.mp4"
        ttl = self.config.url_ttl
        if ttl is None:
            return url
        # Milliseconds: a TTL of 0.5 s must not be truncated to a link that expired already.
        exp = self.clock.now_ms() + round(ttl * 1000)
        return f"{url}?exp={exp}&sig={self._signature(name, exp)}"

    def link_valid(self, name: str, query: Mapping[str, str]) -> bool:
        """Check a signed link's signature and expiry (always valid without url_ttl)."""
        if self.config.url_ttl is None:
            return True
        exp, sig = query.get("exp", ""), query.get("sig", "")
        if not exp.isdigit() or not hmac.compare_digest(sig, self._signature(name, int(exp))):
            return False
        return self.clock.now_ms() < int(exp)

    def date(self) -> str:
        """The ``Date`` header of an answer: the simulator's clock, not the machine's."""
        return formatdate(self.clock.now(), usegmt=True)

    def resolve_video(self, name: str) -> Task | None:
        """The succeeded, unexpired task that owns video ``name`` (id, or id + "-wm")."""
        watermark = name.endswith(WATERMARK_SUFFIX)
        video_id = name[: -len(WATERMARK_SUFFIX)] if watermark else name
        task = self.store.by_video(video_id)
        if task is None or task.status != "succeed" or self.expired(task):
            return None
        if watermark and not task.request.watermark:
            return None
        return task

    # -- rendering ----------------------------------------------------------------------------

    def task_json(self, task: Task) -> dict[str, Any]:
        """The task object of the single query, list, and callbacks."""
        result: dict[str, Any] = {}
        if task.status == "succeed":
            videos: list[dict[str, str]] = []
            # Past retention the task stays listed but carries no video (documented choice).
            if not self.expired(task):
                video = {"id": task.video_id, "url": self.video_link(task.video_id)}
                if task.request.watermark:
                    video["watermark_url"] = self.video_link(task.video_id + WATERMARK_SUFFIX)
                video["duration"] = task.video_duration
                videos.append(video)
            result = {"videos": videos}
        data = {
            "task_id": task.task_id,
            "task_status": task.status,
            "task_status_msg": task.status_msg,
            "task_info": {"external_task_id": task.external_task_id or ""},
            "task_result": result,
            "watermark_info": {"enabled": task.request.watermark},
            "final_unit_deduction": task.final_unit_deduction,
            "created_at": task.created_ms,
            "updated_at": task.updated_ms,
        }
        return self.shapes.task(data, task.external_task_id)

    def _on_change(self, task: Task) -> None:
        url = task.request.callback_url
        if url is not None:
            self.callbacks.send(url, self.shapes.callback(self.task_json(task)))
