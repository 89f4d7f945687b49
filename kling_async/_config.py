"""Frozen configuration values with sensible defaults (the DEFAULT_* constants at the bottom)."""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import ConfigurationError

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_LIMITS",
    "DEFAULT_POLL",
    "DEFAULT_RETRY",
    "DEFAULT_TIMEOUTS",
    "Limits",
    "PollPolicy",
    "RetryPolicy",
    "Timeouts",
]


def _positive(name: str, value: float | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise ConfigurationError(f"{name} must be > 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. API calls get a total; downloads only connect/read limits (a 1 GB video is slow)."""

    connect: float = 10.0
    read: float = 60.0
    total: float = 120.0
    download_read: float = 60.0

    def __post_init__(self) -> None:
        for name in ("connect", "read", "total", "download_read"):
            _positive(f"Timeouts.{name}", getattr(self, name))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential back-off with full jitter, a cap and a budget (stamina's vocabulary).

    A transient condition (1302, 1303, 5000–5002/5xx, no answer) never ends an operation by
    itself: it waits (backed off up to `wait_max`; 1302 paced by the adaptive request rate)
    until the call succeeds, fails for good, passes `timeout`, the API is given up (nothing
    answered since start, or an outage longer than `outage_limit`) or the user stops it.
    """

    #: None: count only video downloads' attempts in a row that received no byte (at most
    #: `stalls`). A number: at most this many attempts in a row without progress at anything
    #: (transient conditions included), as a hard cap.
    attempts: int | None = None
    #: The job timeout, seconds: how long one operation of a job (a create, a query, a video
    #: download) may go on retrying since its last progress. None: no deadline.
    timeout: float | None = None
    wait_initial: float = 0.5
    wait_max: float = 30.0
    wait_exp_base: float = 2.0
    wait_jitter: bool = True
    #: 1303 means "wait until a running task ends": the documented initial back-off is ≥ 1 s.
    concurrency_wait_initial: float = 1.0
    #: Video attempts in a row that received no byte before a download gives up (with
    #: `attempts=None`); an attempt that received bytes resets the count.
    stalls: int = 6
    #: Seconds the API may stay silent after it had answered (an outage: the run waits, shown
    #: as "waiting for the API") before every call gives up; None: wait as long as it takes.
    outage_limit: float | None = 1800.0

    def __post_init__(self) -> None:
        for name in ("attempts", "stalls"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigurationError(f"RetryPolicy.{name} must be ≥ 1, got {value}")
        for name in ("wait_initial", "wait_max", "wait_exp_base"):
            _positive(f"RetryPolicy.{name}", getattr(self, name))
        for name in ("timeout", "outage_limit"):
            _positive(f"RetryPolicy.{name}", getattr(self, name), allow_none=True)


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """How `wait` and the batch poller pace status queries: back off while nothing changes."""

    interval: float = 1.0
    interval_max: float = 15.0
    backoff: float = 1.5
    timeout: float = 3600.0
    #: Never sweep more often than this.
    min_interval: float = 0.05
    #: What a sweep is worth, as a fraction of the median generation time: sweep once the
    #: slot-time that completions not yet seen are expected to have cost reaches it (smaller:
    #: more requests, completions noticed sooner). While callbacks announce every completion,
    #: the sweep is a safety net instead: once per median generation time (past interval_max).
    due_fraction: float = 0.0065
    #: After this many answers in a row about one task that cannot be read, `wait()` raises
    #: ResponseValidationError (its slot stays held while the task is still followed).
    unreadable_limit: int = 3

    def __post_init__(self) -> None:
        for name in ("interval", "interval_max", "timeout", "min_interval", "due_fraction"):
            _positive(f"PollPolicy.{name}", getattr(self, name))
        if self.unreadable_limit < 1:
            raise ConfigurationError(
                f"PollPolicy.unreadable_limit must be ≥ 1, got {self.unreadable_limit}"
            )
        if self.backoff < 1:
            raise ConfigurationError(f"PollPolicy.backoff must be ≥ 1, got {self.backoff}")


@dataclass(frozen=True, slots=True)
class Limits:
    """Account concurrency (starting value), API request rate, and parallel downloads."""

    concurrency: int = 5
    #: A ceiling on API requests per second. None: no ceiling; the adaptive rate alone (cut on
    #: 1302, grown back along a cubic curve) decides.
    rps: float | None = None
    download_concurrency: int = 4
    page_size: int = 500
    #: After a 1303 shrank the limit, try one more slot this often (and once ten of our tasks
    #: have ended since), at the moment one of ours is seen ending; None: 1.5 × the generation
    #: time observed so far (30 s until one is known); a refused probe doubles it (once).
    probe_interval: float | None = None

    def __post_init__(self) -> None:
        _positive("Limits.probe_interval", self.probe_interval, allow_none=True)
        if self.concurrency < 1:
            raise ConfigurationError(f"Limits.concurrency must be ≥ 1, got {self.concurrency}")
        if self.download_concurrency < 1:
            raise ConfigurationError(
                f"Limits.download_concurrency must be ≥ 1, got {self.download_concurrency}"
            )
        _positive("Limits.rps", self.rps, allow_none=True)
        if not 1 <= self.page_size <= 500:
            raise ConfigurationError(f"Limits.page_size must be in [1, 500], got {self.page_size}")


DEFAULT_BASE_URL = "https://api-singapore.klingai.com"
DEFAULT_TIMEOUTS = Timeouts()
DEFAULT_RETRY = RetryPolicy()
DEFAULT_POLL = PollPolicy()
DEFAULT_LIMITS = Limits()
