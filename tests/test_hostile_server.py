"""Malformed server answers: every one becomes a typed KlingError, never a pydantic, Key, Type,
Overflow or Recursion error escaping the client.

A small aiohttp.web fake on 127.0.0.1 answers each route with whatever a test sets; a raw TCP
server covers answers that are not HTTP at all or never end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from conftest import TEST_ACCESS_KEY, TEST_SECRET_KEY, make_png

from kling_async import (
    BadRequestError,
    Client,
    Event,
    KlingError,
    Limits,
    MultiImageToVideoRequest,
    PollPolicy,
    ResponseValidationError,
    RetryPolicy,
    ServerError,
    Task,
    TaskTimeoutError,
    TaskUnreadable,
    TransportError,
)
from kling_async._envelope import MAX_ANSWER_BYTES
from kling_async.simulator import Simulator

PATH = "/v1/videos/multi-image2video"
MS = 1_722_769_557_708
RETRY = RetryPolicy(attempts=2, wait_initial=0.001, wait_max=0.002, timeout=5)
POLL = PollPolicy(interval=0.01, interval_max=0.02, min_interval=0.01)


def task_json(tid: str = "1", status: str = "submitted", **extra: Any) -> dict[str, Any]:
    data = {"task_id": tid, "task_status": status, "created_at": MS, "updated_at": MS}
    data.update(extra)
    return data


def ok(data: Any) -> bytes:
    return json.dumps({"code": 0, "message": "SUCCEED", "request_id": "rq", "data": data}).encode()


@dataclass
class Answer:
    body: bytes
    status: int = 200
    content_type: str = "application/json"


@dataclass
class Fake:
    """Each route answers with its FIFO of answers, then with its default."""

    url: str = ""
    default: dict[str, Answer] = field(default_factory=dict)
    queue: dict[str, list[Answer]] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)  # the {id} of each query, as the server saw it

    def set(
        self, kind: str, body: bytes, status: int = 200, ctype: str = "application/json"
    ) -> None:
        self.default[kind] = Answer(body, status, ctype)

    def then(self, kind: str, *answers: Answer) -> None:
        self.queue.setdefault(kind, []).extend(answers)

    def answer(self, kind: str) -> web.Response:
        self.hits[kind] = self.hits.get(kind, 0) + 1
        queued = self.queue.get(kind)
        a = queued.pop(0) if queued else self.default.get(kind)
        if a is None:
            a = Answer(json.dumps({"code": 1203, "message": "nope"}).encode(), 404)
        return web.Response(body=a.body, status=a.status, content_type=a.content_type)


@pytest.fixture
async def fake() -> AsyncIterator[Fake]:
    """The fake Kling API on an ephemeral port of 127.0.0.1."""
    f = Fake()

    async def create(_: web.Request) -> web.Response:
        return f.answer("create")

    async def query(req: web.Request) -> web.Response:
        f.ids.append(req.match_info["id"])
        return f.answer("query")

    async def listing(_: web.Request) -> web.Response:
        return f.answer("list")

    app = web.Application()
    app.router.add_post(PATH, create)
    app.router.add_get(PATH, listing)
    app.router.add_get(PATH + "/{id}", query)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    f.url = f"http://{host}:{port}"
    try:
        yield f
    finally:
        await runner.cleanup()


def new_client(url: str, **kw: Any) -> Client:
    options: dict[str, Any] = {
        "access_key": TEST_ACCESS_KEY,
        "secret_key": TEST_SECRET_KEY,
        "base_url": url,
        "retry": RETRY,
        "poll": POLL,
        "limits": Limits(rps=1000),
    }
    options.update(kw)
    return Client(**options)


@pytest.fixture
async def client(fake: Fake) -> AsyncIterator[Client]:
    """A client of the fake with quick retries and polling."""
    async with new_client(fake.url) as c:
        yield c


def request() -> MultiImageToVideoRequest:
    return MultiImageToVideoRequest(images=[make_png()], prompt="a dog")


Call = Callable[[Client], Awaitable[Any]]
CALLS: dict[str, tuple[str, Call]] = {
    "submit": ("create", lambda c: c.submit(request())),
    "get_task": ("query", lambda c: c.get_task("123")),
    "list_tasks": ("list", lambda c: c.list_tasks()),
    "wait": ("query", lambda c: c.wait("123", timeout=2)),
}

# (status, body, expected error class)
ENVELOPES: dict[str, tuple[int, bytes, type[KlingError]]] = {
    "html": (200, b"<html><body><h1>502 Bad Gateway</h1></body></html>", ResponseValidationError),
    "empty": (200, b"", ResponseValidationError),
    "not utf-8": (200, b"\xff\xfe\x00{garbage", ResponseValidationError),
    "array": (200, b"[1, 2, 3]", ResponseValidationError),
    "string": (200, b'"SUCCEED"', ResponseValidationError),
    "null": (200, b"null", ResponseValidationError),
    "number": (200, b"0", ResponseValidationError),
    "no code": (200, b'{"message": "SUCCEED", "data": {}}', ResponseValidationError),
    "code as string": (200, b'{"code": "0", "data": {}}', ResponseValidationError),
    "code as float": (200, b'{"code": 0.0, "data": {}}', ResponseValidationError),
    "code as bool": (200, b'{"code": false, "data": {}}', ResponseValidationError),
    "code null": (200, b'{"code": null}', ResponseValidationError),
    "code NaN": (200, b'{"code": NaN}', ResponseValidationError),
    "huge int code": (200, b'{"code": ' + b"9" * 5000 + b"}", ResponseValidationError),
    "deep nesting": (200, b"[" * 100_000, ResponseValidationError),
    "deep object": (
        200,
        b'{"code": 0, "data": ' + b'{"a": ' * 50_000 + b"}",
        ResponseValidationError,
    ),
    "502 html": (502, b"<html>Bad Gateway</html>", ServerError),
    "500 bad code": (500, b'{"code": "x"}', ServerError),
    "5000 under 200": (200, b'{"code": 5000, "message": "internal"}', ServerError),
    "unknown code, odd types": (
        200,
        b'{"code": 99999, "message": 5, "request_id": []}',
        BadRequestError,
    ),
    "huge message": (
        400,
        json.dumps({"code": 1201, "message": "m" * 5_000_000}).encode(),
        BadRequestError,
    ),
    "huge body": (200, b" " * (MAX_ANSWER_BYTES + 1), ResponseValidationError),
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("case", sorted(ENVELOPES))
async def test_bad_envelopes_become_typed_errors(
    fake: Fake, client: Client, call: str, case: str
) -> None:
    kind, run = CALLS[call]
    status, body, expected = ENVELOPES[case]
    fake.set(kind, body, status)
    with pytest.raises(KlingError) as info:
        await run(client)
    assert isinstance(info.value, expected), repr(info.value)
    assert len(str(info.value)) < 2000  # a server cannot make our messages megabytes long


BAD_TASKS: dict[str, Any] = {
    "missing": None,
    "array": [task_json()],
    "string": "task",
    "number": 5,
    "empty object": {},
    "no task_id": {k: v for k, v in task_json().items() if k != "task_id"},
    "empty task_id": task_json(""),
    "dotdot task_id": task_json(".."),
    "task_id object": task_json({"a": 1}),  # type: ignore[arg-type]
    "unknown status": task_json(status="queued"),
    "status null": task_json(status=None),  # type: ignore[arg-type]
    "created_at text": task_json(created_at="yesterday"),
    "created_at huge": task_json(created_at=1e300),
    "created_at huge int": task_json(created_at=10**400),
    "created_at negative": task_json(created_at=-1e20),
    "created_at inf": task_json(created_at=float("inf")),
    "created_at NaN": task_json(created_at=float("nan")),
    "task_result odd": task_json(task_result=[1]),
    "videos not a list": task_json(task_result={"videos": "x"}),
    "video url not text": task_json(status="succeed", task_result={"videos": [{"url": 5}]}),
    "task_info odd": task_json(task_info="ext"),
}


@pytest.mark.parametrize("call", ["submit", "get_task", "wait"])
@pytest.mark.parametrize("case", sorted(BAD_TASKS))
async def test_bad_task_shapes_become_response_validation_errors(
    fake: Fake, client: Client, call: str, case: str
) -> None:
    kind, run = CALLS[call]
    fake.set(kind, ok(BAD_TASKS[case]))
    with pytest.raises(ResponseValidationError):
        await run(client)
    if call == "submit":
        # The outcome was unknown: the client asked by external id before each resend.
        assert fake.hits["create"] == RETRY.attempts
        assert fake.hits["query"] == RETRY.attempts
        assert client.stats.slots_in_use == 0  # the slot came back


@pytest.mark.parametrize(
    "data",
    [
        None,
        {},
        "tasks",
        5,
        {"list": []},
    ],
    ids=["missing", "object", "string", "number", "wrapped"],
)
async def test_bad_list_answers(fake: Fake, client: Client, data: Any) -> None:
    fake.set("list", ok(data))
    with pytest.raises(ResponseValidationError):
        await client.list_tasks()
    with pytest.raises(ResponseValidationError):
        async for _ in client.iter_tasks():
            pass


async def test_odd_but_usable_times_are_accepted(fake: Fake, client: Client) -> None:
    # An ISO time without offset is taken as UTC (comparing naive and aware times would raise).
    fake.set("query", ok(task_json(created_at="2024-08-04T10:00:00", updated_at=MS)))
    task = await client.get_task("1")
    assert task.created_at.tzinfo is not None
    assert task.expires_at > task.created_at
    # Within 30 days of year 9999: the expiry saturates instead of overflowing.
    fake.set("query", ok(task_json(created_at=253_402_300_000_000, updated_at=MS)))
    task = await client.get_task("1")
    assert task.expires_at.year == 9999


async def test_ids_are_percent_encoded_in_paths(fake: Fake, client: Client) -> None:
    fake.set("query", ok(task_json()))
    idents = ["a?b", "a#b", "%41", "a%2Fb", "视频", "a b", "a\\b", "\udc80"]
    for ident in idents:
        await client.get_task(ident)
    # Each reached the {id} route intact: no query string, fragment or decoded escape.
    assert fake.ids[:-1] == idents[:-1]
    assert len(fake.ids) == len(idents)  # even a lone surrogate is sent, not an exception
    for bad in ("", ".", "..", "a/b"):
        with pytest.raises(KlingError):
            await client.get_task(bad)
    assert len(fake.ids) == len(idents)


async def test_sweep_survives_one_bad_item(fake: Fake, client: Client) -> None:
    tasks = [Task.model_validate(task_json(str(i))) for i in range(4)]
    # The list reports three finished tasks and one malformed item; single GETs of the
    # malformed one fail twice, then succeed.
    items: list[Any] = [task_json(str(i), "succeed") for i in range(3)]
    items.append({"task_id": "3", "task_status": "queued", "created_at": MS})
    fake.set("list", ok(items))
    fake.then("query", Answer(ok({"task_id": "3"})), Answer(b"<html>"), Answer(b"<html>"))
    fake.set("query", ok(task_json("3", "failed", task_status_msg="nope")))
    done = await asyncio.wait_for(
        asyncio.gather(*(client.wait(t, raise_on_failure=False) for t in tasks)), 5
    )
    assert [t.task_status for t in done] == ["succeed"] * 3 + ["failed"]
    assert fake.hits["query"] >= 2


async def test_odd_list_items_leave_the_rest_of_the_page(fake: Fake) -> None:
    events: list[Event] = []
    items = [task_json("1"), "x", task_json("2", status="queued"), task_json("3")]
    fake.set("list", ok(items))
    async with new_client(fake.url, event_hook=events.append) as client:
        page = await client.list_tasks()
        assert [t.task_id for t in page] == ["1", "3"]
        assert [e.field for e in page.unreadable] == [None, "task_status"]
        walked = [t.task_id async for t in client.iter_tasks(page_size=4, max_pages=2)]
    # A full page (4 items, 2 of them unreadable) is not the last one: the walk goes on.
    assert walked == ["1", "3", "1", "3"]
    assert fake.hits["list"] == 3
    bad = [e for e in events if isinstance(e, TaskUnreadable)]
    assert len(bad) == 2 * 3 and {e.source for e in bad} == {"list"}


async def test_an_unreadable_task_ends_wait_but_is_still_followed(fake: Fake) -> None:
    fake.set("query", ok({"task_id": "1", "task_status": "queued"}))
    task = Task.model_validate(task_json("1"))
    async with new_client(fake.url, poll=POLL) as client:
        with pytest.raises(ResponseValidationError, match="task_status = 'queued'") as info:
            await client.wait(task, timeout=30)
        assert info.value.field == "task_status"
        assert fake.hits["query"] == POLL.unreadable_limit  # within a few polls, not a timeout
        assert client.stats.following == 1
        before = fake.hits["query"]
        await asyncio.sleep(0.1)
        assert fake.hits["query"] > before  # still following, not dead
        fake.set("query", ok(task_json("1", "succeed")))
        assert (await client.wait(task, timeout=2)).task_status == "succeed"
        assert client.stats.following == 0


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A TCP server on 127.0.0.1 that answers with raw bytes; waits for its handlers on exit."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.done: list[asyncio.Task[None]] = []
        self.url = ""

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Recorded as the connection is accepted, not once its handler runs: a handler that had
        # not started by __aexit__ would leave its socket open (GC'd in some later test).
        self.done.append(asyncio.get_running_loop().create_task(self._serve(reader, writer)))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await asyncio.sleep(0.01)  # an accept under way when it closed gets its handler too
        await asyncio.wait_for(asyncio.gather(*self.done, return_exceptions=True), 5)
        await self.server.wait_closed()


async def test_not_http_at_all() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02 garbage\r\n\r\n")
        await writer.drain()

    async with RawServer(handler) as server, new_client(server.url) as c:
        with pytest.raises(TransportError):
            await c.get_task("1")


async def test_declared_huge_length_is_refused_unread() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: 99999999999\r\n\r\n" + ok(task_json()))
        await writer.drain()
        await reader.read()  # until the client hangs up

    async with RawServer(handler) as server, new_client(server.url) as c:
        started = time.monotonic()
        with pytest.raises(ResponseValidationError, match="larger than"):
            await c.get_task("1")
        assert time.monotonic() - started < 5


async def test_endless_chunked_answer_is_cut_off() -> None:
    sent = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b" " * 65536
        while sent < 4 * MAX_ANSWER_BYTES:  # the client must hang up long before this
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
            sent += len(chunk)

    async with RawServer(handler) as server:
        client = new_client(server.url, retry=RetryPolicy(attempts=1))
        async with client:
            with pytest.raises(ResponseValidationError, match="larger than"):
                await client.get_task("1")
    assert sent < 3 * MAX_ANSWER_BYTES


async def test_simulator_garbage_and_bad_envelope_faults() -> None:
    retry = RetryPolicy(attempts=3, wait_initial=0.001, wait_max=0.002)
    quiet = PollPolicy(interval=30, interval_max=30)  # no background sweep eats the faults
    async with (
        Simulator(concurrency=3, gen_seconds=0.05) as sim,
        new_client(
            sim.url, access_key=sim.access_key, secret_key=sim.secret_key, retry=retry, poll=quiet
        ) as c,
    ):
        # Create: a bad envelope and garbage (nothing created) are reconciled, then resent.
        sim.faults.script("create", "bad_envelope", "garbage")
        task = await c.submit(request())
        assert sim.stats.accepted_creates == 1
        assert sim.stats.requests["create"] == 3
        # Query: garbage once is retried; garbage on every attempt is a typed error.
        sim.faults.script("query", "garbage")
        assert (await c.get_task(task.task_id)).task_id == task.task_id
        sim.faults.script("query", "garbage", "bad_envelope", "garbage")
        with pytest.raises(ResponseValidationError):
            await c.get_task(task.task_id)
        sim.faults.clear()
        sim.faults.script("list", *["bad_envelope"] * retry.attempts)
        with pytest.raises(ResponseValidationError):
            await c.list_tasks()
        await asyncio.sleep(0.2)
        c.notify()
        assert (await c.wait(task, timeout=5)).task_status in ("succeed", "failed")


async def test_warnings_not_errors_in_logs(
    fake: Fake, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    # A bad item is logged (once per sweep) without a traceback of an unexpected exception.
    caplog.set_level(logging.DEBUG, logger="kling_async")
    fake.set("query", b"<html>")
    task = Task.model_validate(task_json("9"))
    with pytest.raises(TaskTimeoutError):
        await client.wait(task, timeout=0.2)
    unexpected = [
        r for r in caplog.records if r.exc_info and not isinstance(r.exc_info[1], KlingError)
    ]
    assert not unexpected
    assert all(r.levelno < logging.ERROR for r in caplog.records)
    assert any("unreadable" in r.getMessage() for r in caplog.records)
