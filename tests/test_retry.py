"""Retry decisions and back-off (kling_async._retry)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kling_async import (
    ConfigurationError,
    ConnectError,
    InvalidRequestError,
    KlingError,
    RequestTimeoutError,
    ResponseValidationError,
    RetryPolicy,
)
from kling_async._errors import error_from_response
from kling_async._retry import Verdict, backoff, classify, is_ambiguous_create


def api(code: int, status: int = 400, retry_after: float | None = None) -> KlingError:
    return error_from_response(
        status=status, code=code, message="m", request_id="r", retry_after=retry_after
    )


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        *[(api(c, 401), Verdict.STOP) for c in (1000, 1001, 1002)],
        *[(api(c, 401), Verdict.RESIGN) for c in (1003, 1004)],
        *[(api(c, 429), Verdict.STOP) for c in (1100, 1101, 1102, 1304)],
        (api(1103, 403), Verdict.STOP),
        *[(api(c), Verdict.STOP) for c in (1200, 1201, 1202, 1203, 1300, 1301)],
        (api(1302, 429), Verdict.RETRY),
        (api(1303, 429), Verdict.RETRY),
        *[(api(c, 500), Verdict.RETRY) for c in (5000, 5001, 5002)],
        (error_from_response(status=502, code=None, message="", request_id=None), Verdict.RETRY),
        (error_from_response(status=401, code=None, message="", request_id=None), Verdict.STOP),
        (ConnectError("reset"), Verdict.RETRY),
        (RequestTimeoutError("slow"), Verdict.RETRY),
        (ResponseValidationError("junk"), Verdict.RETRY),
        (InvalidRequestError("x", field="prompt"), Verdict.STOP),
        (ValueError("not ours"), Verdict.STOP),
    ],
)
def test_classify(error: BaseException, verdict: Verdict) -> None:
    assert classify(error) is verdict


@pytest.mark.parametrize(
    ("error", "ambiguous"),
    [
        (api(5000, 500), True),
        (api(5001, 503), True),
        (api(5002, 504), True),
        (ConnectError("reset"), True),
        (RequestTimeoutError("slow"), True),
        (api(1201), False),
        (api(1302, 429), False),
        (api(1303, 429), False),
        (api(1102, 429), False),
        (api(1004, 401), False),
    ],
)
def test_is_ambiguous_create(error: KlingError, ambiguous: bool) -> None:
    assert is_ambiguous_create(error) is ambiguous


def test_backoff_without_jitter_grows_exponentially_and_caps() -> None:
    policy = RetryPolicy(wait_initial=0.5, wait_max=5.0, wait_exp_base=2.0, wait_jitter=False)
    waits = [backoff(n, policy) for n in range(8)]
    assert waits == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]


def test_backoff_jitter_within_bounds() -> None:
    policy = RetryPolicy(wait_initial=0.5, wait_max=8.0, wait_exp_base=2.0)
    rng = random.Random(1234)
    for attempt in range(10):
        ceiling = min(8.0, 0.5 * 2**attempt)
        waits = [backoff(attempt, policy, rng=rng) for _ in range(200)]
        assert all(0.25 <= w <= ceiling for w in waits), attempt
        if attempt >= 2:  # the jitter really spreads the waits
            assert max(waits) - min(waits) > ceiling / 4


def test_backoff_seeded_is_reproducible() -> None:
    policy = RetryPolicy()
    one = [backoff(n, policy, rng=random.Random(7)) for n in range(5)]
    two = [backoff(n, policy, rng=random.Random(7)) for n in range(5)]
    assert one == two


def test_backoff_never_above_wait_max_even_below_initial() -> None:
    policy = RetryPolicy(wait_initial=2.0, wait_max=0.5)
    rng = random.Random(3)
    assert all(backoff(n, policy, rng=rng) <= 0.5 for n in range(5) for _ in range(50))


@pytest.mark.parametrize("jitter", [True, False])
def test_backoff_concurrency_at_least_one_second(jitter: bool) -> None:
    policy = RetryPolicy(wait_initial=0.1, wait_max=30.0, wait_jitter=jitter)
    rng = random.Random(99)
    error = api(1303, 429)
    waits = [backoff(n, policy, error=error, rng=rng) for n in range(6) for _ in range(100)]
    assert min(waits) >= 1.0
    assert max(waits) <= 30.0
    # a 1302 keeps the ordinary initial wait
    assert min(backoff(0, policy, error=api(1302, 429), rng=rng) for _ in range(100)) < 1.0


def test_backoff_honours_retry_after() -> None:
    policy = RetryPolicy(wait_initial=0.1, wait_max=30.0)
    rng = random.Random(5)
    assert backoff(0, policy, error=api(1302, 429, retry_after=7.0), rng=rng) == 7.0
    # capped by wait_max, so a hostile header cannot park us for hours
    assert backoff(0, policy, error=api(1302, 429, retry_after=3600.0), rng=rng) == 30.0
    # a Retry-After shorter than our own back-off does not shorten it
    wait = backoff(6, policy, error=api(1302, 429, retry_after=0.01), rng=rng)
    assert wait >= 0.05


def test_policy_validation() -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(attempts=0)
    with pytest.raises(ConfigurationError):
        RetryPolicy(wait_max=0)
    with pytest.raises(ConfigurationError):
        RetryPolicy(timeout=-1)


@given(
    attempt=st.integers(min_value=0, max_value=60),
    initial=st.floats(min_value=0.001, max_value=10),
    maximum=st.floats(min_value=0.001, max_value=100),
    base=st.floats(min_value=1.0, max_value=4.0),
    code=st.sampled_from([None, 1302, 1303, 5000]),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_bounds_property(
    attempt: int, initial: float, maximum: float, base: float, code: int | None, seed: int
) -> None:
    policy = RetryPolicy(wait_initial=initial, wait_max=maximum, wait_exp_base=base)
    error = None if code is None else api(code, 429 if code < 5000 else 500)
    wait = backoff(attempt, policy, error=error, rng=random.Random(seed))
    assert 0 < wait <= maximum
    if code == 1303:
        assert wait >= min(max(initial, 1.0), maximum)
    else:
        assert wait >= min(initial / 2, maximum)
