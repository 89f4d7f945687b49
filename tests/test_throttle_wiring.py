"""Issue 15's wiring, with injected clocks and sleeps: transient conditions waited out, not
counted; 1302 cuts the request rate; the API given up ends every call with one error; Date
headers teach the server clock; sweeps wait behind queued creates while the rate binds."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from fakes import Recorder

from kling_async import (
    ApiHealthChanged,
    ApiUnreachableError,
    ConnectError,
    Credentials,
    DownloadError,
    Event,
    RateLimitError,
    RetryPolicy,
    ServerError,
)
from kling_async._adaptive import RateRules
from kling_async._auth import JwtSigner
from kling_async._health import ApiHealth, Outcome
from kling_async._http import HttpLayer
from kling_async._request_rate import RequestRate
from kling_async._retry import OUTAGE_POLL, THROTTLE_WAIT, Retries

BASE = "http://api.test"
PATH = "/v1/videos/multi-image2video"
URL = BASE + PATH


def env(code: int = 0, data: Any = None) -> Any:
    return {"code": code, "message": "m", "request_id": "r", "data": data}


def throttled() -> RateLimitError:
    return RateLimitError("too many requests", status=429, code=1302)


async def attempts_until(retries: Retries, failures: list[Exception], *, count: str = "all") -> int:
    """Run a Retrying loop whose attempts fail with `failures`, then succeed; the tries made."""
    tries = 0
    async for attempt in retries.attempts("GET", "/x", count=count):  # type: ignore[arg-type]
        tries += 1
        if failures:
            error = failures.pop(0)
            assert isinstance(error, ServerError | RateLimitError | ConnectError | DownloadError)
            attempt.retry(error)
    return tries


def retries_for(rec: Recorder, policy: RetryPolicy, health: ApiHealth | None = None) -> Retries:
    return Retries(
        policy, sleep=rec.sleep, monotonic=rec.monotonic, rng=random.Random(0), health=health
    )


async def test_1302_is_waited_out_uncounted_with_a_short_wait() -> None:
    rec = Recorder()
    tries = await attempts_until(retries_for(rec, RetryPolicy()), [throttled() for _ in range(40)])
    assert tries == 41  # never given up: the request rate paces the resends
    assert rec.waits == [THROTTLE_WAIT] * 40


async def test_server_errors_are_waited_out_backed_off_up_to_wait_max() -> None:
    rec = Recorder()
    policy = RetryPolicy(wait_initial=0.5, wait_max=4.0)
    failures: list[Exception] = [ServerError("boom", status=500, code=5000) for _ in range(30)]
    assert await attempts_until(retries_for(rec, policy), failures) == 31
    assert max(rec.waits) <= 4.0 and rec.waits[-1] >= 2.0  # capped, not growing past wait_max


async def test_the_job_timeout_ends_transient_retries() -> None:
    rec = Recorder()
    policy = RetryPolicy(wait_initial=1.0, wait_max=1.0, wait_jitter=False, timeout=10.0)
    failures: list[Exception] = [ServerError("boom", status=500, code=5000) for _ in range(30)]
    with pytest.raises(ServerError):
        await attempts_until(retries_for(rec, policy), failures)
    assert sum(rec.waits) <= 10.0 and len(rec.waits) == 10


async def test_an_explicit_attempts_cap_still_counts_transient_failures() -> None:
    rec = Recorder()
    failures: list[Exception] = [throttled() for _ in range(10)]
    with pytest.raises(RateLimitError):
        await attempts_until(retries_for(rec, RetryPolicy(attempts=3)), failures)
    assert len(rec.waits) == 2


async def test_download_failures_without_progress_end_after_stalls() -> None:
    rec = Recorder()
    failures: list[Exception] = [DownloadError("cut") for _ in range(10)]
    with pytest.raises(DownloadError):
        await attempts_until(retries_for(rec, RetryPolicy(stalls=3)), failures)
    assert len(rec.waits) == 2


async def test_during_an_outage_transport_errors_are_tried_again_often() -> None:
    rec = Recorder()
    health = ApiHealth(BASE)
    health.record(Outcome.ANSWERED, 0.0)
    health.record(Outcome.TRANSPORT, 1.0, "refused")
    health.check(5.0)
    assert health.waiting
    policy = RetryPolicy(wait_initial=4.0, wait_max=30.0)
    failures: list[Exception] = [ConnectError("refused") for _ in range(8)]
    assert await attempts_until(retries_for(rec, policy, health), failures) == 9
    assert max(rec.waits) <= OUTAGE_POLL


async def test_a_given_up_api_ends_the_loop_with_its_one_message() -> None:
    rec = Recorder()
    health = ApiHealth(BASE)
    health.record(Outcome.TRANSPORT, 0.0, "refused")
    assert health.check(10.0) is not None and health.gave_up is not None
    with pytest.raises(ApiUnreachableError, match="giving up: nothing answers at"):
        await attempts_until(retries_for(rec, RetryPolicy(), health), [ConnectError("refused")])
    assert rec.waits == []


# -- the HTTP layer --------------------------------------------------------------------------


@pytest.fixture
async def layer(api_key: str) -> AsyncIterator[tuple[HttpLayer, Recorder, list[Event]]]:
    rec = Recorder(1000.0)
    events: list[Event] = []
    http = HttpLayer(
        base_url=BASE,
        signer=JwtSigner(Credentials(api_key=api_key)),
        retry=RetryPolicy(wait_initial=0.01, wait_max=0.05),
        sleep=rec.sleep,
        monotonic=rec.monotonic,
        event_hook=events.append,
        rng=random.Random(0),
        rate=RequestRate(RateRules(start_rate=None), monotonic=rec.monotonic, sleep=rec.pace),
    )
    yield http, rec, events
    await http.aclose()


async def test_1302_cuts_the_rate_and_the_call_succeeds(
    layer: tuple[HttpLayer, Recorder, list[Event]], mock_http: aioresponses
) -> None:
    http, _, _ = layer
    # Five in a row make a 1302 ours (one or two could be another process's or a fault).
    mock_http.get(URL, status=429, payload=env(1302), repeat=5)
    mock_http.get(URL, payload=env(0, []))
    assert await http.call("GET", PATH) == []
    assert http.throttled == 5
    state = http.rate.state().rate
    assert state.cuts >= 1 and state.limited


async def test_date_headers_teach_the_server_clock(
    layer: tuple[HttpLayer, Recorder, list[Event]], mock_http: aioresponses
) -> None:
    http, _, _ = layer
    import time

    ahead = formatdate(time.time() + 3600, usegmt=True)
    mock_http.get(URL, payload=env(0, []), headers={"Date": ahead}, repeat=True)
    for _ in range(3):
        await http.call("GET", PATH)
    offset = http.server_clock.offset
    assert offset is not None and abs(offset - 3600) < 2


async def test_a_url_that_never_answers_is_given_up_once_then_nothing_is_sent(
    layer: tuple[HttpLayer, Recorder, list[Event]], mock_http: aioresponses
) -> None:
    http, rec, events = layer
    refused = aiohttp.ClientConnectionError("refused")
    mock_http.get(URL, exception=refused, repeat=True)
    with pytest.raises(ApiUnreachableError) as info:
        await http.call("GET", PATH)
    assert "giving up: nothing answers at http://api.test" in str(info.value)
    assert rec.now - 1000.0 >= 10.0  # the never-worked window, on the injected clock
    sent = http.requests_sent
    with pytest.raises(ApiUnreachableError):
        await http.call("GET", PATH)
    assert http.requests_sent == sent  # given up: nothing more is sent
    health = [e for e in events if isinstance(e, ApiHealthChanged)]
    assert [e.health for e in health] == ["gave up"]
