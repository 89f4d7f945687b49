"""Retry decisions and back-off, as pure functions: one place decides what is safe to repeat."""

from __future__ import annotations

import random
from enum import Enum

from ._config import RetryPolicy
from ._errors import (
    AuthenticationError,
    ConcurrencyLimitError,
    KlingError,
    RateLimitError,
    ServerError,
    TransportError,
)

__all__ = ["Verdict", "backoff", "classify", "is_ambiguous_create"]

#: 401 codes after which a freshly signed token may succeed: not yet valid / expired.
RESIGN_CODES = frozenset({1003, 1004})


class Verdict(Enum):
    """What to do after a failed call."""

    RETRY = "retry"  # safe to send again after a back-off
    RESIGN = "resign"  # sign a new token and send again, once
    STOP = "stop"  # never retried: the caller must change something


def classify(error: BaseException) -> Verdict:
    """Retry transport failures, 5000–5002/5xx and 1302/1303; re-sign on 1003/1004; else stop."""
    if isinstance(error, AuthenticationError):
        return Verdict.RESIGN if error.code in RESIGN_CODES else Verdict.STOP
    if isinstance(error, RateLimitError):
        # 429 also carries account codes (1100–1102, 1304): those map to AccountError, not here.
        return Verdict.RETRY
    if isinstance(error, ServerError | TransportError):
        return Verdict.RETRY
    return Verdict.STOP


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
