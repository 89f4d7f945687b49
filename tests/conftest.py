"""Shared fixtures for the kling-async test suite.

aioresponses compatibility shim
-------------------------------
aioresponses 0.7.9 builds its fake ``aiohttp.ClientResponse`` without the ``stream_writer``
keyword that aiohttp 3.14 made mandatory, so every mocked request fails with
``ClientResponse.__init__() missing 1 required keyword-only argument: 'stream_writer'``
(pnuckowski/aioresponses#289). Until a fixed release exists we hand aioresponses a subclass whose
``__init__`` supplies a stub writer (the response only reads its ``output_size``). The patch is
applied when this module is imported, before any test builds an ``aioresponses()`` context, and
does nothing once aioresponses passes the argument itself.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import aioresponses.core
import pytest
from aioresponses import aioresponses as _aioresponses
from hypothesis import settings


class _StubStreamWriter:
    """Stands in for the request's stream writer: aiohttp reads only `output_size`."""

    output_size = 0


class _CompatClientResponse(aiohttp.ClientResponse):
    """`ClientResponse` that tolerates aioresponses 0.7.9 omitting `stream_writer`."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("stream_writer", _StubStreamWriter())
        super().__init__(*args, **kw)


aioresponses.core.ClientResponse = _CompatClientResponse  # type: ignore[misc]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect `exhaustive` tests unless asked for (`-m exhaustive` or KLING_EXHAUSTIVE=1)."""
    if "exhaustive" in (config.getoption("markexpr") or "") or os.environ.get("KLING_EXHAUSTIVE"):
        return
    dropped = [item for item in items if item.get_closest_marker("exhaustive")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not item.get_closest_marker("exhaustive")]


# No example database: property tests leave no `.hypothesis/` behind in the working tree.
settings.register_profile("kling_async", database=None, deadline=None)
settings.load_profile("kling_async")

#: ≥ 32 bytes: pyjwt warns about shorter HMAC keys, and warnings are errors here.
TEST_ACCESS_KEY = "AKtest0123456789abcdefAK"
TEST_SECRET_KEY = "SKtest-0123456789abcdef0123456789abcdef-secret"
TEST_API_KEY = "kling-api-key-0123456789abcdef0123456789abcdef"


@pytest.fixture
def access_key() -> str:
    """A test access key (the JWT `iss`)."""
    return TEST_ACCESS_KEY


@pytest.fixture
def secret_key() -> str:
    """A test secret key long enough for HS256 without pyjwt's short-key warning."""
    return TEST_SECRET_KEY


@pytest.fixture
def api_key() -> str:
    """A test API key (sent as the bearer as is)."""
    return TEST_API_KEY


@pytest.fixture
def mock_http() -> Iterator[_aioresponses]:
    """An active `aioresponses()` context: every aiohttp request must match a registered mock."""
    with _aioresponses() as mocked:
        yield mocked


def make_png(width: int = 320, height: int = 320) -> bytes:
    """A small but valid (greyscale, 8-bit) PNG of the given size."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def png_factory(tmp_path: Path) -> Any:
    """`png_factory(width, height, name)` writes a PNG under tmp_path and returns its path."""

    def write(width: int = 320, height: int = 320, name: str | None = None) -> Path:
        path = tmp_path / (name or f"img-{width}x{height}.png")
        path.write_bytes(make_png(width, height))
        return path

    return write


@pytest.fixture
def png_path(tmp_path: Path) -> Path:
    """A 320×320 PNG file on disk."""
    path = tmp_path / "ref.png"
    path.write_bytes(make_png())
    return path


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Any]:
    """A fresh redis-server on 127.0.0.1 (free port, persistence off), stopped afterwards."""
    from redis_helpers import RedisServer

    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
