"""The HTTP layer: auth header, envelope parsing, error mapping, retries (kling_async._http)."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import jwt
import pytest
from aioresponses import aioresponses
from fakes import Recorder

from kling_async import (
    AccountError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConcurrencyLimitError,
    ConnectError,
    ContentPolicyError,
    Credentials,
    Event,
    RateLimitError,
    RequestRetry,
    RequestTimeoutError,
    ResponseValidationError,
    RetryPolicy,
    ServerError,
    TransportError,
)
from kling_async._adaptive import RateRules
from kling_async._auth import JwtSigner
from kling_async._envelope import parse_envelope
from kling_async._http import HttpLayer, new_session
from kling_async._request_rate import RequestRate

BASE = "http://api.test"
PATH = "/v1/videos/multi-image2video"
URL = BASE + PATH
NOW = 1_722_769_557


def env(code: int = 0, data: Any = None, *, message: str = "SUCCEED", rid: str = "rid-1") -> Any:
    body: dict[str, Any] = {"code": code, "message": message, "request_id": rid}
    if data is not None:
        body["data"] = data
    return body


class Harness:
    def __init__(
        self, layer: HttpLayer, rec: Recorder, clock: list[float], signer: JwtSigner
    ) -> None:
        self.layer = layer
        self.rec = rec
        self.clock = clock
        self.signer = signer

    def policy(self, policy: RetryPolicy) -> None:
        self.layer.retries = replace(self.layer.retries, policy=policy)


@pytest.fixture
async def h(access_key: str, secret_key: str) -> AsyncIterator[Harness]:
    rec = Recorder(1000.0)
    clock = [float(NOW)]
    signer = JwtSigner(
        Credentials(access_key=access_key, secret_key=secret_key), clock=lambda: clock[0]
    )
    layer = HttpLayer(
        base_url=BASE + "/",
        signer=signer,
        retry=RetryPolicy(attempts=4, wait_initial=0.5, wait_max=4.0, timeout=60.0),
        sleep=rec.sleep,
        monotonic=rec.monotonic,
        rng=random.Random(0),
        rate=RequestRate(RateRules(start_rate=None), monotonic=rec.monotonic, sleep=rec.pace),
    )
    yield Harness(layer, rec, clock, signer)
    await layer.aclose()


def calls(m: aioresponses, method: str = "GET", url: str = URL) -> list[Any]:
    return [
        c for (meth, u), cs in m.requests.items() for c in cs if meth == method and str(u) == url
    ]


# --- parse_envelope (pure) -----------------------------------------------------------------


def test_parse_envelope_success() -> None:
    body = json.dumps(env(0, {"task_id": "t"})).encode()
    assert parse_envelope(200, body, {}) == {"task_id": "t"}
    assert parse_envelope(200, json.dumps(env(0)).encode(), {}) is None


@pytest.mark.parametrize("status", [200, 201, 400, 404, 429])
@pytest.mark.parametrize("body", [b"<html>bad gateway</html>", b"", b"[1, 2]", b'{"no": "code"}'])
def test_parse_envelope_not_an_envelope(status: int, body: bytes) -> None:
    with pytest.raises(ResponseValidationError) as info:
        parse_envelope(status, body, {})
    assert info.value.status == status
    assert info.value.body == body.decode()


@pytest.mark.parametrize("body", [b"<html>oops</html>", b'{"code": "5000"}', b'{"code": true}'])
def test_parse_envelope_5xx_without_envelope(body: bytes) -> None:
    with pytest.raises(ServerError) as info:
        parse_envelope(502, body, {})
    assert info.value.status == 502
    assert info.value.code is None


def test_parse_envelope_error_under_200() -> None:
    body = json.dumps(env(1201, message="bad key", rid="r-9")).encode()
    with pytest.raises(BadRequestError) as info:
        parse_envelope(200, body, {})
    assert (info.value.status, info.value.code, info.value.request_id) == (200, 1201, "r-9")
    assert info.value.message == "bad key"


def test_parse_envelope_code_zero_under_error_status() -> None:
    with pytest.raises(ServerError) as info:
        parse_envelope(503, json.dumps(env(0)).encode(), {})
    assert info.value.code is None


def test_parse_envelope_odd_types() -> None:
    body = json.dumps({"code": 1302, "message": 7, "request_id": ["x"]}).encode()
    with pytest.raises(RateLimitError) as info:
        parse_envelope(429, body, {"Retry-After": "2.5"})
    assert info.value.message == "no message"
    assert info.value.request_id is None
    assert info.value.retry_after == 2.5
    for header in ("Wed, 21 Oct 2015 07:28:00 GMT", "soon"):
        with pytest.raises(RateLimitError) as info:
            parse_envelope(429, body, {"Retry-After": header})
        assert info.value.retry_after is None


# --- requests on the wire ------------------------------------------------------------------


async def test_authorization_header(
    h: Harness, mock_http: aioresponses, access_key: str, secret_key: str
) -> None:
    mock_http.get(URL + "/t1", payload=env(0, {"task_id": "t1"}))
    mock_http.post(URL, payload=env(0, {"task_id": "t2"}))
    assert await h.layer.call("GET", PATH + "/t1") == {"task_id": "t1"}
    assert await h.layer.call("POST", PATH, body=b'{"a": 1}') == {"task_id": "t2"}
    (get,) = calls(mock_http, "GET", URL + "/t1")
    (post,) = calls(mock_http, "POST")
    for call in (get, post):
        value = call.kwargs["headers"]["Authorization"]
        token = value.removeprefix("Bearer ")
        assert value == f"Bearer {token}"
        claims = jwt.decode(token, secret_key, algorithms=["HS256"], options={"verify_exp": False})
        assert claims == {"iss": access_key, "exp": NOW + 1800, "nbf": NOW - 5}
    assert post.kwargs["headers"]["Content-Type"] == "application/json"
    assert "Content-Type" not in get.kwargs["headers"]
    assert post.kwargs["data"] == b'{"a": 1}'
    assert h.layer.requests_sent == 2


async def test_api_key_header(mock_http: aioresponses, api_key: str) -> None:
    layer = HttpLayer(base_url=BASE, signer=JwtSigner(Credentials(api_key=api_key)))
    mock_http.get(URL + "/t", payload=env(0, {}))
    try:
        await layer.call("GET", PATH + "/t")
    finally:
        await layer.aclose()
    (call,) = calls(mock_http, "GET", URL + "/t")
    assert call.kwargs["headers"]["Authorization"] == f"Bearer {api_key}"


async def test_params_sent(h: Harness, mock_http: aioresponses) -> None:
    mock_http.get(URL + "?pageNum=2&pageSize=30", payload=env(0, []))
    assert await h.layer.call("GET", PATH, params={"pageNum": 2, "pageSize": 30}) == []


async def test_session_has_no_default_auth(h: Harness) -> None:
    assert "Authorization" not in h.layer.session.headers
    assert h.layer.session.auth is None


# --- errors and retries ----------------------------------------------------------------------


async def test_business_error_under_200_not_retried(h: Harness, mock_http: aioresponses) -> None:
    mock_http.post(URL, payload=env(1201, message="bad"), repeat=True)
    with pytest.raises(BadRequestError) as info:
        await h.layer.call("POST", PATH, body=b"{}")
    assert (info.value.status, info.value.code, info.value.request_id) == (200, 1201, "rid-1")
    assert len(calls(mock_http, "POST")) == 1


async def test_envelope_without_code(h: Harness, mock_http: aioresponses) -> None:
    mock_http.get(URL + "/t", payload={"message": "hi"}, repeat=True)
    with pytest.raises(ResponseValidationError):
        await h.layer.call("GET", PATH + "/t", retry=False)


async def test_non_json_bodies(h: Harness, mock_http: aioresponses) -> None:
    mock_http.get(URL + "/a", status=200, body="<html/>", content_type="text/html")
    mock_http.get(URL + "/b", status=502, body="<html/>", content_type="text/html")
    with pytest.raises(ResponseValidationError) as info:
        await h.layer.call("GET", PATH + "/a", retry=False)
    assert info.value.body == "<html/>"
    with pytest.raises(ServerError) as err:
        await h.layer.call("GET", PATH + "/b", retry=False)
    assert err.value.status == 502


@pytest.mark.parametrize(("status", "code"), [(500, 5000), (503, 5001), (504, 5002), (429, 1302)])
async def test_retried_then_success(
    h: Harness, mock_http: aioresponses, status: int, code: int
) -> None:
    events: list[Event] = []
    h.layer.retries = replace(h.layer.retries, hook=events.append)
    mock_http.get(URL + "/t", status=status, payload=env(code), repeat=2)
    mock_http.get(URL + "/t", payload=env(0, {"ok": True}))
    assert await h.layer.call("GET", PATH + "/t") == {"ok": True}
    assert len(calls(mock_http, "GET", URL + "/t")) == 3
    assert len(h.rec.waits) == 2
    assert 0.25 <= h.rec.waits[0] <= 0.5
    assert 0.25 <= h.rec.waits[1] <= 1.0
    assert [e.kind for e in events] == ["request_retry", "request_retry"]
    assert all(isinstance(e, RequestRetry) for e in events)
    assert events[0] == RequestRetry(
        method="GET",
        path=PATH + "/t",
        attempt=1,
        delay=round(h.rec.waits[0], 3),
        error=events[0].error,
        code=code,
    )
    assert events[0].error in ("ServerError", "RateLimitError")
    assert events[1].attempt == 2  # type: ignore[attr-defined]


async def test_retry_after_honoured(h: Harness, mock_http: aioresponses) -> None:
    mock_http.get(URL + "/t", status=429, payload=env(1302), headers={"Retry-After": "3"})
    mock_http.get(URL + "/t", payload=env(0, 1))
    assert await h.layer.call("GET", PATH + "/t") == 1
    assert h.rec.waits == [3.0]


async def test_concurrency_backoff_at_least_one_second(h: Harness, mock_http: aioresponses) -> None:
    mock_http.post(URL, status=429, payload=env(1303), repeat=3)
    mock_http.post(URL, payload=env(0, 1))
    assert await h.layer.call("POST", PATH, body=b"{}") == 1
    assert len(h.rec.waits) == 3
    assert all(w >= 1.0 for w in h.rec.waits)


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (429, 1100, AccountError),
        (429, 1101, AccountError),
        (429, 1102, AccountError),
        (403, 1103, AccountError),
        (429, 1304, AccountError),
        (400, 1200, BadRequestError),
        (400, 1201, BadRequestError),
        (404, 1202, BadRequestError),
        (404, 1203, BadRequestError),
        (400, 1300, ContentPolicyError),
        (400, 1301, ContentPolicyError),
        (401, 1000, AuthenticationError),
        (401, 1002, AuthenticationError),
    ],
)
async def test_never_retried(
    h: Harness, mock_http: aioresponses, status: int, code: int, cls: type[Exception]
) -> None:
    mock_http.get(URL + "/t", status=status, payload=env(code, rid="rq"), repeat=True)
    with pytest.raises(cls) as info:
        await h.layer.call("GET", PATH + "/t")
    assert type(info.value) is cls
    assert len(calls(mock_http, "GET", URL + "/t")) == 1
    assert h.rec.waits == []
    assert "rq" in str(info.value)


async def test_stops_after_attempts(h: Harness, mock_http: aioresponses) -> None:
    mock_http.get(URL + "/t", status=500, payload=env(5000), repeat=True)
    with pytest.raises(ServerError):
        await h.layer.call("GET", PATH + "/t")
    assert len(calls(mock_http, "GET", URL + "/t")) == 4  # RetryPolicy(attempts=4)
    assert len(h.rec.waits) == 3


async def test_no_retry_when_disabled(h: Harness, mock_http: aioresponses) -> None:
    mock_http.post(URL, status=500, payload=env(5000), repeat=True)
    with pytest.raises(ServerError):
        await h.layer.call("POST", PATH, body=b"{}", retry=False)
    assert len(calls(mock_http, "POST")) == 1


async def test_total_budget(h: Harness, mock_http: aioresponses) -> None:
    h.policy(
        RetryPolicy(attempts=100, wait_initial=4.0, wait_max=4.0, wait_jitter=False, timeout=10.0)
    )
    mock_http.get(URL + "/t", status=503, payload=env(5001), repeat=True)
    with pytest.raises(ServerError):
        await h.layer.call("GET", PATH + "/t")
    # 4 s + 4 s fit in the 10 s budget; a third wait would end past it
    assert h.rec.waits == [4.0, 4.0]
    assert len(calls(mock_http, "GET", URL + "/t")) == 3


async def test_budget_counts_time_spent_in_requests(h: Harness, mock_http: aioresponses) -> None:
    h.policy(
        RetryPolicy(attempts=100, wait_initial=1.0, wait_max=1.0, wait_jitter=False, timeout=9.5)
    )

    def slow(url: Any, **kwargs: Any) -> None:
        h.rec.now += 4.0  # each request takes 4 s of (fake) time

    mock_http.get(URL + "/t", status=500, payload=env(5000), repeat=True, callback=slow)
    with pytest.raises(ServerError):
        await h.layer.call("GET", PATH + "/t")
    assert h.rec.waits == [1.0]  # 4 + 1 + 4 = 9; one more wait would pass 9.5


async def test_resign_once_on_expired(h: Harness, mock_http: aioresponses) -> None:
    mock_http.get(URL + "/t", status=401, payload=env(1004, message="token expired"))
    mock_http.get(URL + "/t", payload=env(0, "ok"))
    first = h.signer.header()
    h.clock[0] += 1  # the new token must differ from the cached one
    assert await h.layer.call("GET", PATH + "/t") == "ok"
    sent = [c.kwargs["headers"]["Authorization"] for c in calls(mock_http, "GET", URL + "/t")]
    assert sent[0] == first
    assert sent[1] != first
    assert h.rec.waits == []


async def test_resign_not_yet_valid_then_success(h: Harness, mock_http: aioresponses) -> None:
    mock_http.post(URL, status=401, payload=env(1003))
    mock_http.post(URL, payload=env(0, "ok"))
    assert await h.layer.call("POST", PATH, body=b"{}", retry=False) == "ok"
    assert len(calls(mock_http, "POST")) == 2


async def test_expired_twice_mentions_clock(h: Harness, mock_http: aioresponses) -> None:
    mock_http.get(URL + "/t", status=401, payload=env(1004, message="token expired"), repeat=True)
    with pytest.raises(AuthenticationError) as info:
        await h.layer.call("GET", PATH + "/t")
    assert "clock" in str(info.value)
    assert "clock" in info.value.message
    assert info.value.code == 1004
    assert len(calls(mock_http, "GET", URL + "/t")) == 2


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (aiohttp.ClientConnectionError("reset"), ConnectError),
        (aiohttp.ServerDisconnectedError(), ConnectError),
        (aiohttp.ClientOSError(104, "reset"), ConnectError),
        (TimeoutError(), RequestTimeoutError),
        (aiohttp.ServerTimeoutError("slow"), RequestTimeoutError),
        (aiohttp.ClientPayloadError("bad"), TransportError),
    ],
)
async def test_transport_errors(
    h: Harness, mock_http: aioresponses, exc: Exception, cls: type[Exception]
) -> None:
    mock_http.get(URL + "/t", exception=exc)
    mock_http.get(URL + "/t", exception=exc)
    mock_http.get(URL + "/t", payload=env(0, "ok"))
    assert await h.layer.call("GET", PATH + "/t") == "ok"  # reads are retried
    assert len(h.rec.waits) == 2
    mock_http.get(URL + "/u", exception=exc, repeat=True)
    with pytest.raises(cls) as info:
        await h.layer.call("GET", PATH + "/u", retry=False)
    assert type(info.value) is cls
    assert info.value.__cause__ is exc


async def test_connector_error(access_key: str, secret_key: str) -> None:
    # a real refused connection on 127.0.0.1 (port 1 is never listening in the test sandbox)
    layer = HttpLayer(
        base_url="http://127.0.0.1:1",
        signer=JwtSigner(Credentials(access_key=access_key, secret_key=secret_key)),
    )
    try:
        with pytest.raises(ConnectError, match="cannot connect"):
            await layer.call("GET", PATH, retry=False)
    finally:
        await layer.aclose()


async def test_rate_limiter(mock_http: aioresponses, api_key: str) -> None:
    layer = HttpLayer(base_url=BASE, signer=JwtSigner(Credentials(api_key=api_key)), rps=1000)
    mock_http.get(URL + "/t", payload=env(0, 1), repeat=True)
    try:
        assert [await layer.call("GET", PATH + "/t") for _ in range(3)] == [1, 1, 1]
    finally:
        await layer.aclose()


async def test_concurrency_error_class(h: Harness, mock_http: aioresponses) -> None:
    mock_http.post(URL, status=429, payload=env(1303), repeat=True)
    with pytest.raises(ConcurrencyLimitError):
        await h.layer.call("POST", PATH, body=b"{}", retry=False)


# --- session ownership -----------------------------------------------------------------------


async def test_own_session_closed(api_key: str) -> None:
    layer = HttpLayer(base_url=BASE, signer=JwtSigner(Credentials(api_key=api_key)))
    session = layer.session
    assert layer.session is session
    await layer.aclose()
    assert session.closed
    await layer.aclose()  # idempotent
    with pytest.raises(ClientClosedError, match="closed"):  # no new session behind our back
        layer.session  # noqa: B018
    with pytest.raises(ClientClosedError):
        await layer.call("GET", PATH + "/t")


async def test_borrowed_session_not_closed(api_key: str, mock_http: aioresponses) -> None:
    async with aiohttp.ClientSession() as borrowed:
        layer = HttpLayer(
            base_url=BASE, signer=JwtSigner(Credentials(api_key=api_key)), session=borrowed
        )
        mock_http.get(URL + "/t", payload=env(0, 1))
        assert await layer.call("GET", PATH + "/t") == 1
        assert layer.session is borrowed
        await layer.aclose()
        assert not borrowed.closed
    assert borrowed.closed


async def test_new_session_timeouts() -> None:
    from kling_async import Timeouts

    session = new_session(Timeouts(connect=1, read=2, total=3))
    try:
        assert (session.timeout.total, session.timeout.sock_connect) == (3, 1)
        assert session.timeout.sock_read == 2
        assert not session.headers.get("Authorization")
    finally:
        await session.close()


def test_timeouts_validated() -> None:
    from kling_async import ConfigurationError, Timeouts

    with pytest.raises(ConfigurationError, match=r"Timeouts\.read"):
        Timeouts(read=0)


async def test_debug_log_line(
    h: Harness, mock_http: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    mock_http.get(URL + "/t", payload=env(0, 1))
    with caplog.at_level(logging.DEBUG, logger="kling_async"):
        await h.layer.call("GET", PATH + "/t")
    assert "GET /v1/videos/multi-image2video/t → HTTP 200" in caplog.text
    assert "Bearer" not in caplog.text
