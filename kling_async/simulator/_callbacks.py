"""Best-effort status callbacks: POST the flat task object to the task's callback_url."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from ._stats import SimulatorStats

__all__ = ["CallbackSender"]

logger = logging.getLogger(__name__)


class CallbackSender:
    """Sends callbacks in background tasks; failures are counted and logged, never raised."""

    def __init__(
        self,
        stats: SimulatorStats,
        *,
        enabled: bool = True,
        duplicate: bool = False,
        timeout: float = 5.0,
    ) -> None:
        self.enabled = enabled
        self.duplicate = duplicate
        self._stats = stats
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def send(self, url: str, payload: dict[str, Any]) -> None:
        """Schedule the POST (twice when ``duplicate``); no-op when disabled or closed."""
        if not self.enabled:
            return
        for _ in range(2 if self.duplicate else 1):
            task = asyncio.get_running_loop().create_task(self._post(url, payload))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _post(self, url: str, payload: dict[str, Any]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout)
            )
        try:
            async with self._session.post(url, json=payload) as response:
                await response.read()
                ok = response.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            logger.info("callback to %s failed: %r", url, exc)
            ok = False
        if ok:
            self._stats.callbacks_sent += 1
        else:
            self._stats.callbacks_failed += 1

    async def close(self) -> None:
        """Cancel callbacks still in flight and close the HTTP session."""
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
