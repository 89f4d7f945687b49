"""API health (`_health`): the base URL check, "never worked", outages and their limit."""

from __future__ import annotations

import pytest

from kling_async import (
    APIError,
    ConfigurationError,
    ConnectError,
    InvalidRequestError,
    RequestTimeoutError,
    ResponseValidationError,
    ServerError,
)
from kling_async._health import (
    ApiHealth,
    Health,
    HealthRules,
    Outcome,
    check_base_url,
    outcome_of,
)

URL = "http://127.0.0.1:9"
REFUSED = ConnectError(f"GET /v1/videos/multi-image2video: cannot connect to {URL}")
A, T = Outcome.ANSWERED, Outcome.TRANSPORT

# -- the base URL -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://api-singapore.klingai.com", "https://api-singapore.klingai.com"),
        ("https://api-singapore.klingai.com/", "https://api-singapore.klingai.com"),
        ("  http://127.0.0.1:8080  ", "http://127.0.0.1:8080"),
        ("HTTP://[::1]:8080/kling/", "HTTP://[::1]:8080/kling"),
        ("http://localhost", "http://localhost"),
    ],
)
def test_good_base_urls_pass(given: str, expected: str) -> None:
    assert check_base_url(given) == expected


@pytest.mark.parametrize(
    ("given", "says"),
    [
        (
            "127.0.0.1:8080",
            "has no scheme (http:// or https://): did you mean 'http://127.0.0.1:8080'?",
        ),
        ("localhost:8080", "did you mean 'http://localhost:8080'?"),
        ("api-singapore.klingai.com", "did you mean 'https://api-singapore.klingai.com'?"),
        ("api.example.com:8443/v", "did you mean 'https://api.example.com:8443/v'?"),
        ("ftp://example.com", "scheme 'ftp' is not supported; use http:// or https://"),
        ("http://", "has no host"),
        ("http:///v1", "has no host"),
        ("", "is empty"),
        ("http://exa mple.com", "contains white space"),
        ("http://example.com:99999", "is not a valid URL"),
        ("http://example.com:0", "port 0 cannot be connected to"),
        ("https://example.com/?a=1", "must not have a query"),
        ("https://example.com/#top", "must not have a query (?…) or fragment"),
    ],
)
def test_bad_base_urls_are_refused_with_the_fix(given: str, says: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        check_base_url(given)
    assert says in str(caught.value)
    assert str(caught.value).startswith("base URL")


def test_credentials_in_the_base_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigurationError) as caught:
        check_base_url("https://me:s3cret@example.com", what="--base-url")
    assert "s3cret" not in str(caught.value)
    assert str(caught.value) == "--base-url must not contain a user name or password"


# -- outcomes ---------------------------------------------------------------------------------


def test_outcome_of_errors() -> None:
    assert outcome_of(None) is A
    assert outcome_of(ServerError("HTTP 502", status=502, code=None)) is A
    assert outcome_of(APIError("1302", status=429, code=1302)) is A
    assert outcome_of(ResponseValidationError("not JSON", status=200)) is A
    assert outcome_of(REFUSED) is T
    assert outcome_of(RequestTimeoutError("GET /x: timed out")) is T
    assert outcome_of(InvalidRequestError("image changed", field="images[0]")) is Outcome.OTHER


# -- never worked -----------------------------------------------------------------------------


def test_a_url_that_never_answers_is_given_up_once_after_the_window() -> None:
    health = ApiHealth(URL)
    changes = [health.record(T, now=t, error=REFUSED) for t in (0.0, 1.0, 5.0, 9.9)]
    assert changes == [None] * 4 and health.health is Health.STARTING
    change = health.record(T, now=10.0, error=REFUSED)
    assert change is not None and change.health is Health.GAVE_UP
    assert change.message == (
        f"giving up: nothing answers at {URL} (every request for 10 s failed, none answered): "
        f"ConnectError: GET /v1/videos/multi-image2video: cannot connect to {URL}"
    )
    # One message for the whole client, however many jobs fail after it.
    assert health.record(T, now=11.0, error=REFUSED) is None
    assert health.check(12.0) is None
    assert health.gave_up is change


def test_the_window_counts_from_the_first_request_sent() -> None:
    # A connect timeout reports 10 s after the request left: the window started then.
    health = ApiHealth(URL)
    change = health.record(T, now=110.0, error="timed out", sent_at=100.0)
    assert change is not None and change.health is Health.GAVE_UP
    assert change.message.endswith("(every request for 10 s failed, none answered): timed out")


def test_a_timer_gives_up_when_requests_hang() -> None:
    health = ApiHealth(URL, HealthRules(never_worked=2.0))
    assert health.check(5.0) is None  # no request yet: nothing to judge
    health.record(T, now=0.5, error=REFUSED, sent_at=0.0)
    assert health.check(1.0) is None
    change = health.check(2.0)
    assert change is not None and change.health is Health.GAVE_UP


def test_one_answer_means_the_url_works() -> None:
    health = ApiHealth(URL)
    health.record(T, now=0.0, error=REFUSED)
    assert health.record(A, now=3.0) is None  # STARTING → UP says nothing
    assert health.health is Health.UP
    assert health.record(T, now=11.0, error=REFUSED) is None  # not "never worked" any more


def test_other_outcomes_are_ignored() -> None:
    health = ApiHealth(URL, HealthRules(never_worked=1.0))
    health.record(T, now=0.0, error=REFUSED)
    assert health.record(Outcome.OTHER, now=5.0, error="body changed") is None
    assert health.health is Health.STARTING
    assert health.check(5.0) is not None  # still only transport failures: given up


# -- outages ----------------------------------------------------------------------------------


def test_an_outage_is_waited_for_and_its_end_reported() -> None:
    health = ApiHealth(URL, HealthRules(down_after=1.0, outage_limit=None))
    health.record(A, now=0.0)
    assert health.record(T, now=10.0, error=REFUSED) is None  # one failure is not an outage
    assert not health.waiting
    down = health.record(T, now=11.0, error=REFUSED)
    assert down is not None and down.health is Health.DOWN and health.waiting
    assert down.message == (
        f"waiting for the API: {URL} stopped answering (ConnectError: GET "
        f"/v1/videos/multi-image2video: cannot connect to {URL})"
    )
    assert health.record(T, now=500.0, error=REFUSED) is None  # no limit: wait on, silently
    up = health.record(A, now=1010.0)
    assert up is not None and up.health is Health.UP
    assert up.message == f"the API at {URL} answers again (after 1000 s)"
    assert not health.waiting


def test_a_blip_shorter_than_down_after_is_no_outage() -> None:
    health = ApiHealth(URL, HealthRules(down_after=2.0))
    health.record(A, now=0.0)
    health.record(T, now=1.0, error=REFUSED)
    assert health.record(A, now=1.5) is None
    assert health.record(T, now=3.0, error=REFUSED) is None  # counts from 3.0, not 1.0
    assert health.health is Health.UP


def test_a_request_sent_before_the_last_answer_does_not_date_an_outage() -> None:
    health = ApiHealth(URL, HealthRules(down_after=1.0))
    health.record(A, now=50.0)
    # A request sent at 0 that timed out at 60: the API answered at 50, so it is down since 50
    # at the earliest, not since 0 — and one failure 10 s after the answer is an outage.
    change = health.record(T, now=60.0, error="timed out", sent_at=0.0)
    assert change is not None and change.health is Health.DOWN
    up = health.record(A, now=61.0)
    assert up is not None and "after 11 s" in up.message


def test_an_outage_past_its_limit_is_given_up() -> None:
    health = ApiHealth(URL, HealthRules(down_after=1.0, outage_limit=60.0))
    health.record(A, now=0.0)
    health.record(T, now=5.0, error=REFUSED)
    assert health.record(T, now=6.0, error=REFUSED) is not None  # down since 5
    assert health.check(64.0) is None
    change = health.check(65.0)
    assert change is not None and change.health is Health.GAVE_UP
    assert change.message.startswith(
        f"giving up: {URL} has not answered for 60 s (outage limit 60 s): ConnectError"
    )
    assert health.record(A, now=66.0) is None and health.health is Health.GAVE_UP
    assert repr(health) == f"ApiHealth({URL!r}, gave up)"


# -- hangs after the API worked ---------------------------------------------------------------


def test_a_hang_after_answers_is_an_outage_within_seconds() -> None:
    health = ApiHealth(URL, HealthRules(down_after=1.0, hang_after=5.0, outage_limit=30.0))
    health.record(A, now=10.0, sent_at=9.9)  # answers take 0.1 s: the floor, 5 s, rules
    assert health.hang_after() == 5.0
    assert health.watch(12.0, sent_at=11.0) is None  # waiting 1 s is no hang
    assert health.watch(15.5, sent_at=11.0) is None  # 4.5 s without any answer: not yet
    down = health.watch(16.0, sent_at=11.0)  # 5 s since it was sent, nothing answered
    assert down is not None and down.health is Health.DOWN and health.waiting
    assert down.message == (
        f"waiting for the API: {URL} stopped answering (no answer within 5 s (requests hang))"
    )
    assert health.watch(20.0, sent_at=11.0) is None  # said once
    assert health.watch(40.0, sent_at=11.0) is None  # down since 11: limit 30 s at 41
    gave_up = health.watch(41.0, sent_at=11.0)
    assert gave_up is not None and gave_up.health is Health.GAVE_UP
    assert "outage limit 30 s" in gave_up.message and "requests hang" in gave_up.message


def test_a_slow_request_is_no_hang_while_others_answer() -> None:
    health = ApiHealth(URL, HealthRules(hang_after=5.0))
    health.record(A, now=0.0)
    for now in (4.0, 8.0, 12.0):  # other requests answer every 4 s
        health.record(A, now=now, sent_at=now - 0.1)
        assert health.watch(now + 0.5, sent_at=0.0) is None  # one slow request, sent at 0
    assert health.health is Health.UP


def test_the_hang_threshold_follows_the_slowest_recent_answer() -> None:
    health = ApiHealth(URL, HealthRules(hang_after=5.0))
    health.record(A, now=8.0, sent_at=0.0)  # a server that takes 8 s to answer
    assert health.hang_after() == 11.0  # 8 s + 3 s margin
    assert health.watch(18.0, sent_at=8.0) is None  # 10 s: as slow as it is, not hung
    assert health.watch(19.0, sent_at=8.0) is not None


def test_a_large_upload_never_counts_as_hung() -> None:
    health = ApiHealth(URL, HealthRules(hang_after=5.0))
    health.record(A, now=0.0)
    assert health.watch(100.0, sent_at=0.0, small=False) is None
    assert health.health is Health.UP


@pytest.mark.parametrize("field", ["never_worked", "down_after", "hang_after", "outage_limit"])
def test_rules_are_checked(field: str) -> None:
    with pytest.raises(ConfigurationError, match=f"HealthRules.{field} must be > 0, got 0"):
        HealthRules(**{field: 0})
