"""A stand-in video CDN on 127.0.0.1 for the download tests: ranges, cuts, stalls, no-length."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

BODY = os.urandom(300_000)  # several 64 KiB batches, odd tail


@dataclass
class State:
    """What the test server serves next, and what it saw."""

    body: bytes = BODY
    content_type: str = "video/mp4"
    chunked: bool = False  # no Content-Length: the body ends with the chunked terminator
    cut_at: int | None = None  # next request: stop after this absolute offset and close
    stall_at: int | None = None  # next request: stop sending after this offset (hang)
    stalled: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    seen: list[dict[str, str]] = field(default_factory=list)  # request headers
    sent: list[int] = field(default_factory=list)  # body bytes written, per request


STATE = web.AppKey("state", State)


async def handler(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    st.seen.append(dict(request.headers))
    st.sent.append(0)
    kind = request.match_info["kind"]
    if kind.isdigit():
        return web.Response(status=int(kind), text="nope")
    if kind == "html":
        return web.Response(text="<html>login</html>", content_type="text/html")
    body = memoryview(st.body)  # slices of a memoryview copy nothing (memory test)
    status, headers, start = 200, {"Content-Type": st.content_type}, 0
    rng = request.headers.get("Range")
    if rng and kind != "norange":
        start = int(rng.removeprefix("bytes=").rstrip("-"))
        if start >= len(body):
            return web.Response(status=416, headers={"Content-Range": f"bytes */{len(body)}"})
        status = 206
        headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
    resp = web.StreamResponse(status=status, headers=headers)
    if not st.chunked:
        resp.content_length = len(body) - start
    await resp.prepare(request)
    stop, st.cut_at = st.cut_at, None
    stall, st.stall_at = st.stall_at, None
    end = stop if stop is not None else stall if stall is not None else len(body)
    for pos in range(start, end, 1 << 16):
        piece = body[pos : min(pos + (1 << 16), end)]
        await resp.write(piece)
        st.sent[-1] += len(piece)
    if stop is not None:
        assert request.transport is not None
        request.transport.close()  # declared the full length, sent part of it
        return resp
    if stall is not None:
        st.stalled.set()
        await st.release.wait()
        return resp
    await resp.write_eof()
    return resp


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, State]]:
    state = State()
    app = web.Application()
    app[STATE] = state
    app.router.add_get("/{kind}", handler)
    srv = TestServer(app, host="127.0.0.1", port=0)
    await srv.start_server()
    yield str(srv.make_url("")).rstrip("/"), state
    state.release.set()
    await srv.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
