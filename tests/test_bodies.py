"""Streamed create bodies: byte for byte the JSON Kling expects, re-streamed on a re-send, and
never completed with content other than what was checked."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from batch_helpers import by_line, collect, make_client
from fakes import Recorder

from kling_async import (
    Credentials,
    EncodingCache,
    InvalidRequestError,
    MultiImageToVideoRequest,
    RetryPolicy,
    _images,
    run_batch,
)
from kling_async._auth import JwtSigner
from kling_async._body import CreateBody
from kling_async._create import CREATE_PATH, create_task
from kling_async._encoding import CHUNK
from kling_async._http import HttpLayer
from kling_async._imagefile import CheckedFile
from kling_async._retry import Retries
from kling_async._types import Sleep
from kling_async.simulator import Simulator

RETRY = RetryPolicy(attempts=4, wait_initial=0.01, wait_max=0.02, timeout=30.0)


def png(width: int, height: int, size: int, seed: int = 0) -> bytes:
    """A PNG with a valid header, padded with random bytes to exactly `size` bytes."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    head = b"\x89PNG\r\n\x1a\n" + chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    )
    filler = random.Random(seed).randbytes(max(0, size - len(head) - 24))
    return head + chunk(b"prVt", filler) + chunk(b"IEND", b"")


def pngs(folder: Path, prefix: str, side: int, size: Callable[[int], int]) -> list[Path]:
    """Four distinct square PNG files, the i-th of size(i) bytes."""
    paths = [folder / f"{prefix}{i}.png" for i in range(4)]
    for i, path in enumerate(paths):
        path.write_bytes(png(side, side, size(i), seed=i))
    return paths


async def wire(request: MultiImageToVideoRequest) -> bytes:
    """What Kling must receive: the request's wire form through json.dumps."""
    return json.dumps(await request.to_wire()).encode()


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(concurrency=20, gen_seconds=0.05, record_bodies=True) as simulator:
        yield simulator


@pytest.fixture
async def layer(sim: Simulator) -> AsyncIterator[HttpLayer]:
    http = HttpLayer(
        base_url=sim.url, signer=JwtSigner(Credentials(sim.access_key, sim.secret_key))
    )
    yield http
    await http.aclose()


async def create(
    layer: HttpLayer, request: MultiImageToVideoRequest, *, sleep: Sleep | None = None, **kw: Any
) -> Any:
    rec = Recorder()
    retries = Retries(RETRY, sleep=sleep or rec.sleep, monotonic=rec.monotonic)
    return await create_task(layer, request, retries=retries, **kw)


def received(sim: Simulator) -> list[dict[str, Any]]:
    return list(sim.stats.create_bodies)


def same(record: dict[str, Any], body: bytes) -> bool:
    """The simulator got exactly `body`, announced by an exact Content-Length."""
    return record == {
        "content_length": len(body),
        "chunked": False,
        "size": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }


# --------------------------------------------------------------------------- byte-exact


#: File sizes around the chunk size and base64's groups of three.
SIZES = [700, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 2, 1_500_001, 3_000_000]


@pytest.mark.parametrize("cached", [False, True])
async def test_files_of_every_size_arrive_byte_exact(
    sim: Simulator, layer: HttpLayer, tmp_path: Path, cached: bool
) -> None:
    paths = []
    for i, size in enumerate(SIZES):
        path = tmp_path / f"img-{i}.png"
        path.write_bytes(png(640 + i, 480, size, seed=i))
        paths.append(path)
    cache = EncodingCache() if cached else None
    for group in (paths[:4], paths[4:], paths[4:]):  # the last twice: the cache's second use
        request = MultiImageToVideoRequest(images=group, prompt="files")
        task = await create(layer, request, cache=cache)  # a fresh external id each time
        body = await wire(request.with_external_id(task.external_task_id))
        assert same(received(sim)[-1], body)
    assert sim.stats.accepted_creates == 3


async def test_every_kind_of_input_and_unicode_text_arrive_byte_exact(
    sim: Simulator, layer: HttpLayer, tmp_path: Path
) -> None:
    raw = png(800, 600, 900_000, seed=1)
    (tmp_path / "a.png").write_bytes(png(700, 500, 400_000, seed=2))
    request = MultiImageToVideoRequest(
        images=[
            tmp_path / "a.png",
            raw,  # in-memory bytes
            base64.b64encode(png(900, 600, 300_000, seed=3)).decode(),  # raw base64
            "data:image/png;base64," + base64.b64encode(png(640, 640, 5_000)).decode(),
        ],
        prompt='Un chien « élégant » 🐕 — "quoted" \\ back\nslash, 中文, \u2028',
        negative_prompt="ぼやけた 😶",
        mode="pro",
        duration="10",
        aspect_ratio="9:16",
        watermark=True,
        callback_url="https://example.com/cb?x=1&y=é",
        external_task_id="job-ü-1",
    )
    await create(layer, request)
    body = await wire(request)
    assert same(received(sim)[-1], body)
    stream = await CreateBody.build(request)
    assert stream.size == len(body) and stream.decode().encode() == body
    url_only = MultiImageToVideoRequest(images=['https://example.com/ä/b.png?q="1"'], prompt="url")
    task = await create(layer, url_only)
    assert same(received(sim)[-1], await wire(url_only.with_external_id(task.external_task_id)))


async def test_shared_small_images_through_a_client_are_cached_and_exact(
    sim: Simulator, tmp_path: Path
) -> None:
    paths = pngs(tmp_path, "s", 500, lambda i: 20_000 + i)
    requests = [
        MultiImageToVideoRequest(images=paths, prompt=f"shared {i}", external_task_id=f"s-{i}")
        for i in range(8)
    ]
    async with make_client(sim, concurrency=8) as client:
        await asyncio.gather(*(client.submit(r) for r in requests))
        assert client.encodings.misses <= 8 and client.encodings.hits >= 24
    digests = sorted(r["sha256"] for r in received(sim))
    assert digests == sorted([hashlib.sha256(await wire(r)).hexdigest() for r in requests])


# --------------------------------------------------------------------------- re-send


class _Capture:
    """An API stand-in that reads each create body whole, loses the first answer (HTTP 500
    after reading), and knows no task on lookup: the client must send the create again."""

    def __init__(self) -> None:
        self.bodies: list[tuple[int | None, bytes]] = []

    async def create(self, request: web.Request) -> web.Response:
        self.bodies.append((request.content_length, await request.read()))
        if len(self.bodies) == 1:
            return web.json_response(
                {"code": 5000, "message": "lost", "request_id": "r"}, status=500
            )
        data = {"task_id": "t-1", "task_status": "submitted", "created_at": 1, "updated_at": 1}
        return web.json_response({"code": 0, "message": "ok", "request_id": "r", "data": data})

    async def lookup(self, request: web.Request) -> web.Response:
        return web.json_response({"code": 1203, "message": "nope", "request_id": "r"}, status=404)


async def test_resend_after_unknown_outcome_restreams_identical_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    capture = _Capture()
    app = web.Application(client_max_size=64 << 20)
    app.router.add_post(CREATE_PATH, capture.create)
    app.router.add_get(CREATE_PATH + "/{id}", capture.lookup)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    opens: list[Path] = []
    real = CheckedFile.chunks

    def spy(self: CheckedFile) -> Any:
        opens.append(self.path)
        return real(self)

    monkeypatch.setattr(CheckedFile, "chunks", spy)
    (tmp_path / "a.png").write_bytes(png(800, 600, 2_500_000, seed=9))
    request = MultiImageToVideoRequest(
        images=[tmp_path / "a.png", png(640, 480, 1_000_000, seed=8)],
        prompt="again ✓",
        external_task_id="resend-1",
    )
    layer = HttpLayer(
        base_url=f"http://127.0.0.1:{port}",
        signer=JwtSigner(Credentials(api_key="k" * 40)),
    )
    try:
        task = await create(layer, request)
    finally:
        await layer.aclose()
        await runner.cleanup()
    assert task.task_id == "t-1"
    assert opens == [(tmp_path / "a.png").resolve()] * 2  # streamed from the file each time
    body = await wire(request)
    assert [b for _, b in capture.bodies] == [body, body]  # the same bytes, twice
    assert [n for n, _ in capture.bodies] == [len(body)] * 2


# --------------------------------------------------------------------------- changed files


async def test_file_changed_before_sending_is_rejected(
    sim: Simulator, layer: HttpLayer, tmp_path: Path
) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(png(800, 600, 500_000))
    request = MultiImageToVideoRequest(images=["https://example.com/x.png", path], prompt="p")
    path.write_bytes(png(800, 600, 400_000))
    with pytest.raises(InvalidRequestError) as info:
        await create(layer, request)
    assert info.value.field == "images[1]"
    assert (
        f"images[1] ({str(path)!r}): file changed since it was checked: size 500,000 → 400,000"
        in str(info.value)
    )
    assert sim.stats.requests["create"] == 0


async def test_file_changed_between_attempts_is_rejected_not_resent(
    sim: Simulator, layer: HttpLayer, tmp_path: Path
) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(png(800, 600, 500_000))
    request = MultiImageToVideoRequest(images=[path], prompt="p", external_task_id="between")
    sim.faults.script("create", "5000")

    async def sleep_and_edit(seconds: float) -> None:
        st = path.stat()
        path.write_bytes(png(800, 600, 500_000, seed=5))  # same size, new content and mtime
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))

    with pytest.raises(InvalidRequestError, match=r"modified \(same size, new modification time\)"):
        await create(layer, request, sleep=sleep_and_edit)
    assert sim.stats.accepted_creates == 0 and sim.task("between") is None


async def test_file_changed_mid_stream_never_completes_the_body(
    sim: Simulator, layer: HttpLayer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.png"
    data = png(800, 600, 3_000_000)
    path.write_bytes(data)
    request = MultiImageToVideoRequest(images=[path], prompt="p", external_task_id="mid")
    real = _images._encode_next
    calls: list[int] = []

    def edit_after_first_chunk(chunks: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:  # the first chunk is on the wire: truncate the file
            st = path.stat()
            path.write_bytes(data[: CHUNK * 3])
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        return real(chunks)

    monkeypatch.setattr(_images, "_encode_next", edit_after_first_chunk)
    with pytest.raises(InvalidRequestError, match=r"images\[0\].*it shrank while being sent"):
        await create(layer, request)
    await asyncio.sleep(0.05)
    assert sim.stats.accepted_creates == 0 and sim.task("mid") is None
    assert received(sim) == []  # the simulator never got a whole body


async def test_batch_rejects_only_the_job_whose_file_changed(
    sim: Simulator, tmp_path: Path
) -> None:
    paths = pngs(tmp_path, "j", 600, lambda i: 50_000)
    requests = [
        MultiImageToVideoRequest(images=[p], prompt=f"job {i}") for i, p in enumerate(paths)
    ]
    paths[2].write_bytes(png(600, 600, 60_000))  # after the request was checked
    async with make_client(sim, concurrency=2) as client:
        results = by_line(await collect(run_batch(client, requests, tmp_path / "out")))
    assert results[3].state == "rejected"
    assert results[3].error is not None
    assert "images[0]" in results[3].error.message and "changed" in results[3].error.message
    assert {n: r.state for n, r in results.items() if n != 3} == {
        1: "downloaded",
        2: "downloaded",
        4: "downloaded",
    }
    assert sim.stats.accepted_creates == 3
