"""Can the API work at all? A base URL check at start, and the API's health during a run.

`check_base_url` refuses, before any request, a base URL that can never work (no scheme, not
http(s), no host), suggesting the fix: `127.0.0.1:8080` → "did you mean http://127.0.0.1:8080".

`ApiHealth` is fed every API request's outcome and decides, once for the whole client rather
than once per job:

- **never worked**: since start every request failed at the transport level (refused, DNS,
  TLS, timeout) for `never_worked` seconds, with no answer at all → give up with one message
  naming the URL and the error (the URL is wrong, or nothing runs there);
- **outage**: after any answer, transport failures that last `down_after` seconds are an outage
  → "waiting for the API" (jobs keep everything and wait), back to normal at the next answer,
  or give up once the outage passes `outage_limit`;
- **hang**: after any answer, a request outstanding while nothing at all has answered for
  `hang_after()` seconds (a few seconds past the slowest recent answer, never below
  `HealthRules.hang_after`) is a failure too: a server that accepts connections and never
  answers is an outage found in seconds, not at the 60 s read timeout.

Any HTTP answer counts as the API being there, whatever its status or code: a 5xx, a 1302 or a
page that is not Kling's says the URL reaches a server, and those have their own rules.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

from ._errors import APIError, ConfigurationError, ResponseValidationError, TransportError

__all__ = [
    "ApiHealth",
    "Change",
    "Health",
    "HealthRules",
    "Outcome",
    "check_base_url",
    "outcome_of",
]


def _suggest(text: str) -> str:
    """The URL the user probably meant: http:// for this machine and raw addresses."""
    host = urlsplit("//" + text).hostname or ""
    try:
        ipaddress.ip_address(host)
        local = True
    except ValueError:
        local = host == "localhost" or host.endswith(".local") or "." not in host
    return ("http://" if local else "https://") + text.rstrip("/")


def check_base_url(url: str, *, what: str = "base URL") -> str:
    """The base URL without a trailing slash, or ConfigurationError saying what is wrong."""
    text = url.strip()
    if not text:
        raise ConfigurationError(f"{what} is empty; e.g. https://api-singapore.klingai.com")
    if any(c.isspace() for c in text):
        raise ConfigurationError(f"{what} {url!r} contains white space")
    if "://" not in text:
        raise ConfigurationError(
            f"{what} {url!r} has no scheme (http:// or https://): did you mean {_suggest(text)!r}?"
        )
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"{what} {url!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ConfigurationError(
            f"{what} {url!r}: scheme {parts.scheme!r} is not supported; use http:// or https://"
        )
    if not parts.hostname:
        raise ConfigurationError(
            f"{what} {url!r} has no host; e.g. https://api-singapore.klingai.com"
        )
    if parts.username is not None or parts.password is not None:
        # It would be sent to the server and shown in every message: never a place for secrets.
        raise ConfigurationError(f"{what} must not contain a user name or password")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{what} {url!r} must not have a query (?…) or fragment (#…)")
    if port == 0:
        raise ConfigurationError(f"{what} {url!r}: port 0 cannot be connected to")
    return text.rstrip("/")


class Outcome(Enum):
    """What one API request tells about the API's health."""

    ANSWERED = "answered"  # an HTTP answer, any status: the server is there
    TRANSPORT = "transport"  # no answer: refused, DNS, TLS, reset, timeout
    OTHER = "other"  # nothing about the API (e.g. our own request body failed)


def outcome_of(error: BaseException | None) -> Outcome:
    """The outcome of a request that raised `error` (None: it succeeded)."""
    if error is None or isinstance(error, APIError | ResponseValidationError):
        return Outcome.ANSWERED  # ResponseValidationError: an answer, just not Kling's shape
    if isinstance(error, TransportError):
        return Outcome.TRANSPORT
    return Outcome.OTHER


class Health(Enum):
    """The API as the client sees it."""

    STARTING = "starting"  # no answer yet
    UP = "up"
    DOWN = "down"  # an outage: waiting for the API
    GAVE_UP = "gave up"  # never worked, or the outage lasted too long


@dataclass(frozen=True, slots=True)
class HealthRules:
    """Seconds: when a dead URL is given up, when an outage starts, how long it may last."""

    never_worked: float = 10.0
    down_after: float = 1.0
    #: The least time without any answer, a request outstanding, that counts as a hang; the
    #: slowest recent answer plus `HANG_MARGIN` raises it (a slow server is not a hung one).
    hang_after: float = 5.0
    #: None: wait for the API as long as the run lasts.
    outage_limit: float | None = 1800.0

    def __post_init__(self) -> None:
        for name in ("never_worked", "down_after", "hang_after", "outage_limit"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"HealthRules.{name} must be > 0, got {value}")


#: Seconds beyond the slowest of the last `LATENCIES` answers before a request counts as hung.
HANG_MARGIN = 3.0
LATENCIES = 64


@dataclass(frozen=True, slots=True)
class Change:
    """A change of health, with the one message to show for it."""

    health: Health
    message: str
    at: float


def _describe(error: BaseException | str | None) -> str:
    if error is None:
        return "no answer"
    if isinstance(error, str):
        return error
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _hung(waited: float) -> str:
    return f"no answer within {waited:.0f} s (requests hang)"


class ApiHealth:
    """Health of one base URL, from request outcomes; every method is given `now` (monotonic).

    The clock starts at the first request sent, so a client made long before its first use
    (a web backend at start-up) is not judged on the time it sat idle.
    """

    def __init__(self, url: str, rules: HealthRules | None = None) -> None:
        self.url = url
        self.rules = rules or HealthRules()
        self.health = Health.STARTING
        self.started: float | None = None  # when the first request was sent
        self.last_error = ""
        self._failing_since: float | None = None  # first transport failure since the last answer
        self._down_since: float | None = None
        self._answered_at: float | None = None
        self._latencies: deque[float] = deque(maxlen=LATENCIES)
        self.gave_up: Change | None = None

    def __repr__(self) -> str:
        return f"ApiHealth({self.url!r}, {self.health.value})"

    def record(
        self,
        outcome: Outcome,
        now: float,
        error: BaseException | str | None = None,
        *,
        sent_at: float | None = None,
    ) -> Change | None:
        """The outcome of a request sent at `sent_at` (default: now) known at `now`; returns
        the change of health it caused, if any."""
        sent = now if sent_at is None else sent_at
        if self.started is None or sent < self.started:
            self.started = sent
        if self.health is Health.GAVE_UP or outcome is Outcome.OTHER:
            return None
        if outcome is Outcome.ANSWERED:
            self._latencies.append(now - sent)
            return self._answered(now)
        self.last_error = _describe(error)
        if self._failing_since is None:
            # A request sent before the last answer and failing now says little about "since".
            answered = self._answered_at
            self._failing_since = sent if answered is None else max(sent, answered)
        return self.check(now)

    def _answered(self, now: float) -> Change | None:
        self._failing_since = None
        self._answered_at = now
        before, self.health = self.health, Health.UP
        if before is Health.DOWN:
            assert self._down_since is not None
            lasted = now - self._down_since
            self._down_since = None
            return Change(
                Health.UP, f"the API at {self.url} answers again (after {lasted:.0f} s)", now
            )
        return None

    def check(self, now: float) -> Change | None:
        """Time-driven changes (call it from a timer too: a hung request reports nothing)."""
        rules = self.rules
        if self.health is Health.STARTING:
            if self.started is None or self._failing_since is None:
                return None
            if now - self.started >= rules.never_worked:
                return self._give_up(
                    now,
                    f"giving up: nothing answers at {self.url} (every request for "
                    f"{now - self.started:.0f} s failed, none answered): {self.last_error}",
                )
            return None
        if self._failing_since is None or self.health is Health.GAVE_UP:
            return None
        if self.health is Health.UP and now - self._failing_since >= rules.down_after:
            self.health, self._down_since = Health.DOWN, self._failing_since
            return Change(
                Health.DOWN,
                f"waiting for the API: {self.url} stopped answering ({self.last_error})",
                now,
            )
        limit = rules.outage_limit
        if self.health is Health.DOWN and limit is not None:
            assert self._down_since is not None
            if now - self._down_since >= limit:
                return self._give_up(
                    now,
                    f"giving up: {self.url} has not answered for {now - self._down_since:.0f} s "
                    f"(outage limit {limit:g} s): {self.last_error}",
                )
        return None

    def hang_after(self) -> float:
        """Seconds with no answer at all after which an outstanding request counts as hung."""
        slowest = max(self._latencies, default=0.0)
        return max(self.rules.hang_after, slowest + HANG_MARGIN)

    def watch(self, now: float, sent_at: float, small: bool = True) -> Change | None:
        """A request sent at `sent_at` is still unanswered at `now`: is it hung, and what
        follows (call it from a timer: a hung request reports nothing by itself).

        Only a `small` request (no large upload, which may take long) can count as hung: before
        any answer once it waited `never_worked`; after one, once neither it nor any other
        request was answered for `hang_after()`.
        """
        if small and self.health is Health.STARTING and now - sent_at >= self.rules.never_worked:
            return self.record(Outcome.TRANSPORT, now, _hung(now - sent_at), sent_at=sent_at)
        if small and self.health is Health.UP:
            since = sent_at if self._answered_at is None else max(sent_at, self._answered_at)
            if now - since >= self.hang_after():
                return self.record(Outcome.TRANSPORT, now, _hung(now - since), sent_at=since)
        return self.check(now)

    def _give_up(self, now: float, message: str) -> Change:
        self.health = Health.GAVE_UP
        self.gave_up = Change(Health.GAVE_UP, message, now)
        return self.gave_up

    @property
    def waiting(self) -> bool:
        """True during an outage: requests should wait for the API rather than fail."""
        return self.health is Health.DOWN
