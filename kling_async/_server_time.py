"""Server time: the offset between this machine's clock and Kling's, learnt from `Date` headers.

Expiry (`created_at` + 30 days) is Kling's clock's business: a machine 60 s behind would call a
video that Kling already deleted "not yet expired" and see a bare 404. Every API and video
answer carries a `Date` header, so the client can learn the offset θ = server − local.

One answer says little: `Date` has a resolution of one second (it is truncated: the server's
time was in [D, D + 1)), and the server wrote it at some moment between our send and our
receipt. So each answer gives an *interval* for θ,

    D − received  <  θ  <  D + 1 − sent

and the estimate is where most of the last `maxlen` intervals agree (Marzullo's algorithm, as
NTP uses it): latency only widens an interval, a few wrong clocks (a cache's stale `Date`, a CDN
node off by minutes) are outvoted, and several answers narrow θ to well under a second. The
estimate is the middle of that best region; `uncertainty` is its half-width.
"""

from __future__ import annotations

import time
from collections import deque
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from ._types import Clock

__all__ = ["ServerClock", "parse_http_date"]


def parse_http_date(value: str | None) -> float | None:
    """A `Date` header as Unix seconds, or None if missing or unreadable."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:  # "-0000": UTC by RFC 5322, with no zone claimed
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def best_region(intervals: list[tuple[float, float]]) -> tuple[float, float, int] | None:
    """The region most intervals overlap (Marzullo): (low, high, how many); None if none."""
    # An interval opens (-1, sorted before a close at the same point) and closes (+1).
    edges = sorted([(low, -1) for low, _ in intervals] + [(high, +1) for _, high in intervals])
    first, most, count = -1, -1 << 62, 0  # the first open where the most intervals overlap
    for k, (_, kind) in enumerate(edges):
        count -= kind
        if count > most and kind < 0:
            first, most = k, count
    return None if first < 0 else (edges[first][0], edges[first + 1][0], most)


class ServerClock:
    """Learns server − local from `Date` headers; `server_now()` is the server's time now."""

    def __init__(self, *, wall: Clock = time.time, maxlen: int = 32) -> None:
        #: This machine's clock (the one the offset is measured against).
        self.wall = wall
        self._samples: deque[tuple[float, float]] = deque(maxlen=maxlen)
        self._estimate: tuple[float, float] | None = None  # (offset, uncertainty)
        #: The last `Date` read, and its value: answers within one second repeat it, and
        #: parsing an HTTP date costs more than the rest of `observe`.
        self._date: tuple[str | None, float | None] = (None, None)

    def __repr__(self) -> str:
        if self._estimate is None:
            return "ServerClock(offset unknown)"
        offset, spread = self._estimate
        return f"ServerClock(offset={offset:+.2f} s ± {spread:.2f})"

    def observe(self, date: str | None, sent_at: float, received_at: float) -> bool:
        """One answer: its `Date` header, and our wall-clock times of sending and receiving it.
        Returns False if the header was missing or unreadable (nothing learnt)."""
        if date != self._date[0]:
            self._date = (date, parse_http_date(date))
        server = self._date[1]
        if server is None or received_at < sent_at:
            return False
        self._samples.append((server - received_at, server + 1.0 - sent_at))
        region = best_region(list(self._samples))
        assert region is not None
        low, high, _ = region
        self._estimate = ((low + high) / 2, (high - low) / 2)
        return True

    def trust_latest(self) -> None:
        """Keep only the latest answer's interval: the server has just refused a token signed by
        our estimate (its clock stepped, so the older answers' majority is wrong)."""
        if self._samples:
            latest = self._samples[-1]
            self._samples.clear()
            self._samples.append(latest)
            low, high = latest
            self._estimate = ((low + high) / 2, (high - low) / 2)

    @property
    def offset(self) -> float | None:
        """Seconds to add to this machine's clock to get the server's (None: not learnt yet)."""
        return None if self._estimate is None else self._estimate[0]

    @property
    def uncertainty(self) -> float | None:
        """Half-width of the offset's best region, in seconds (None: not learnt yet)."""
        return None if self._estimate is None else self._estimate[1]

    def server_now(self) -> float:
        """The server's time now (Unix seconds); this machine's until an offset is learnt."""
        return self.wall() + (self.offset or 0.0)

    def expires_in(self, expires_at: datetime | None) -> float | None:
        """Seconds until `expires_at` by the server's clock (negative: past); None if unknown."""
        if expires_at is None:
            return None
        return expires_at.timestamp() - self.server_now()

    def past_expiry(self, expires_at: datetime | None) -> bool:
        """True if `expires_at` has passed by the server's clock; False if not or unknown
        (a video without a known expiry is tried: Kling's answer decides)."""
        left = self.expires_in(expires_at)
        return left is not None and left <= 0
