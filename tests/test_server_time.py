"""Server time (`_server_time`): the clock offset from `Date` headers, and expiry by it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import formatdate

import pytest

from kling_async._server_time import ServerClock, best_region, parse_http_date


class Wall:
    """This machine's clock, settable."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def date_header(server_time: float) -> str:
    """What a server writes: its time truncated to the second, as an HTTP date."""
    return formatdate(server_time, usegmt=True)


def answer(clock: ServerClock, local_sent: float, latency: float, offset: float) -> None:
    """One answer from a server `offset` seconds ahead, written halfway through `latency`."""
    written = local_sent + latency / 2 + offset
    clock.observe(date_header(written), local_sent, local_sent + latency)


def test_parse_http_date() -> None:
    assert (
        parse_http_date("Tue, 01 Dec 2026 10:00:00 GMT")
        == datetime(2026, 12, 1, 10, tzinfo=UTC).timestamp()
    )
    assert parse_http_date("Tue, 01 Dec 2026 10:00:00 -0000") == parse_http_date(
        "Tue, 01 Dec 2026 10:00:00 GMT"
    )
    assert parse_http_date("Tue, 01 Dec 2026 11:00:00 +0100") == parse_http_date(
        "Tue, 01 Dec 2026 10:00:00 GMT"
    )
    for bad in (None, "", "yesterday", "Tue, 99 Foo 2026 10:00:00 GMT"):
        assert parse_http_date(bad) is None


def test_best_region_is_where_most_intervals_agree() -> None:
    assert best_region([]) is None
    assert best_region([(0.0, 2.0), (1.0, 3.0), (1.5, 4.0)]) == (1.5, 2.0, 3)
    # Two outliers far away are outvoted by three that agree.
    region = best_region([(10.0, 11.0), (10.2, 11.5), (10.5, 12.0), (-100.0, -99.0), (50, 51)])
    assert region == (10.5, 11.0, 3)


def test_unknown_offset_means_the_local_clock() -> None:
    clock = ServerClock(wall=Wall(1000.0))
    assert clock.offset is None and clock.uncertainty is None
    assert clock.server_now() == 1000.0
    assert repr(clock) == "ServerClock(offset unknown)"
    assert clock.observe(None, 1.0, 2.0) is False
    assert clock.observe("not a date", 1.0, 2.0) is False
    assert clock.observe(date_header(5.0), 2.0, 1.0) is False  # received before sent: nonsense
    assert clock.offset is None


@pytest.mark.parametrize("offset", [-60.0, -0.4, 0.0, 0.7, 60.0, 3600.25])
def test_the_offset_is_learnt_within_a_fraction_of_a_second(offset: float) -> None:
    rng = random.Random(offset)
    wall = Wall(1_800_000_000.0)
    clock = ServerClock(wall=wall)
    answer(clock, wall.now, 0.05, offset)
    assert clock.offset == pytest.approx(offset, abs=1.05)  # one answer: the second's width
    for _ in range(30):  # answers at random moments within the second, 5–300 ms latency
        wall.now += rng.uniform(0.1, 3.0)
        answer(clock, wall.now, rng.uniform(0.005, 0.3), offset)
    assert clock.offset == pytest.approx(offset, abs=0.15)
    assert clock.uncertainty is not None and clock.uncertainty < 0.15
    assert clock.server_now() == pytest.approx(wall.now + offset, abs=0.15)
    assert repr(clock).startswith("ServerClock(offset=")


def test_a_few_wrong_clocks_are_outvoted() -> None:
    rng = random.Random(7)
    wall = Wall(1_800_000_000.0)
    clock = ServerClock(wall=wall)
    for k in range(20):
        wall.now += rng.uniform(0.1, 2.0)
        # Every fifth answer comes from a stale cache (its Date ten minutes old).
        answer(clock, wall.now, 0.05, -600.0 if k % 5 == 0 else 60.0)
    assert clock.offset == pytest.approx(60.0, abs=0.2)


def test_only_the_latest_answers_count() -> None:
    wall = Wall(1_800_000_000.0)
    clock = ServerClock(wall=wall, maxlen=8)
    for _ in range(8):
        wall.now += 0.37
        answer(clock, wall.now, 0.02, 5.0)
    for _ in range(8):  # the server's clock was stepped by 30 s: followed once it is the majority
        wall.now += 0.37
        answer(clock, wall.now, 0.02, 35.0)
    assert clock.offset == pytest.approx(35.0, abs=0.5)


def test_expiry_is_judged_by_the_servers_clock() -> None:
    wall = Wall(datetime(2026, 12, 1, 12, tzinfo=UTC).timestamp())
    clock = ServerClock(wall=wall)
    expires = datetime.fromtimestamp(wall.now, UTC) + timedelta(seconds=30)
    assert not clock.past_expiry(expires)  # by our clock: 30 s to go
    assert clock.expires_in(expires) == pytest.approx(30.0)
    for _ in range(10):  # the server is 60 s ahead of us
        wall.now += 0.3
        answer(clock, wall.now, 0.02, 60.0)
    assert clock.past_expiry(expires)  # by the server's: gone for about half a minute
    assert clock.expires_in(expires) == pytest.approx(30.0 - 3.0 - 60.0, abs=0.3)
    # The other way round: we are 60 s ahead; what our clock calls expired is still there.
    behind = ServerClock(wall=wall)
    for _ in range(10):
        wall.now += 0.3
        answer(behind, wall.now, 0.02, -60.0)
    late = datetime.fromtimestamp(wall.now, UTC) - timedelta(seconds=30)
    assert not behind.past_expiry(late)
    # Unknown expiry: never "past" (the download is tried; Kling's answer decides).
    assert not clock.past_expiry(None) and clock.expires_in(None) is None
