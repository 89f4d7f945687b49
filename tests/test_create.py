"""Creating a task exactly once (kling_async._create.create_task)."""

from __future__ import annotations

import json
import random
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aioresponses import aioresponses
from fakes import Recorder

from kling_async import (
    AccountError,
    AuthenticationError,
    BadRequestError,
    ConcurrencyLimitError,
    ContentPolicyError,
    Credentials,
    Event,
    MultiImageToVideoRequest,
    RateLimitError,
    ResponseValidationError,
    RetryPolicy,
    ServerError,
    TaskStatus,
    TaskSubmitted,
)
from kling_async._adaptive import RateRules
from kling_async._auth import JwtSigner
from kling_async._body import CreateBody
from kling_async._create import CREATE_PATH, create_task, new_external_id
from kling_async._http import HttpLayer
from kling_async._request_rate import RequestRate
from kling_async._retry import Retries

BASE = "http://api.test"
URL = BASE + CREATE_PATH
BY_ID = re.compile(re.escape(URL) + r"/[^/?]+$")
MS = 1_722_769_557_708


def _raw(data: Any) -> Any:
    """The body as it would be sent (a create body streams from its sources)."""
    return data.decode() if isinstance(data, CreateBody) else data


def env(code: int = 0, data: Any = None, message: str = "m") -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message, "request_id": "rid"}
    if data is not None:
        body["data"] = data
    return body


def task(task_id: str = "t-1", status: str = "submitted", ext: str | None = None) -> Any:
    data: dict[str, Any] = {
        "task_id": task_id,
        "task_status": status,
        "created_at": MS,
        "updated_at": MS,
    }
    if ext is not None:
        data["task_info"] = {"external_task_id": ext}
    return data


class Harness:
    def __init__(self, layer: HttpLayer, rec: Recorder, m: aioresponses) -> None:
        self.layer, self.rec, self.m = layer, rec, m
        self.events: list[Event] = []
        self.policy = RetryPolicy(attempts=4, wait_initial=0.5, wait_max=4.0, timeout=600.0)

    async def create(self, request: MultiImageToVideoRequest | None = None, **kw: Any) -> Any:
        request = request or MultiImageToVideoRequest(
            images=["https://cdn.example.com/a.png"], prompt="a dog"
        )
        retries = Retries(
            self.policy,
            sleep=self.rec.sleep,
            monotonic=self.rec.monotonic,
            rng=random.Random(1),
            hook=self.events.append,
        )
        return await create_task(self.layer, request, retries=retries, **kw)

    def posts(self) -> list[dict[str, Any]]:
        return [
            json.loads(_raw(c.kwargs["data"]))
            for (meth, u), cs in self.m.requests.items()
            for c in cs
            if meth == "POST" and str(u) == URL
        ]

    def gets(self) -> list[str]:
        return [
            str(u).rsplit("/", 1)[1]
            for (meth, u), cs in self.m.requests.items()
            for _ in cs
            if meth == "GET"
        ]


@pytest.fixture
async def h(api_key: str, mock_http: aioresponses) -> AsyncIterator[Harness]:
    rec = Recorder()
    layer = HttpLayer(
        base_url=BASE,
        signer=JwtSigner(Credentials(api_key=api_key)),
        retry=RetryPolicy(attempts=3, wait_initial=0.1, wait_max=1.0),
        sleep=rec.sleep,
        monotonic=rec.monotonic,
        rng=random.Random(2),
        rate=RequestRate(RateRules(start_rate=None), monotonic=rec.monotonic, sleep=rec.pace),
    )
    yield Harness(layer, rec, mock_http)
    await layer.aclose()


def test_new_external_id() -> None:
    one, two = new_external_id(), new_external_id()
    assert re.fullmatch(r"ka-[0-9a-f]{32}", one)
    assert one != two


async def test_success_generates_external_id(h: Harness) -> None:
    h.m.post(URL, payload=env(0, task()))
    created = await h.create()
    (body,) = h.posts()
    key = body["external_task_id"]
    assert re.fullmatch(r"ka-[0-9a-f]{32}", key)
    assert created.task_id == "t-1"
    assert created.task_status is TaskStatus.SUBMITTED
    assert created.external_task_id == key  # filled in: the create answer has no task_info
    assert body["image_list"] == [{"image": "https://cdn.example.com/a.png"}]
    assert h.gets() == []
    assert [e.kind for e in h.events] == ["task_submitted"]
    assert h.events[0] == TaskSubmitted(task_id="t-1", external_task_id=key)


async def test_success_keeps_given_external_id(h: Harness) -> None:
    h.m.post(URL, payload=env(0, task()))
    req = MultiImageToVideoRequest(
        images=["https://cdn.example.com/a.png"], prompt="p", external_task_id="mine-1"
    )
    created = await h.create(req)
    assert h.posts()[0]["external_task_id"] == "mine-1"
    assert created.external_task_id == "mine-1"


@pytest.mark.parametrize("code", [5000, 5001, 5002])
async def test_ambiguous_found_no_second_post(h: Harness, code: int) -> None:
    h.m.post(URL, status=500, payload=env(code), repeat=True)
    h.m.get(BY_ID, payload=env(0, task("found-1", "processing", ext="x")))
    created = await h.create()
    assert created.task_id == "found-1"
    assert created.task_status is TaskStatus.PROCESSING
    assert len(h.posts()) == 1
    assert h.gets() == [h.posts()[0]["external_task_id"]]
    assert h.rec.waits == []
    assert [e.kind for e in h.events] == ["task_submitted"]


async def test_ambiguous_not_found_reposts(h: Harness) -> None:
    h.m.post(URL, status=504, payload=env(5002))
    h.m.get(BY_ID, status=404, payload=env(1203, message="task not found"))
    h.m.post(URL, payload=env(0, task("t-2")))
    created = await h.create()
    assert created.task_id == "t-2"
    posts = h.posts()
    assert len(posts) == 2
    assert posts[0] == posts[1]  # the same body, the same idempotency key
    assert len(h.gets()) == 1
    assert len(h.rec.waits) == 1


async def test_timeout_found(h: Harness) -> None:
    h.m.post(URL, exception=TimeoutError())
    h.m.get(BY_ID, payload=env(0, task("t-9")))
    created = await h.create()
    assert created.task_id == "t-9"
    assert len(h.posts()) == 1


async def test_timeout_not_found_reposts(h: Harness) -> None:
    h.m.post(URL, exception=TimeoutError())
    h.m.get(BY_ID, status=404, payload=env(1203))
    h.m.post(URL, payload=env(0, task("t-3")))
    assert (await h.create()).task_id == "t-3"
    assert len(h.posts()) == 2


async def test_lookup_404_without_code(h: Harness) -> None:
    h.m.post(URL, exception=TimeoutError())
    h.m.get(BY_ID, status=404, body="not found", content_type="text/plain", repeat=True)
    h.m.post(URL, payload=env(0, task("t-4")))
    # a bare 404 is not an envelope: it cannot prove the task is absent, so it is not adopted
    with pytest.raises(ResponseValidationError):
        await h.create()
    assert len(h.posts()) == 1


async def test_duplicate_after_ambiguous_adopts(h: Harness) -> None:
    h.m.post(URL, status=500, payload=env(5000))
    h.m.get(BY_ID, status=404, payload=env(1203))  # not visible yet
    h.m.post(URL, payload=env(1201, message="external_task_id already exists"))
    h.m.get(BY_ID, payload=env(0, task("t-5", "submitted")))
    created = await h.create()
    assert created.task_id == "t-5"
    assert len(h.posts()) == 2
    assert len(h.gets()) == 2


async def test_duplicate_after_ambiguous_not_found_raises(h: Harness) -> None:
    h.m.post(URL, status=500, payload=env(5000))
    h.m.get(BY_ID, status=404, payload=env(1203), repeat=True)
    h.m.post(URL, payload=env(1201, message="bad value"))
    with pytest.raises(BadRequestError) as info:
        await h.create()
    assert info.value.code == 1201
    assert len(h.posts()) == 2


async def test_bad_request_first_attempt_raises_without_lookup(h: Harness) -> None:
    h.m.post(URL, payload=env(1201, message="bad value"))
    with pytest.raises(BadRequestError):
        await h.create()
    assert len(h.posts()) == 1
    assert h.gets() == []


async def test_adopt_existing(h: Harness) -> None:
    h.m.post(URL, status=400, payload=env(1201, message="duplicate"))
    h.m.get(BY_ID, payload=env(0, task("t-6", "succeed")))
    created = await h.create(adopt_existing=True)
    assert created.task_id == "t-6"
    assert len(h.posts()) == 1


async def test_rate_limit_retried(h: Harness) -> None:
    h.m.post(URL, status=429, payload=env(1302), repeat=2)
    h.m.post(URL, payload=env(0, task("t-7")))
    created = await h.create()
    assert created.task_id == "t-7"
    assert len(h.posts()) == 3
    assert len(h.rec.waits) == 2
    assert h.gets() == []
    assert [e.kind for e in h.events] == ["request_retry", "request_retry", "task_submitted"]


async def test_concurrency_is_the_callers_to_handle(h: Harness) -> None:
    # 1303: the slot gate decides when to try again (Client.submit), not a back-off here.
    h.m.post(URL, status=429, payload=env(1303), repeat=True)
    with pytest.raises(ConcurrencyLimitError):
        await h.create()
    assert len(h.posts()) == 1
    assert h.rec.waits == []
    assert h.events == []


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (429, 1100, AccountError),
        (429, 1101, AccountError),
        (429, 1102, AccountError),
        (403, 1103, AccountError),
        (429, 1304, AccountError),
        (400, 1300, ContentPolicyError),
        (400, 1301, ContentPolicyError),
        (401, 1000, AuthenticationError),
    ],
)
async def test_never_retried(h: Harness, status: int, code: int, cls: type[Exception]) -> None:
    h.m.post(URL, status=status, payload=env(code), repeat=True)
    with pytest.raises(cls):
        await h.create()
    assert len(h.posts()) == 1
    assert h.gets() == []
    assert h.rec.waits == []


async def test_expired_token_resigned(h: Harness) -> None:
    h.m.post(URL, status=401, payload=env(1004))
    h.m.post(URL, payload=env(0, task()))
    assert (await h.create()).task_id == "t-1"
    assert len(h.posts()) == 2


async def test_attempts_exhausted(h: Harness) -> None:
    h.m.post(URL, status=500, payload=env(5000), repeat=True)
    h.m.get(BY_ID, status=404, payload=env(1203), repeat=True)
    with pytest.raises(ServerError):
        await h.create()
    assert len(h.posts()) == 4  # policy.attempts
    assert len(h.gets()) == 4
    assert len(h.rec.waits) == 3


async def test_budget_exhausted(h: Harness) -> None:
    h.policy = RetryPolicy(
        attempts=50, wait_initial=2.0, wait_max=2.0, wait_jitter=False, timeout=5
    )
    h.m.post(URL, status=429, payload=env(1302), repeat=True)
    with pytest.raises(RateLimitError):
        await h.create()
    assert h.rec.waits == [2.0, 2.0]
    assert len(h.posts()) == 3


async def test_lookup_failure_propagates(h: Harness) -> None:
    h.m.post(URL, status=500, payload=env(5000), repeat=True)
    h.m.get(BY_ID, status=429, payload=env(1102), repeat=True)
    with pytest.raises(AccountError):
        await h.create()
    assert len(h.posts()) == 1


async def test_malformed_create_answer_reconciled(h: Harness) -> None:
    h.m.post(URL, payload=env(0))  # code 0 but no task: the outcome is unknown
    h.m.get(BY_ID, payload=env(0, task("t-10")))
    created = await h.create()
    assert created.task_id == "t-10"
    assert len(h.posts()) == 1


@pytest.mark.parametrize(
    "echo",
    [{}, None, {"external_task_id": None}, {"external_task_id": ""}, {"external_task_id": "x"}],
    ids=["empty", "null", "id-null", "id-empty", "other-id"],
)
async def test_the_external_id_sent_survives_what_the_answer_echoes(h: Harness, echo: Any) -> None:
    h.m.post(URL, payload=env(0, {**task("t-11"), "task_info": echo}))
    request = MultiImageToVideoRequest(images=["https://cdn.example.com/a.png"], prompt="p")
    created = await h.create(request.with_external_id("mine-11"))
    assert created.external_task_id == "mine-11"
    assert h.posts()[0]["external_task_id"] == "mine-11"


async def test_a_lookup_keeps_the_external_id_asked_for(h: Harness) -> None:
    h.m.post(URL, status=500, payload=env(5000))  # unknown outcome: ask by external id
    h.m.get(BY_ID, payload=env(0, {**task("t-12", "processing"), "task_info": {}}))
    request = MultiImageToVideoRequest(images=["https://cdn.example.com/a.png"], prompt="p")
    found = await h.create(request.with_external_id("mine-12"))
    assert (found.task_id, found.external_task_id) == ("t-12", "mine-12")
    assert h.gets() == ["mine-12"]


async def test_an_odd_create_answer_is_read_tolerantly(h: Harness) -> None:
    data = {"task_id": 8672, "task_status": "SUBMITTED", "created_at": MS // 1000}
    h.m.post(URL, payload=env(0, data))
    created = await h.create()
    assert (created.task_id, created.status) == ("8672", TaskStatus.SUBMITTED)
    assert created.created_at is not None and created.created_at.year == 2024
    assert created.expires_at is not None and created.updated_at is None


async def test_malformed_lookup_answer(h: Harness) -> None:
    h.m.post(URL, status=500, payload=env(5000))
    h.m.get(BY_ID, payload=env(0, {"task_id": "x", "task_status": "queued"}))
    with pytest.raises(ResponseValidationError):
        await h.create()


async def test_big_body_encoded_off_loop(h: Harness) -> None:
    from kling_async._images import MAX_IMAGE_BYTES

    png = bytearray(
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01@\x00\x00\x01@\x08\x00\x00\x00\x00"
    )
    import zlib

    png += zlib.crc32(bytes(png[12:29])).to_bytes(4, "big")
    big = bytes(png) + b"\0" * 900_000
    assert len(big) < MAX_IMAGE_BYTES
    h.m.post(URL, payload=env(0, task()))
    req = MultiImageToVideoRequest(images=[big], prompt="p")
    await h.create(req)
    (body,) = h.posts()
    assert len(body["image_list"][0]["image"]) > 1 << 20
