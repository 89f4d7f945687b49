"""Retry decisions and back-off (kling_async._retry)."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import pytest
from fakes import Recorder
from hypothesis import given
from hypothesis import strategies as st

from kling_async import (
    ConfigurationError,
    ConnectError,
    Event,
    InvalidRequestError,
    KlingError,
    RequestRetry,
    RequestTimeoutError,
    ResponseValidationError,
    RetryPolicy,
    ServerError,
)
from kling_async._errors import error_from_response
from kling_async._retry import (
    Retries,
    Retrying,
    Verdict,
    backoff,
    classify,
    is_ambiguous_create,
)


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


# -- Retrying: the one loop every retry site runs ----------------------------------------------


def retries(rec: Recorder, events: list[Event] | None = None, **policy: Any) -> Retries:
    policy.setdefault("wait_jitter", False)
    return Retries(
        RetryPolicy(**policy),
        sleep=rec.sleep,
        monotonic=rec.monotonic,
        rng=random.Random(7),
        hook=None if events is None else events.append,
    )


async def fail_then(
    loop: Retrying, failures: int, *, again: int = 0, took: float = 0.0, rec: Recorder
) -> tuple[str, list[int]]:
    """Run `loop` over attempts that fail `failures` times (after `again` re-tries at once)."""
    numbers = []
    async for attempt in loop:
        numbers.append(attempt.number)
        rec.now += took
        if again:
            again -= 1
            attempt.again()
        elif failures:
            failures -= 1
            attempt.retry(api(5000, 500))
    return "done", numbers


async def test_an_attempt_that_asks_for_nothing_ends_the_loop() -> None:
    rec = Recorder()
    assert await fail_then(retries(rec).attempts("GET", "/x"), 0, rec=rec) == ("done", [1])
    assert rec.waits == []


async def test_retries_wait_the_backoff_and_report_one_event_shape() -> None:
    rec, events = Recorder(), []  # type: ignore[var-annotated]
    loop = retries(rec, events, attempts=4, wait_initial=0.5).attempts("POST", "/v1/x")
    assert await fail_then(loop, 2, rec=rec) == ("done", [1, 2, 3])
    assert rec.waits == [0.5, 1.0]
    assert events == [
        RequestRetry("POST", "/v1/x", 1, 0.5, "ServerError", 5000),
        RequestRetry("POST", "/v1/x", 2, 1.0, "ServerError", 5000),
    ]


async def test_the_last_attempt_raises_its_error() -> None:
    rec = Recorder()
    loop = retries(rec, attempts=3).attempts("GET", "/x")
    with pytest.raises(ServerError):
        await fail_then(loop, 5, rec=rec)
    assert len(rec.waits) == 2  # three attempts in all


async def test_the_time_budget_counts_waits_and_attempts() -> None:
    rec = Recorder()
    loop = retries(rec, attempts=100, wait_initial=1.0, wait_max=1.0, timeout=9.5)
    with pytest.raises(ServerError):
        await fail_then(loop.attempts("GET", "/x"), 100, took=2.0, rec=rec)
    assert rec.waits == [1.0, 1.0, 1.0]  # 2+1+2+1+2+1+2 = 11: a fourth wait ends past 9.5


async def test_again_is_at_once_and_not_counted() -> None:
    rec = Recorder()
    loop = retries(rec, attempts=2).attempts("GET", "/x")
    assert await fail_then(loop, 1, again=3, rec=rec) == ("done", [1, 2, 3, 4, 5])
    assert len(rec.waits) == 1  # the one counted failure


async def test_the_injected_random_source_draws_the_jitter() -> None:
    async def waits(seed: int) -> list[float]:
        rec = Recorder()
        loop = Retries(RetryPolicy(), sleep=rec.sleep, rng=random.Random(seed))
        await fail_then(loop.attempts("GET", "/x"), 4, rec=rec)
        return rec.waits

    assert await waits(1) == await waits(1)
    assert await waits(1) != await waits(2)


async def test_progress_restarts_the_time_budget() -> None:
    rec = Recorder()
    policy = {"attempts": 100, "wait_initial": 1.0, "wait_max": 1.0, "timeout": 5.0}
    loop = retries(rec, **policy).attempts("GET", "/video")
    tries = 0
    async for attempt in loop:  # each attempt runs 3 s and receives bytes before it fails
        tries += 1
        rec.now += 3.0
        if tries < 6:
            attempt.progressed()
            attempt.retry(api(5000, 500))
    assert tries == 6  # 6 × 3 s + waits: far past 5 s, but never 5 s without progress


@pytest.mark.parametrize(("count", "tries"), [("all", 3), ("without_progress", 10)])
async def test_what_progress_does_to_the_count(count: Any, tries: int) -> None:
    rec = Recorder()
    loop = retries(rec, attempts=3).attempts("GET", "/video", count=count)
    seen = 0
    with contextlib.suppress(ServerError):
        async for attempt in loop:
            seen += 1
            if seen == 10:
                break
            attempt.progressed()  # every attempt got some bytes
            attempt.retry(api(5000, 500))
    # Counted from the start, 3 attempts; counted since the last progress, never exhausted.
    assert seen == tries
