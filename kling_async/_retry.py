"""Retrying, in one place: what is safe to repeat (`classify`), how long to wait (`backoff`), and
the one loop every retry site runs (`Retrying`, after stamina's `retry_context`).

```python
async for attempt in retries.attempts("GET", path):
    try:
        data = await send()
    except KlingError as exc:
        if classify(exc) is not Verdict.RETRY:
            raise
        attempt.retry(exc)  # raises exc once the attempts or the time budget are spent
return data  # an attempt that asked for nothing more ends the loop
```

`Retrying` owns the counting, the deadline (`RetryPolicy.timeout`), the random source, the
injected sleep and clock, and the instrumentation: every retry is reported as one
`RequestRetry` event, with the same fields wherever it happens (API calls, creates, video
downloads). The attempts are counted from the start, or (`count="without_progress"`) since the
last attempt that moved the operation forward (`attempt.progressed()`, e.g. a download that
received bytes); the time budget always runs from the last progress.

Transient conditions (1302, 5000–5002/5xx, no answer) are waited out, not counted, unless the
policy sets `attempts`: a 1302 waits only a moment (the adaptive request rate paces the resend);
until the API first answers and during an outage, a request that got no answer is tried
again every `OUTAGE_POLL` seconds at most, so the run resumes soon after the API does; once
the API is given up (`ApiHealth.gave_up`) the loop raises `ApiUnreachableError` with its one
message.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal, Self

from ._config import DEFAULT_RETRY, RetryPolicy
from ._errors import (
    ApiUnreachableError,
    AuthenticationError,
    ConcurrencyLimitError,
    KlingError,
    RateLimitError,
    ServerError,
    TransportError,
)
from ._events import EventHook, RequestRetry, emit
from ._health import ApiHealth, Health
from ._types import Clock, Sleep

__all__ = [
    "Attempt",
    "Retries",
    "Retrying",
    "Verdict",
    "backoff",
    "classify",
    "is_ambiguous_create",
    "is_transient",
]

#: 401 codes after which a freshly signed token may succeed: not yet valid / expired.
RESIGN_CODES = frozenset({1003, 1004})
#: Seconds a 1302 waits before its resend queues for a token (the rate does the pacing).
THROTTLE_WAIT = 0.05
#: During an outage a failed request is tried again at least this often (seconds).
OUTAGE_POLL = 1.0


class Verdict(Enum):
    """What to do after a failed call."""

    RETRY = "retry"  # safe to send again after a back-off
    RESIGN = "resign"  # sign a new token and send again, once
    STOP = "stop"  # never retried: the caller must change something


def classify(error: BaseException) -> Verdict:
    """Retry transport failures, 5000–5002/5xx and 1302/1303; re-sign on 1003/1004; else stop."""
    if isinstance(error, AuthenticationError):
        return Verdict.RESIGN if error.code in RESIGN_CODES else Verdict.STOP
    if isinstance(error, ApiUnreachableError):
        return Verdict.STOP  # the API was given up: nothing to wait for any more
    if isinstance(error, RateLimitError):
        # 429 also carries account codes (1100–1102, 1304): those map to AccountError, not here.
        return Verdict.RETRY
    if isinstance(error, ServerError | TransportError):
        return Verdict.RETRY
    return Verdict.STOP


def is_transient(error: BaseException) -> bool:
    """1302/1303, 5000–5002/5xx or no answer: a condition that passes, waited out."""
    return classify(error) is Verdict.RETRY


def is_ambiguous_create(error: KlingError) -> bool:
    """A create that failed this way may still have created (and billed) the task."""
    return isinstance(error, ServerError | TransportError)


def backoff(
    attempt: int,
    policy: RetryPolicy,
    *,
    error: BaseException | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds before attempt `attempt + 1` (from 0): jittered exponential, floored and capped."""
    initial = policy.wait_initial
    low = initial / 2  # full jitter, but never (almost) zero
    if isinstance(error, ConcurrencyLimitError):
        # A slot frees only when some task ends: the documented initial back-off is ≥ 1 s,
        # so the jitter must not take the wait below it.
        initial = low = max(initial, policy.concurrency_wait_initial)
    ceiling = min(policy.wait_max, initial * policy.wait_exp_base**attempt)
    wait = ceiling
    if policy.wait_jitter:
        wait = (rng or random).uniform(min(low, ceiling), ceiling)
    if isinstance(error, RateLimitError) and error.retry_after is not None:
        wait = max(wait, min(error.retry_after, policy.wait_max))
    return wait


@dataclass(frozen=True, slots=True)
class Retries:
    """A client's retry policy with its injected sleep, clock, random source and event hook."""

    policy: RetryPolicy = DEFAULT_RETRY
    sleep: Sleep = asyncio.sleep
    monotonic: Clock = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    hook: EventHook | None = None
    #: The API's health (the client's): outages are waited out, a given-up API ends the loop.
    health: ApiHealth | None = None

    def attempts(
        self,
        method: str,
        path: str,
        *,
        count: Literal["all", "without_progress"] = "all",
    ) -> Retrying:
        """The attempts at one operation (`async for attempt in ...`); `path` names it in events."""
        return Retrying(self, method, path, count=count)


class Attempt:
    """One try. End it by returning or raising, or ask for another with `retry` or `again`."""

    __slots__ = ("_loop", "number")

    def __init__(self, loop: Retrying, number: int) -> None:
        self._loop = loop
        #: 1 for the first try, 2 for the next, … (`again()` tries count too).
        self.number = number

    def retry(self, error: KlingError, *, path: str | None = None) -> None:
        """Try again after a back-off; raises `error` when no attempt or time is left.

        Reported as a `RequestRetry` event (`path` overrides the operation's, e.g. a video's
        address after its URL was refreshed).
        """
        self._loop._failed(error, path)

    def again(self) -> None:
        """Try again at once, not counted as a failure (a fresh token, a refreshed URL)."""
        self._loop._wait = 0.0

    def progressed(self) -> None:
        """This attempt moved the operation forward (a download received bytes): the time
        budget runs from now, and a `without_progress` count starts again."""
        self._loop._progressed()


class Retrying:
    """The attempts at one operation: an async iterator of `Attempt`s (see the module doc).

    The first attempt starts at once; the next only when the previous one asked for it, after
    its back-off. An attempt that asks for nothing ends the loop.
    """

    def __init__(
        self,
        retries: Retries,
        method: str,
        path: str,
        *,
        count: Literal["all", "without_progress"] = "all",
    ) -> None:
        self.retries = retries
        self.method = method
        self.path = path
        self.count = count
        self.failures = 0  # failed attempts counted (since the last progress, per `count`)
        self._number = 0
        self._since = retries.monotonic()  # the time budget runs from here
        self._wait: float | None = None  # set by the current attempt: try again after this

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Attempt:
        if self._number:
            wait, self._wait = self._wait, None
            if wait is None:
                raise StopAsyncIteration
            if wait > 0:
                await self.retries.sleep(wait)
        self._number += 1
        return Attempt(self, self._number)

    def _limit(self, error: KlingError) -> int | None:
        """How many failures in a row end the loop (None: no count, only the deadline)."""
        policy = self.retries.policy
        if policy.attempts is not None:
            return policy.attempts
        return None if is_transient(error) else policy.stalls

    def _failed(self, error: KlingError, path: str | None) -> None:
        retries = self.retries
        policy = retries.policy
        health = retries.health
        if health is not None and health.gave_up is not None and is_transient(error):
            raise ApiUnreachableError(health.gave_up.message) from error
        limit = self._limit(error)
        if limit is not None and self.failures + 1 >= limit:
            raise error
        if (
            limit is None
            and isinstance(error, RateLimitError)
            and not isinstance(error, ConcurrencyLimitError)
        ):  # 1302: the adaptive rate paces the resend, a back-off would only add to it
            wait = max(THROTTLE_WAIT, min(error.retry_after or 0.0, policy.wait_max))
        else:
            wait = backoff(self.failures, policy, error=error, rng=retries.rng)
            self.failures += 1
        unsure = health is not None and health.health is not Health.UP
        if unsure and isinstance(error, TransportError):
            # Resume soon after the API does, or give it up on time if it never answered.
            wait = min(wait, OUTAGE_POLL)
        if policy.timeout is not None and retries.monotonic() + wait > self._since + policy.timeout:
            error.timed_out = policy.timeout  # the job's result says so, not just the last error
            raise error
        self._wait = wait
        emit(
            retries.hook,
            RequestRetry(
                method=self.method,
                path=self.path if path is None else path,
                attempt=self.failures,
                delay=round(wait, 3),
                error=type(error).__name__,
                code=getattr(error, "code", None),
            ),
        )

    def _progressed(self) -> None:
        self._since = self.retries.monotonic()
        if self.count == "without_progress":
            self.failures = 0
