"""What each API request's outcome tells the health and the request rate; hung ones given up."""

from __future__ import annotations

import asyncio
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
