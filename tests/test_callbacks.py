"""CallbackReceiver: hints only, Standard Webhooks signatures, its own server, and the wake-up."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import kling_async as kling
from kling_async._callbacks import MAX_BODY, sign_webhook
from kling_async.simulator import Simulator

SECRET = "whsec_" + base64.b64encode(b"a 24-byte webhook secret").decode()
NOW = 1_722_769_557


class FakeClient:
    """Records notify() calls; the receiver needs nothing else."""

    def __init__(self) -> None:
        self.event_hook = None
        self.notified: list[str | None] = []
        self.claimed: list[str | None] = []

    def notify(self, task_id: str | None = None, status: str | None = None) -> None:
        self.notified.append(task_id)
        self.claimed.append(status)


def body(**fields: Any) -> bytes:
    return json.dumps({"task_id": "t1", "task_status": "succeed", **fields}).encode()


def signed(
    raw: bytes, *, msg_id: str = "msg_1", at: int = NOW, secret: str = SECRET
) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(at),
        "webhook-signature": sign_webhook(secret, msg_id, at, raw),
    }


def receiver(secret: str | None = None, **kw: Any) -> tuple[kling.CallbackReceiver, FakeClient]:
    client = FakeClient()
    return kling.CallbackReceiver(client, secret=secret, clock=lambda: NOW, **kw), client  # type: ignore[arg-type]


# -- checking deliveries ----------------------------------------------------------------------


def test_a_valid_callback_notifies_the_client() -> None:
    recv, client = receiver()
    assert recv.receive(body(), {}) == 200
    assert client.notified == ["t1"]
    assert (recv.accepted, recv.rejected) == (1, 0)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'"t1"',
        b"{",
        body(pad="x" * MAX_BODY),
    ],
    ids=["text", "binary", "array", "string", "cut", "huge"],
)
def test_malformed_bodies_are_400_and_wake_nothing(raw: bytes) -> None:
    recv, client = receiver()
    assert recv.receive(raw, {}) == 400
    assert client.notified == []
    assert recv.rejected == 1


@pytest.mark.parametrize(
    ("raw", "task_id", "claimed"),
    [
        (
            b'{"task_id": 867283741759111202, "task_status": "succeed"}',
            "867283741759111202",
            "succeed",
        ),
        (b'{"id": "t9", "status": "SUCCEED", "created_at": 1739744384}', "t9", "succeed"),
        (b'{"id": 9, "status": "processing"}', "9", "processing"),
        (b'{"data": {"task_id": "t3", "task_status": "failed"}}', "t3", "failed"),
        (b'{"task_id": " t4 ", "task_status": 5}', "t4", "5"),
    ],
    ids=["numeric-task-id", "id-status", "numeric-id", "nested-data", "padded-id"],
)
def test_other_well_formed_shapes_wake_the_tracker(raw: bytes, task_id: str, claimed: str) -> None:
    events: list[kling.Event] = []
    recv, client = receiver()
    client.event_hook = events.append  # type: ignore[assignment]
    assert recv.receive(raw, {}) == 200
    assert client.notified == [task_id]
    assert events[0] == kling.CallbackReceived(task_id=task_id, claimed_status=claimed)
    assert (recv.accepted, recv.ignored, recv.rejected) == (1, 0, 0)


@pytest.mark.parametrize(
    "raw",
    [b"{}", b'{"task_id": ""}', b'{"task_id": null}', b'{"task_id": true}', b'{"event": "ping"}'],
    ids=["empty", "empty-id", "null-id", "bool-id", "ping"],
)
def test_well_formed_callbacks_we_cannot_use_get_200(raw: bytes) -> None:
    # 200, so the sender stops delivering it; nothing to sweep for.
    recv, client = receiver()
    assert recv.receive(raw, {}) == 200
    assert client.notified == []
    assert (recv.accepted, recv.ignored, recv.rejected) == (0, 1, 0)


def test_duplicates_each_just_ask_for_a_sweep() -> None:
    recv, client = receiver()
    for _ in range(3):
        assert recv.receive(body(), {}) == 200
    assert client.notified == ["t1"] * 3


def test_a_correct_signature_is_accepted_with_or_without_the_prefix() -> None:
    raw = body()
    bare = SECRET.removeprefix("whsec_")
    for secret in (SECRET, bare):
        recv, client = receiver(secret)
        assert recv.receive(raw, signed(raw)) == 200
        assert client.notified == ["t1"]


def test_header_names_are_case_insensitive_even_in_a_plain_dict() -> None:
    raw = body()
    headers = {k.title(): v for k, v in signed(raw).items()}
    recv, _ = receiver(SECRET)
    assert recv.receive(raw, headers) == 200


def test_any_one_of_several_signatures_will_do() -> None:
    raw = body()
    headers = signed(raw)
    other = sign_webhook("whsec_" + base64.b64encode(b"old key").decode(), "msg_1", NOW, raw)
    headers["webhook-signature"] = f"v1,bad== {other} {headers['webhook-signature']}"
    recv, _ = receiver(SECRET)
    assert recv.receive(raw, headers) == 200


def _tamper(headers: dict[str, str], raw: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    wrong_key = "whsec_" + base64.b64encode(b"someone else's key").decode()
    return [
        ("unsigned", {}, raw),
        ("no id", {k: v for k, v in headers.items() if k != "webhook-id"}, raw),
        ("no timestamp", {k: v for k, v in headers.items() if k != "webhook-timestamp"}, raw),
        ("body changed", headers, raw.replace(b"succeed", b"failed!")),
        ("id changed", {**headers, "webhook-id": "msg_2"}, raw),
        ("wrong key", signed(raw, secret=wrong_key), raw),
        (
            "v2 scheme",
            {**headers, "webhook-signature": "v2" + headers["webhook-signature"][2:]},
            raw,
        ),
        ("not base64", {**headers, "webhook-signature": "v1,@@@"}, raw),
        ("stale", signed(raw, at=NOW - 301), raw),
        ("future", signed(raw, at=NOW + 301), raw),
        ("odd stamp", {**headers, "webhook-timestamp": "1e9"}, raw),
        ("huge stamp", {**headers, "webhook-timestamp": "9" * 5000}, raw),
    ]


def test_missing_invalid_or_stale_signatures_are_401() -> None:
    raw = body()
    for name, headers, sent in _tamper(signed(raw), raw):
        recv, client = receiver(SECRET)
        assert recv.receive(sent, headers) == 401, name
        assert client.notified == [], name


def test_within_the_tolerance_is_fine() -> None:
    raw = body()
    recv, _ = receiver(SECRET)
    assert recv.receive(raw, signed(raw, at=NOW - 299)) == 200
    assert recv.receive(raw, signed(raw, at=NOW + 299)) == 200


def test_a_signed_but_malformed_body_is_still_400() -> None:
    raw = b"[]"
    recv, _ = receiver(SECRET)
    assert recv.receive(raw, signed(raw)) == 400


def test_a_bad_secret_fails_at_construction() -> None:
    with pytest.raises(kling.ConfigurationError):
        receiver("whsec_not*base64")
    with pytest.raises(kling.ConfigurationError):
        receiver("whsec_")


def test_repr_never_shows_the_secret() -> None:
    recv, _ = receiver(SECRET, public_url="https://example.com/cb")
    assert SECRET.removeprefix("whsec_") not in repr(recv)
    assert "signed" in repr(recv)


# -- serving ----------------------------------------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_own_server_binds_loopback_and_answers(http: aiohttp.ClientSession) -> None:
    recv, client = receiver()
    with pytest.raises(RuntimeError):
        _ = recv.url
    async with recv:
        assert recv.url.startswith("http://127.0.0.1:") and recv.url.endswith("/kling/callback")
        async with http.post(recv.url, data=body()) as resp:
            assert resp.status == 200
        async with http.post(recv.url, data=b"nope") as resp:
            assert resp.status == 400
        async with http.post(recv.url, data=io.BytesIO(body(pad="x" * (2 * MAX_BODY)))) as resp:
            assert resp.status in (400, 413)
        async with http.get(recv.url) as resp:
            assert resp.status == 405
    assert client.notified == ["t1"]
    await recv.stop()  # a second stop is harmless


async def test_signed_delivery_over_http(http: aiohttp.ClientSession) -> None:
    recv, client = receiver(SECRET)
    recv._clock = time.time
    raw = body()
    async with recv:
        async with http.post(recv.url, data=raw) as resp:
            assert resp.status == 401
        async with http.post(recv.url, data=raw, headers=signed(raw, at=int(time.time()))) as resp:
            assert resp.status == 200
    assert client.notified == ["t1"]


async def test_handler_mounts_in_a_users_own_app(http: aiohttp.ClientSession) -> None:
    recv, client = receiver(public_url="https://example.com/hooks/kling")
    assert recv.url == "https://example.com/hooks/kling"
    app = web.Application()
    app.router.add_post("/hooks/kling", recv.handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        url = f"http://{host}:{port}/hooks/kling"
        async with http.post(url, data=body()) as resp:
            assert resp.status == 200
        async with http.post(url, data=io.BytesIO(b"x" * (MAX_BODY + 10))) as resp:
            assert resp.status == 400
    finally:
        await runner.cleanup()
    assert client.notified == ["t1"]


# -- with the simulator: the wake-up, and why a forgery is harmless ------------------------------

SLOW = kling.PollPolicy(interval=30.0, interval_max=30.0)


def make_client(sim: Simulator, **kw: Any) -> kling.Client:
    return kling.Client(
        access_key=sim.access_key, secret_key=sim.secret_key, base_url=sim.url, poll=SLOW, **kw
    )


async def test_callbacks_make_wait_return_long_before_the_poll_interval(png_path: Path) -> None:
    events: list[kling.Event] = []
    async with (
        Simulator(concurrency=2, gen_seconds=0.3, gen_spread=0.0) as sim,
        make_client(sim, event_hook=events.append) as client,
        kling.CallbackReceiver(client) as recv,
    ):
        client.callback_url = recv.url
        request = kling.MultiImageToVideoRequest(images=[png_path], prompt="a wave")
        started = time.monotonic()
        task = await client.wait(await client.submit(request), timeout=10)
        assert task.task_status == "succeed"
        assert time.monotonic() - started < 5  # the first poll was due after 30 s
        assert recv.accepted >= 1 and sim.stats.callbacks_sent >= 1
        assert client.stats.slots_in_use == 0  # the confirmed end freed the slot
    kinds = [e.kind for e in events]
    assert "callback_received" in kinds and kinds.index("callback_received") < kinds.index(
        "task_finished"
    )


async def test_a_claimed_end_frees_the_slot_before_any_poll(png_path: Path) -> None:
    """With one slot, the second create goes as soon as the first task's callback arrives."""
    async with (
        Simulator(concurrency=1, gen_seconds=0.3, gen_spread=0.0) as sim,
        make_client(sim, limits=kling.Limits(concurrency=1, rps=1000)) as client,
        kling.CallbackReceiver(client) as recv,
    ):
        client.callback_url = recv.url
        make = kling.MultiImageToVideoRequest
        first = await client.submit(make(images=[png_path], prompt="first"))
        second = await asyncio.wait_for(client.submit(make(images=[png_path], prompt="2nd")), 10)
        assert client.stats.sweeps == 0  # freed by the callback: no poll was due (30 s)
        assert sim.stats.rejected_concurrency == 0
        done = await asyncio.wait_for(
            asyncio.gather(client.wait(first), client.wait(second)), 10
        )  # the second's callback leaves only claimed tasks: one sweep confirms both
        assert [t.task_status for t in done] == ["succeed", "succeed"]
        assert client.stats.slots_in_use == 0


async def test_duplicate_callbacks_are_harmless(png_path: Path) -> None:
    async with (
        Simulator(gen_seconds=0.2, gen_spread=0.0, duplicate_callbacks=True) as sim,
        make_client(sim) as client,
        kling.CallbackReceiver(client) as recv,
    ):
        client.callback_url = recv.url
        request = kling.MultiImageToVideoRequest(images=[png_path], prompt="twice")
        task = await client.wait(await client.submit(request), timeout=10)
        assert task.task_status == "succeed"
        assert recv.accepted >= 2
        assert sim.stats.accepted_creates == 1


async def test_a_forged_success_does_not_finish_the_task(png_path: Path) -> None:
    async with (
        Simulator(gen_seconds=1.5, gen_spread=0.0, callbacks=False) as sim,
        make_client(sim) as client,
        kling.CallbackReceiver(client) as recv,
        aiohttp.ClientSession() as http,
    ):
        request = kling.MultiImageToVideoRequest(images=[png_path], prompt="forged")
        task = await client.submit(request)
        waiter = asyncio.ensure_future(client.wait(task, timeout=10))
        sweeps = client.stats.sweeps
        forged = {"task_id": task.task_id, "task_status": "succeed", "task_result": {}}
        async with http.post(recv.url, json=forged) as resp:
            assert resp.status == 200  # accepted as a hint...
        await asyncio.sleep(0.3)
        assert client.stats.sweeps > sweeps  # ...which made the client ask Kling at once
        assert not waiter.done()  # and Kling said it is not finished
        assert client.stats.slots_in_use == 1  # the slot the claim freed is held again
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)


async def test_client_callback_url_applies_only_to_requests_without_one(png_path: Path) -> None:
    async with (
        Simulator(gen_seconds=0.2, gen_spread=0.0) as sim,
        make_client(sim) as client,
        kling.CallbackReceiver(client) as default,
        kling.CallbackReceiver(client, path="/own") as own,
    ):
        client.callback_url = default.url
        plain = kling.MultiImageToVideoRequest(images=[png_path], prompt="default")
        custom = kling.MultiImageToVideoRequest(
            images=[png_path], prompt="own", callback_url=own.url
        )
        await client.wait(await client.submit(plain), timeout=10)
        assert default.accepted >= 1 and own.accepted == 0
        seen = default.accepted
        await client.wait(await client.submit(custom), timeout=10)
        assert own.accepted >= 1 and default.accepted == seen


def test_client_option_sets_the_default(png_path: Path) -> None:
    client = kling.Client(
        access_key="AK" * 8, secret_key="S" * 40, callback_url="https://example.com/cb"
    )
    assert client.callback_url == "https://example.com/cb"
