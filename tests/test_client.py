"""Client end to end against a tiny fake Kling on 127.0.0.1 (not the simulator package)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kling_async import (
    BadRequestError,
    Client,
    ClientClosedError,
    ClientStats,
    DownloadError,
    Event,
    InvalidRequestError,
    Limits,
    MultiImageToVideoRequest,
    PollPolicy,
    RequestRetry,
    ResponseValidationError,
    RetryPolicy,
    Task,
    TaskFailedError,
    TaskStatus,
    TaskTimeoutError,
    VideoExpiredError,
)

PATH = "/v1/videos/multi-image2video"
VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40  # mp4-ish, 10 KiB


@dataclass
class FakeTask:
    task_id: str
    external_task_id: str
    created_ms: int
    status: str = "submitted"
    msg: str = ""
    queries_left: int = -1  # succeed after this many single queries; -1: only when told
    url_version: int = 0  # the CDN serves only the newest signed URL

    def wire(self, video_base: str) -> dict[str, Any]:
        data: dict[str, Any] = {
            "task_id": self.task_id,
            "task_status": self.status,
            "task_status_msg": self.msg,
            "task_info": {"external_task_id": self.external_task_id},
            "task_result": {},
            "created_at": self.created_ms,
            "updated_at": self.created_ms + 1000,
            "unknown_future_field": {"x": 1},
        }
        if self.status == "succeed":
            data["task_result"] = {
                "videos": [
                    {
                        "id": f"v-{self.task_id}",
                        "url": f"{video_base}/cdn/{self.task_id}.mp4?v={self.url_version}",
                        "duration": "5.1",
                    }
                ]
            }
        return data


@dataclass
class FakeKling:
    """Just enough of the documented API: JWT check, create/query/list, 1303, a CDN."""

    access_key: str
    secret_key: str
    max_running: int = 100
    tasks: dict[str, FakeTask] = field(default_factory=dict)
    creates: list[dict[str, Any]] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    lists: list[tuple[int, int]] = field(default_factory=list)
    cdn_auth: list[str | None] = field(default_factory=list)
    cdn_failures: int = 0  # answer this many CDN requests with HTTP 500
    refusals: int = 0
    refusal_status: int = 429  # the HTTP status of a 1303 answer (replayed servers: 200)
    on_refusal: Callable[[], None] = lambda: None
    next_status: str | None = None  # the state new tasks reach after `finish_after` queries
    finish_after: int = -1
    bad_shape: bool = False
    list_answer: Any = None  # answer list requests with this `data` instead
    base: str = ""
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def envelope(self, code: int = 0, data: Any = None, message: str = "SUCCEED") -> Any:
        body: dict[str, Any] = {"code": code, "message": message, "request_id": "rq-1"}
        if data is not None:
            body["data"] = data
        return body

    def check_auth(self, request: web.Request) -> web.Response | None:
        value = request.headers.get("Authorization", "")
        try:
            claims = jwt.decode(value.removeprefix("Bearer "), self.secret_key, ["HS256"])
        except jwt.PyJWTError:
            return web.json_response(self.envelope(1002, message="invalid"), status=401)
        assert claims["iss"] == self.access_key
        return None

    def running(self) -> int:
        return sum(t.status in ("submitted", "processing") for t in self.tasks.values())

    def finish(self, tid: str, status: str = "succeed", msg: str = "") -> None:
        self.tasks[tid].status = status
        self.tasks[tid].msg = msg

    async def create(self, request: web.Request) -> web.Response:
        if (denied := self.check_auth(request)) is not None:
            return denied
        body = await request.json()
        self.creates.append(body)
        if any(t.external_task_id == body["external_task_id"] for t in self.tasks.values()):
            msg = "external_task_id already exists"
            return web.json_response(self.envelope(1201, message=msg), status=400)
        if self.running() >= self.max_running:
            self.refusals += 1
            self.on_refusal()
            msg = "parallel task over resource pack limit"
            return web.json_response(self.envelope(1303, message=msg), status=self.refusal_status)
        tid = f"8672837417591112{next(self.ids):02d}"
        task = FakeTask(tid, body["external_task_id"], int(time.time() * 1000))
        task.queries_left = self.finish_after
        self.tasks[tid] = task
        data = {k: v for k, v in task.wire(self.base).items() if k != "task_info"}
        return web.json_response(self.envelope(0, data))

    def _advance(self, task: FakeTask) -> None:
        if task.status in ("submitted", "processing") and task.queries_left > 0:
            task.queries_left -= 1
            task.status = "processing"
            if task.queries_left == 0:
                task.status = self.next_status or "succeed"
                task.msg = "Image pixel is invalid" if task.status == "failed" else ""

    async def query(self, request: web.Request) -> web.Response:
        if (denied := self.check_auth(request)) is not None:
            return denied
        key = request.match_info["id"]
        self.queries.append(key)
        found = self.tasks.get(key) or next(
            (t for t in self.tasks.values() if t.external_task_id == key), None
        )
        if found is None:
            return web.json_response(self.envelope(1203, message="task not found"), status=404)
        self._advance(found)
        data = found.wire(self.base)
        if self.bad_shape:
            data["task_status"] = "queued"
        return web.json_response(self.envelope(0, data))

    async def list(self, request: web.Request) -> web.Response:
        if (denied := self.check_auth(request)) is not None:
            return denied
        page, size = int(request.query["pageNum"]), int(request.query["pageSize"])
        self.lists.append((page, size))
        ordered = sorted(self.tasks.values(), key=lambda t: t.task_id, reverse=True)
        for task in ordered:
            self._advance(task)
        chunk = ordered[(page - 1) * size : page * size]
        data = [t.wire(self.base) for t in chunk] if self.list_answer is None else self.list_answer
        return web.json_response(self.envelope(0, data))

    async def cdn(self, request: web.Request) -> web.Response:
        self.cdn_auth.append(request.headers.get("Authorization"))
        if self.cdn_failures > 0:
            self.cdn_failures -= 1
            return web.Response(status=500, text="cdn hiccup")
        task = self.tasks[request.match_info["name"].removesuffix(".mp4")]
        if request.query.get("v") != str(task.url_version):
            return web.Response(status=403, text="link expired")
        return web.Response(body=VIDEO, content_type="video/mp4")


@pytest.fixture
async def fake(access_key: str, secret_key: str) -> AsyncIterator[FakeKling]:
    kling = FakeKling(access_key, secret_key)
    app = web.Application()
    app.router.add_post(PATH, kling.create)
    app.router.add_get(PATH, kling.list)
    app.router.add_get(PATH + "/{id}", kling.query)
    app.router.add_get("/cdn/{name}", kling.cdn)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    kling.base = str(server.make_url("")).rstrip("/")
    yield kling
    await server.close()


FAST_POLL = PollPolicy(interval=0.01, min_interval=0.005, interval_max=0.02, timeout=5.0)
FAST_RETRY = RetryPolicy(attempts=3, wait_initial=0.005, wait_max=0.02, timeout=5.0)


def fake_client(fake: FakeKling, access_key: str, secret_key: str, **options: Any) -> Client:
    """A client for the fake server with fast polling and retries (options override)."""
    options.setdefault("poll", FAST_POLL)
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("limits", Limits(concurrency=2, rps=10_000))
    return Client(access_key=access_key, secret_key=secret_key, base_url=fake.base, **options)


@pytest.fixture
async def client(fake: FakeKling, access_key: str, secret_key: str) -> AsyncIterator[Client]:
    async with fake_client(fake, access_key, secret_key) as c:
        yield c


def request(**kw: Any) -> MultiImageToVideoRequest:
    return MultiImageToVideoRequest(images=["https://cdn.example.com/a.png"], prompt="a dog", **kw)


async def test_submit_wait_download(client: Client, fake: FakeKling, tmp_path: Path) -> None:
    fake.finish_after = 2
    events: list[Event] = []
    client.event_hook = events.append
    task = await client.submit(request(mode="pro"))
    assert task.status is TaskStatus.SUBMITTED
    assert task.external_task_id is not None and task.external_task_id.startswith("ka-")
    (body,) = fake.creates
    assert body["external_task_id"] == task.external_task_id
    assert body["mode"] == "pro"
    assert client.stats.slots_in_use == 1
    done = await client.wait(task)
    assert done.status is TaskStatus.SUCCEED
    assert done.videos[0].duration == "5.1"
    await asyncio.sleep(0)
    assert client.stats.slots_in_use == 0  # the slot came back when the task ended
    files = await client.download(done, tmp_path / "out")
    assert [f.name for f in files] == [f"{task.external_task_id}.mp4"]
    assert files[0].read_bytes() == VIDEO
    assert not list((tmp_path / "out").glob("*.part"))
    assert fake.cdn_auth == [None]  # the CDN never sees our token
    named = await client.download(done, tmp_path / "out", name="my clip")
    assert named[0].name == "my_clip.mp4"


async def test_generate(client: Client, fake: FakeKling, tmp_path: Path) -> None:
    fake.finish_after = 1
    files = await client.generate(request(), tmp_path)
    assert files[0].read_bytes() == VIDEO


async def test_wait_failed(client: Client, fake: FakeKling) -> None:
    fake.finish_after, fake.next_status = 1, "failed"
    task = await client.submit(request())
    with pytest.raises(TaskFailedError) as info:
        await client.wait(task)
    assert info.value.reason == "Image pixel is invalid"
    assert info.value.task.status is TaskStatus.FAILED
    final = await client.wait(task.task_id, raise_on_failure=False)
    assert final.status is TaskStatus.FAILED


async def test_wait_timeout(client: Client, fake: FakeKling) -> None:
    task = await client.submit(request())
    started = time.monotonic()
    with pytest.raises(TaskTimeoutError) as info:
        await client.wait(task, timeout=0.05)
    assert time.monotonic() - started < 1
    assert info.value.task.task_id == task.task_id
    assert isinstance(info.value, TimeoutError)
    # the task is still followed: it finishes later and a new wait sees it
    fake.finish(task.task_id)
    assert (await client.wait(task, timeout=2)).status is TaskStatus.SUCCEED


async def test_wait_by_id(client: Client, fake: FakeKling) -> None:
    task = await client.submit(request(external_task_id="job-42"))
    fake.finish(task.task_id)
    assert (await client.wait("job-42", timeout=2)).task_id == task.task_id


async def test_get_task(client: Client, fake: FakeKling) -> None:
    task = await client.submit(request(external_task_id="job-1"))
    by_id = await client.get_task(task.task_id)
    by_ext = await client.get_task("job-1")
    assert by_id.task_id == by_ext.task_id == task.task_id
    assert by_ext.external_task_id == "job-1"
    assert fake.queries[-2:] == [task.task_id, "job-1"]
    with pytest.raises(BadRequestError) as info:
        await client.get_task("nope")
    assert info.value.code == 1203
    assert info.value.request_id == "rq-1"


@pytest.mark.parametrize("bad", ["", "a/b", "../x"])
async def test_get_task_invalid_id(client: Client, fake: FakeKling, bad: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await client.get_task(bad)
    assert info.value.field == "task_id"
    assert fake.queries == []


async def test_get_task_bad_shape(client: Client, fake: FakeKling) -> None:
    task = await client.submit(request())
    fake.bad_shape = True
    with pytest.raises(ResponseValidationError, match="task_status = 'queued'") as info:
        await client.get_task(task.task_id)
    assert (info.value.field, info.value.value) == ("task_status", "'queued'")


async def test_list_and_iter(fake: FakeKling, access_key: str, secret_key: str) -> None:
    limits = Limits(concurrency=10, rps=10_000)
    async with fake_client(fake, access_key, secret_key, limits=limits) as client:
        await _list_and_iter(client, fake)


async def _list_and_iter(client: Client, fake: FakeKling) -> None:
    tasks = [await client.submit(request()) for _ in range(5)]
    for task in tasks:  # all finished: no background sweep adds to the list counts below
        fake.finish(task.task_id)
        await client.wait(task)
    assert client.stats.following == 0
    fake.lists.clear()
    page = await client.list_tasks(1, 2)
    assert [t.task_id for t in page] == ["867283741759111205", "867283741759111204"]
    assert all(isinstance(t, Task) for t in page)
    assert fake.lists == [(1, 2)]
    assert len(await client.list_tasks()) == 5
    assert fake.lists[-1] == (1, 30)
    fake.lists.clear()
    seen = [t.task_id async for t in client.iter_tasks(page_size=2)]
    assert len(seen) == len(set(seen)) == 5
    assert fake.lists == [(1, 2), (2, 2), (3, 2)]  # page 3 is short: stop
    fake.lists.clear()
    assert len([t async for t in client.iter_tasks(page_size=5)]) == 5
    assert fake.lists == [(1, 5), (2, 5)]  # a full page asks once more
    fake.lists.clear()
    assert len([t async for t in client.iter_tasks(page_size=2, max_pages=1)]) == 2
    assert fake.lists == [(1, 2)]


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((1, 0), "page_size"),
        ((1, 501), "page_size"),
        ((0, 30), "page_num"),
        ((1001, 30), "page_num"),
    ],
)
async def test_list_validation(
    client: Client, fake: FakeKling, args: tuple[int, int], name: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await client.list_tasks(*args)
    assert info.value.field == name
    assert name in str(info.value)
    assert fake.lists == []


@pytest.mark.parametrize("size", [0, 501])
async def test_iter_validation(client: Client, fake: FakeKling, size: int) -> None:
    with pytest.raises(InvalidRequestError):
        _ = [t async for t in client.iter_tasks(page_size=size)]
    assert fake.lists == []


async def test_list_not_an_array(client: Client, fake: FakeKling) -> None:
    fake.list_answer = {"not": "a list"}
    with pytest.raises(ResponseValidationError, match="array"):
        await client.list_tasks()


async def test_submit_adopt_existing(client: Client, fake: FakeKling) -> None:
    first = await client.submit(request(external_task_id="resume-1"))
    with pytest.raises(BadRequestError) as info:
        await client.submit(request(external_task_id="resume-1"))
    assert info.value.code == 1201
    assert client.stats.slots_in_use == 1  # the refused create gave its slot back
    again = await client.submit(request(), external_task_id="resume-1", adopt_existing=True)
    assert again.task_id == first.task_id
    assert len(fake.tasks) == 1


async def test_submit_blocks_when_gate_full(client: Client, fake: FakeKling) -> None:
    first = await client.submit(request())
    second = await client.submit(request())
    assert client.stats.slots_in_use == 2
    third = asyncio.create_task(client.submit(request()))
    await asyncio.sleep(0.1)
    assert not third.done()  # concurrency=2: waits for a slot, sends nothing
    assert len(fake.creates) == 2
    fake.finish(first.task_id)
    created = await asyncio.wait_for(third, 2)
    assert created.task_id not in (first.task_id, second.task_id)
    assert len(fake.creates) == 3
    assert client.stats.slot_peak == 2
    assert fake.refusals == 0


async def test_concurrency_refusal_shrinks_the_gate(
    fake: FakeKling, access_key: str, secret_key: str
) -> None:
    fake.max_running = 1  # another process holds the rest of the account's slots
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(min(seconds, 0.01))

    async with fake_client(
        fake, access_key, secret_key, limits=Limits(concurrency=3, rps=10_000), sleep=sleep
    ) as client:
        first = await client.submit(request())
        second = asyncio.create_task(client.submit(request()))
        for _ in range(500):  # refused within a few loop turns; give a loaded machine seconds
            if fake.refusals:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert not second.done()
        assert fake.refusals == 1
        stats = client.stats
        assert client.slot_limit == stats.slot_limit == 1  # we hold one: the real capacity
        assert (stats.rejections, stats.slots_in_use) == (1, 1)
        fake.finish(first.task_id)
        await asyncio.wait_for(second, 2)
        assert fake.refusals == 1  # no hammering while nothing could free a slot
        assert len(fake.creates) == 3


@pytest.mark.parametrize("status", [429, 200])
async def test_concurrency_refusal_with_nothing_held_waits_on_the_gate(
    fake: FakeKling, access_key: str, secret_key: str, status: int
) -> None:
    # Someone else fills the account: nothing of ours can free a slot, so the gate admits one
    # probe per probe interval (not a retry loop), whether 1303 comes under HTTP 429 or 200.
    fake.max_running = 0
    fake.refusal_status = status
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(0)

    limits = Limits(concurrency=3, rps=10_000, probe_interval=0.05)
    gate_states: list[tuple[int, int]] = []

    def refused() -> None:
        gate_states.append((client.slot_limit, client.stats.slots_in_use))
        if fake.refusals == 2:
            fake.max_running = 1  # the other user's task ended

    fake.on_refusal = refused
    async with fake_client(fake, access_key, secret_key, limits=limits, sleep=sleep) as client:
        task = await asyncio.wait_for(client.submit(request()), 2)
        # Each refused create was the only one out; after the first, a probe at a limit of one.
        assert [held for _, held in gate_states] == [1, 1] and gate_states[1][0] == 1
        assert client.stats.rejections == 2
        assert task.status is TaskStatus.SUBMITTED
        assert 2 <= fake.refusals == client.stats.rejections
        assert len(fake.creates) == fake.refusals + 1
        assert client.stats.slots_in_use == 1
        assert not [s for s in sleeps if s >= 0.5]  # no client-side back-off sleeps either


async def test_borrowed_session_survives(fake: FakeKling, access_key: str, secret_key: str) -> None:
    sent: list[str] = []

    async def on_request_start(*args: Any) -> None:
        sent.append(args[2].url.path)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request_start)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        client = fake_client(fake, access_key, secret_key, session=session)
        await client.list_tasks()
        assert sent == [PATH]  # the client's requests go through the borrowed session
        await client.aclose()
        assert not session.closed
        with pytest.raises(ClientClosedError):
            await client.list_tasks()


async def test_notify_wakes_polling(fake: FakeKling, access_key: str, secret_key: str) -> None:
    async with fake_client(
        fake,
        access_key,
        secret_key,
        poll=PollPolicy(interval=30, interval_max=30, min_interval=0.005),
        limits=Limits(rps=10_000),
    ) as client:
        task = await client.submit(request())
        waiter = asyncio.create_task(client.wait(task, timeout=5))
        await asyncio.sleep(0.02)
        fake.finish(task.task_id)
        client.notify(task.task_id)
        assert (await asyncio.wait_for(waiter, 1)).status is TaskStatus.SUCCEED


async def test_aclose_cancels_pending_waits(client: Client) -> None:
    task = await client.submit(request())
    waiter = asyncio.create_task(client.wait(task, timeout=5))
    await asyncio.sleep(0.02)
    await client.aclose()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert client.stats.slots_in_use == 0


async def finished(client: Client, fake: FakeKling) -> Task:
    task = await client.submit(request())
    fake.finish(task.task_id)
    return await client.wait(task, timeout=2)


async def test_download_refreshes_a_stale_url(
    client: Client, fake: FakeKling, tmp_path: Path
) -> None:
    done = await finished(client, fake)
    fake.tasks[done.task_id].url_version += 1  # the stored link went stale
    queries = len(fake.queries)
    files = await client.download(done, tmp_path)
    assert files[0].read_bytes() == VIDEO
    assert len(fake.queries) == queries + 1  # one re-query for a fresh link
    assert fake.cdn_auth == [None, None]


async def test_download_retries_cdn_errors(client: Client, fake: FakeKling, tmp_path: Path) -> None:
    done = await finished(client, fake)
    fake.cdn_failures = 2
    events: list[Event] = []
    client.event_hook = events.append
    files = await client.download(done, tmp_path)
    assert files[0].read_bytes() == VIDEO
    assert len(fake.cdn_auth) == 3
    kinds = [e.kind for e in events]
    assert kinds[-1] == "download_finished"
    assert "download_progress" in kinds
    # Reported as every other retry is, naming the video's address (its query left out).
    retries = [e for e in events if isinstance(e, RequestRetry)]
    assert [(e.method, e.attempt, e.error) for e in retries] == [
        ("GET", 1, "DownloadHTTPError"),
        ("GET", 2, "DownloadHTTPError"),
    ]
    assert all(e.path.startswith(fake.base + "/cdn/") and "?" not in e.path for e in retries)
    fake.cdn_failures = 10
    with pytest.raises(DownloadError):
        await client.download(done, tmp_path / "again")  # RetryPolicy(attempts=3)


async def test_download_expired(
    fake: FakeKling, access_key: str, secret_key: str, tmp_path: Path
) -> None:
    shift = [0.0]
    async with fake_client(
        fake, access_key, secret_key, limits=Limits(), clock=lambda: time.time() + shift[0]
    ) as client:
        done = await finished(client, fake)
        shift[0] = 31 * 86400
        with pytest.raises(VideoExpiredError, match="30 days"):
            await client.download(done, tmp_path)
    assert fake.cdn_auth == []


async def test_download_without_videos(client: Client, fake: FakeKling, tmp_path: Path) -> None:
    task = await client.submit(request())
    fake.finish(task.task_id, "failed", "moderation")
    failed = await client.wait(task, timeout=2, raise_on_failure=False)
    with pytest.raises(DownloadError, match="no videos"):
        await client.download(failed, tmp_path)
    done = await finished(client, fake)
    with pytest.raises(DownloadError, match="watermark_url"):
        await client.download(done, tmp_path, watermarked=True)


async def test_callback_url_added(fake: FakeKling, access_key: str, secret_key: str) -> None:
    async with Client(
        access_key=access_key,
        secret_key=secret_key,
        base_url=fake.base,
        callback_url="http://127.0.0.1:9/hook",
    ) as client:
        await client.submit(request())
        await client.submit(request(callback_url="https://mine.example.com/cb"))
        client.callback_url = "ftp://example.com/hook"
        with pytest.raises(InvalidRequestError) as info:
            await client.submit(request())
        assert info.value.field == "callback_url"
    assert [c["callback_url"] for c in fake.creates] == [
        "http://127.0.0.1:9/hook",
        "https://mine.example.com/cb",
    ]


async def test_a_closed_client_says_so(fake: FakeKling, access_key: str, secret_key: str) -> None:
    client = fake_client(fake, access_key, secret_key)
    task = await client.submit(request())
    await client.aclose()
    assert client.closed
    calls = [
        lambda: client.submit(request()),
        lambda: client.get_task(task.task_id),
        lambda: client.list_tasks(),
        lambda: client.wait(task),
        lambda: client.download(task, "never"),
    ]
    for call in calls:
        with pytest.raises(ClientClosedError, match="closed"):
            await call()
    with pytest.raises(ClientClosedError):
        client.follow(task)
    with pytest.raises(ClientClosedError):
        async with client:
            pass
    assert len(fake.creates) == 1  # nothing was sent after aclose()
    await client.aclose()  # closing again is harmless


async def test_follow_holds_a_slot_for_a_task_created_elsewhere(
    client: Client, fake: FakeKling
) -> None:
    earlier = await client.submit(request())  # stands in for a task an earlier run created
    async with fake_client(fake, client.credentials.access_key, client.credentials.secret_key) as c:
        done = c.follow(earlier, hold_slot=True)
        assert (c.stats.slots_in_use, c.stats.following) == (1, 1)
        fake.finish(earlier.task_id)
        assert (await asyncio.wait_for(done, 2)).status is TaskStatus.SUCCEED
        await asyncio.sleep(0)
        assert (c.stats.slots_in_use, c.stats.following) == (0, 0)
        watched = await c.get_task(earlier.task_id)
        assert (await asyncio.wait_for(c.follow(watched), 2)).status is TaskStatus.SUCCEED
        assert c.stats.slot_peak == 1  # followed without hold_slot: no slot


async def test_save_video_and_stats(client: Client, fake: FakeKling, tmp_path: Path) -> None:
    done = await finished(client, fake)
    saved = await client.save_video(done, 0, tmp_path / "clip.mp4")
    assert saved.path == tmp_path / "clip.mp4" and saved.bytes == len(VIDEO)
    assert saved.sha256 == hashlib.sha256(VIDEO).hexdigest() and saved.resumed_from == 0
    stats = client.stats
    assert isinstance(stats, ClientStats)
    assert stats.requests_sent >= 2 and stats.sweeps >= 1
    assert (stats.slots_in_use, stats.slot_limit, stats.slot_peak) == (0, 2, 1)
    assert (stats.rejections, stats.following) == (0, 0)
