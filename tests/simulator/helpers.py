"""Plain aiohttp + pyjwt helpers for driving the simulator (no client code on purpose)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import time
import zlib
from typing import Any

import aiohttp
import jwt

from kling_async.simulator import Simulator

PATH = "/v1/videos/multi-image2video"
URL_IMAGE = "https://example.com/dog.png"


def make_token(
    access_key: str,
    secret_key: str,
    *,
    now: float | None = None,
    exp_in: int = 1800,
    nbf_offset: int = -5,
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A token the way the official snippet makes it (overridable for negative tests)."""
    t = int(time.time() if now is None else now)
    payload: dict[str, Any] = {"iss": access_key, "exp": t + exp_in, "nbf": t + nbf_offset}
    payload.update(claims)
    return jwt.encode(payload, secret_key, headers=headers or {"alg": "HS256", "typ": "JWT"})


def png_bytes(width: int, height: int) -> bytes:
    """A valid grey PNG of the given size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = (b"\x00" + b"\x80" * width) * height
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def jpeg_bytes(width: int, height: int) -> bytes:
    """JPEG headers (SOI, APP0, SOF0, EOI): enough for a header-only size check."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3)
    sof += b"\x01\x11\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def b64(data: bytes) -> str:
    """Raw base64 text."""
    return base64.b64encode(data).decode()


def body(**overrides: Any) -> dict[str, Any]:
    """A minimal valid create body, with overrides."""
    payload: dict[str, Any] = {"image_list": [{"image": URL_IMAGE}], "prompt": "a cat"}
    payload.update(overrides)
    return payload


class Api:
    """Signed requests against one simulator."""

    def __init__(self, sim: Simulator, http: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.http = http

    def headers(self) -> dict[str, str]:
        """Authorization with a fresh official-style JWT dated by the simulator clock."""
        tok = make_token(self.sim.access_key, self.sim.secret_key, now=self.sim.clock.now())
        return {"Authorization": f"Bearer {tok}"}

    async def create(
        self, payload: Any = None, *, raw: bytes | None = None, **fields: Any
    ) -> tuple[int, dict[str, Any]]:
        """POST a create body; (HTTP status, JSON)."""
        if raw is None:
            raw = json.dumps(body(**fields) if payload is None else payload).encode()
        headers = {**self.headers(), "Content-Type": "application/json"}
        # BytesIO: aiohttp warns (an error here) about big raw-bytes bodies.
        async with self.http.post(self.sim.url + PATH, data=io.BytesIO(raw), headers=headers) as r:
            return r.status, await r.json()

    async def query(self, ident: str) -> tuple[int, dict[str, Any]]:
        """GET one task."""
        async with self.http.get(f"{self.sim.url}{PATH}/{ident}", headers=self.headers()) as r:
            return r.status, await r.json()

    async def list(self, **params: Any) -> tuple[int, dict[str, Any]]:
        """GET the task list."""
        query = {k: str(v) for k, v in params.items()}
        async with self.http.get(self.sim.url + PATH, params=query, headers=self.headers()) as r:
            return r.status, await r.json()

    async def new_task(self, **fields: Any) -> str:
        """Create a task that must be accepted; return its id."""
        status, data = await self.create(**fields)
        assert status == 200, data
        return str(data["data"]["task_id"])

    async def wait(self, ident: str, *statuses: str, timeout: float = 5.0) -> dict[str, Any]:
        """Poll until the task reaches one of ``statuses`` (default: a terminal one)."""
        wanted = statuses or ("succeed", "failed")
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            status, data = await self.query(ident)
            assert status == 200, data
            if data["data"]["task_status"] in wanted:
                return dict(data["data"])
            assert asyncio.get_running_loop().time() < deadline, data
            await asyncio.sleep(0.01)
