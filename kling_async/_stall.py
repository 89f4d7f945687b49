"""Retry budgets that count attempts *without progress*, not attempts.

A transfer cut short after 984,375 of 1,000,000 bytes made progress: resumed with `Range`, the
next attempt needs only the rest. Counting it as a failure ends a video that six attempts would
have saved. So a budget here counts failed attempts *in a row* that made no progress; any
progress resets the count, and the back-off with it (a transfer that moves retries quickly).

`download_verdict` is the download rule of the throttling issue: bytes received → try again at
once; a refused or vanished URL (403/404) → fetch a fresh one and try again, whatever the count
(short-lived links are normal, only expiry ends them); nothing received → count it, give up after
`limit` such attempts in a row; past expiry (by the server's clock) → expired, whatever else.
A job's own deadline bounds all of it. Pure: the retry iterator may absorb it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ._errors import ConfigurationError

__all__ = ["Attempt", "DownloadVerdict", "StallBudget", "download_verdict"]


@dataclass(slots=True)
class StallBudget:
    """Failed attempts in a row without progress, against a limit."""

    limit: int = 6
    stalled: int = 0  # failed attempts in a row that made no progress
    attempts: int = 0  # every failed attempt, for events and messages

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ConfigurationError(f"StallBudget.limit must be ≥ 1, got {self.limit}")

    def failed(self, *, progressed: bool) -> bool:
        """Record a failed attempt; True if another may follow."""
        self.attempts += 1
        self.stalled = 0 if progressed else self.stalled + 1
        return self.stalled < self.limit

    @property
    def backoff_attempt(self) -> int:
        """The attempt number to back off for (0: the first wait): stalls only, so an attempt
        that made progress is retried after the shortest wait."""
        return max(0, self.stalled - 1)

    @property
    def exhausted(self) -> bool:
        """True once `limit` attempts in a row made no progress."""
        return self.stalled >= self.limit


class Attempt(Enum):
    """How a failed download attempt ended."""

    BYTES = "bytes"  # some bytes arrived before it broke off (resume with Range)
    URL_REFUSED = "url refused"  # the video URL answered 403 or 404
    NOTHING = "nothing"  # no byte: refused, reset, timed out, 5xx


class DownloadVerdict(Enum):
    """What to do after a failed download attempt."""

    RETRY = "retry"  # the same URL, after budget.backoff_attempt's wait
    REFRESH = "refresh"  # a fresh URL from a task query, used at once
    GIVE_UP = "give up"  # `limit` attempts in a row without a byte
    EXPIRED = "expired"  # past expiry by the server's clock: nothing more can come


def download_verdict(
    budget: StallBudget, attempt: Attempt, *, past_expiry: bool
) -> DownloadVerdict:
    """Record `attempt` in `budget` and decide the next step."""
    if past_expiry:
        return DownloadVerdict.EXPIRED
    if attempt is Attempt.URL_REFUSED:
        budget.attempts += 1
        return DownloadVerdict.REFRESH
    if budget.failed(progressed=attempt is Attempt.BYTES):
        return DownloadVerdict.RETRY
    return DownloadVerdict.GIVE_UP
