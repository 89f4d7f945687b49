"""What each API request's outcome tells the health and the request rate; hung ones given up."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from ._errors import ApiUnreachableError, KlingError, RateLimitError
from ._events import ApiHealthChanged, EventHook, emit
from ._health import ApiHealth, Change, Health, Outcome, outcome_of
from ._types import Clock

if TYPE_CHECKING:
    from ._request_rate import RequestRate

__all__ = ["WATCH_EVERY", "RequestOutcomes"]

#: While the API has not answered yet (or is down), a request in flight is looked at this often
#: (seconds): a hung request reports nothing, and the API must be given up on time.
WATCH_EVERY = 0.5


class RequestOutcomes:
    """HttpLayer's bookkeeping around each request: health checks, watching, outcomes."""

    # Set by HttpLayer.__init__.
    health: ApiHealth
    rate: RequestRate
    throttled: int
    _monotonic: Clock
    _hook: EventHook | None

    def _check_health(self) -> None:
        gave_up = self.health.gave_up
        if gave_up is not None:
            raise ApiUnreachableError(gave_up.message)

    async def _watched(self, request: Coroutine[Any, Any, Any], sent_at: float, small: bool) -> Any:
        """Await `request` under a timer, so that a hung API is noticed (and given up) on time
        rather than at the read timeout: `ApiHealth.watch` judges what waiting means.

        The request runs in the caller's task; a timer looks at it (no task, no wait future
        per request). Once the health gives up, the timer cancels the request and the caller
        gets ApiUnreachableError.
        """
        health = self.health
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        gave_up = False
        timer: asyncio.TimerHandle | None = None

        def delay() -> float:
            if health.health is Health.UP:  # one timer for the usual, answered, request
                return max(WATCH_EVERY, sent_at + health.hang_after() - self._monotonic())
            return WATCH_EVERY

        def look() -> None:
            nonlocal timer, gave_up
            self._health_changed(health.watch(self._monotonic(), sent_at, small))
            if health.gave_up is not None:
                gave_up = True
                task.cancel()
            else:
                timer = loop.call_later(delay(), look)

        timer = loop.call_later(delay(), look)
        try:
            return await request
        except asyncio.CancelledError:
            if gave_up and task.uncancel() == 0:  # our cancellation, not the caller's
                self._check_health()
            raise
        finally:
            assert timer is not None
            timer.cancel()

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
