"""Tests for kling_async._download_stream against a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import tracemalloc
from pathlib import Path

import aiohttp
import cdn_helpers
import pytest

from kling_async import _download_stream
from kling_async._config import Timeouts
from kling_async._download_stream import (
    DownloadHTTPError,
    DownloadResult,
    VideoGoneError,
    VideoUnavailableError,
    redact_url,
    safe_filename,
    stream_to_file,
)
from kling_async._errors import ConfigurationError, DownloadError, VideoExpiredError

server = cdn_helpers.server  # the fixtures, shared with test_download_pipeline
session = cdn_helpers.session
BODY, sha = cdn_helpers.BODY, cdn_helpers.sha


async def test_happy_path_replaces_dest_atomically(server, session, tmp_path: Path) -> None:
    base, st = server
    dest = tmp_path / "new" / "dir" / "v.mp4"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"old")  # always re-downloaded and replaced
    result = await stream_to_file(session, f"{base}/video", dest, chunk_size=1 << 16)
    assert result == DownloadResult(dest, len(BODY), sha(BODY), 0)
    assert dest.read_bytes() == BODY
    assert list(dest.parent.iterdir()) == [dest]  # no .part left
    assert "Range" not in st.seen[0]
    assert st.seen[0]["Accept-Encoding"] == "identity"


async def test_creates_missing_parent(server, session, tmp_path: Path) -> None:
    base, _ = server
    dest = tmp_path / "a" / "b" / "v.mp4"
    await stream_to_file(session, f"{base}/video", dest)
    assert dest.read_bytes() == BODY


async def test_progress_is_monotonic_and_ends_at_total(server, session, tmp_path: Path) -> None:
    base, _ = server
    calls: list[tuple[int, int | None]] = []
    await stream_to_file(
        session,
        f"{base}/video",
        tmp_path / "v.mp4",
        chunk_size=1 << 16,
        on_progress=lambda *a: calls.append(a),
    )
    assert len(calls) >= 4
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    assert all(total == len(BODY) for _, total in calls)
    assert calls[-1] == (len(BODY), len(BODY))


async def test_truncation_keeps_part_and_never_creates_dest(server, session, tmp_path) -> None:
    base, st = server
    st.cut_at = 100_000
    dest = tmp_path / "v.mp4"
    with pytest.raises(DownloadError, match=f"truncated after 100000 of {len(BODY)} bytes"):
        await stream_to_file(session, f"{base}/video", dest, chunk_size=1 << 16)
    assert not dest.exists()
    assert (tmp_path / "v.mp4.part").read_bytes() == BODY[:100_000]


async def test_resume_after_truncation_fetches_only_the_rest(server, session, tmp_path) -> None:
    base, st = server
    st.cut_at = 120_000
    dest = tmp_path / "v.mp4"
    with pytest.raises(DownloadError):
        await stream_to_file(session, f"{base}/video", dest)
    result = await stream_to_file(session, f"{base}/video", dest)
    assert st.seen[1]["Range"] == "bytes=120000-"
    assert st.sent == [120_000, len(BODY) - 120_000]
    assert result.resumed_from == 120_000
    assert result.bytes == len(BODY)
    assert result.sha256 == sha(BODY)
    assert dest.read_bytes() == BODY
    assert not (tmp_path / "v.mp4.part").exists()


async def test_read_timeout_mid_body_keeps_part_then_resumes(server, session, tmp_path) -> None:
    base, st = server
    st.stall_at = 200_000
    dest = tmp_path / "v.mp4"
    quick = Timeouts(download_read=0.2)
    with pytest.raises(DownloadError, match="truncated after 200000"):
        await stream_to_file(session, f"{base}/video", dest, timeouts=quick, chunk_size=1 << 16)
    assert not dest.exists()
    result = await stream_to_file(session, f"{base}/video", dest, timeouts=quick)
    assert (result.resumed_from, result.sha256) == (200_000, sha(BODY))


async def test_cancel_mid_body_keeps_part_and_closes_it(server, session, tmp_path) -> None:
    base, st = server
    st.stall_at = 150_000
    dest = tmp_path / "v.mp4"
    task = asyncio.create_task(stream_to_file(session, f"{base}/video", dest, chunk_size=1 << 16))
    await asyncio.wait_for(st.stalled.wait(), 5)
    await asyncio.sleep(0.05)  # let the client take in what was sent
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not dest.exists()
    kept = (tmp_path / "v.mp4.part").read_bytes()  # the batches handed off before the cancel
    assert 0 < len(kept) <= 150_000 and BODY.startswith(kept)
    result = await stream_to_file(session, f"{base}/video", dest)
    assert (result.resumed_from, result.sha256) == (len(kept), sha(BODY))


async def test_chunked_body_without_length(server, session, tmp_path: Path) -> None:
    base, st = server
    st.chunked = True
    calls: list[tuple[int, int | None]] = []
    result = await stream_to_file(
        session, f"{base}/video", tmp_path / "v.mp4", on_progress=lambda *a: calls.append(a)
    )
    assert (result.bytes, result.sha256) == (len(BODY), sha(BODY))
    assert calls[-1] == (len(BODY), None)


async def test_server_ignoring_range_restarts_from_zero(server, session, tmp_path) -> None:
    base, st = server
    dest = tmp_path / "v.mp4"
    (tmp_path / "v.mp4.part").write_bytes(b"stale bytes from another file")
    result = await stream_to_file(session, f"{base}/norange", dest)
    assert st.seen[0]["Range"] == "bytes=29-"
    assert result.resumed_from == 0
    assert (result.bytes, result.sha256) == (len(BODY), sha(BODY))
    assert dest.read_bytes() == BODY


async def test_416_drops_the_part_and_asks_without_range(server, session, tmp_path) -> None:
    base, st = server
    dest = tmp_path / "v.mp4"
    (tmp_path / "v.mp4.part").write_bytes(BODY + b"extra")  # longer than the file
    result = await stream_to_file(session, f"{base}/video", dest)
    assert [h.get("Range") for h in st.seen] == [f"bytes={len(BODY) + 5}-", None]
    assert result.resumed_from == 0
    assert dest.read_bytes() == BODY


async def test_expected_sha256(server, session, tmp_path: Path) -> None:
    base, _ = server
    dest = tmp_path / "v.mp4"
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        await stream_to_file(session, f"{base}/video", dest, expected_sha256="0" * 64)
    assert not dest.exists()
    assert not (tmp_path / "v.mp4.part").exists()
    good = await stream_to_file(session, f"{base}/video", dest, expected_sha256=sha(BODY).upper())
    assert good.sha256 == sha(BODY)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/v.mp4",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http:///x",
        "http://[::1",
    ],
)
async def test_non_http_url_refused(session, tmp_path: Path, url: str) -> None:
    with pytest.raises(DownloadError, match="non-http"):
        await stream_to_file(session, url, tmp_path / "v.mp4")
    assert os.listdir(tmp_path) == []


async def test_no_authorization_header_is_sent(server, session, tmp_path: Path) -> None:
    base, st = server
    await stream_to_file(session, f"{base}/video", tmp_path / "v.mp4")
    assert all("Authorization" not in h for h in st.seen)


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": "Bearer secret"}, {"authorization": "Bearer secret"}],
)
async def test_session_with_credentials_is_refused(server, tmp_path: Path, headers) -> None:
    base, st = server
    async with aiohttp.ClientSession(headers=headers) as api_session:
        with pytest.raises(ConfigurationError):
            await stream_to_file(api_session, f"{base}/video", tmp_path / "v.mp4")
    assert st.seen == []


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (403, VideoUnavailableError),
        (404, VideoUnavailableError),
        (410, VideoGoneError),
        (500, DownloadHTTPError),
    ],
)
async def test_status_errors(server, session, tmp_path: Path, status: int, cls: type) -> None:
    base, _ = server
    url = f"{base}/{status}?X-Signature=topsecret#frag"
    with pytest.raises(cls, match=f"HTTP {status}") as info:
        await stream_to_file(session, url, tmp_path / "v.mp4")
    assert type(info.value) is cls
    assert info.value.status == status
    assert isinstance(info.value, VideoUnavailableError) == (status != 500)
    assert isinstance(info.value, VideoExpiredError) == (status == 410)
    assert "topsecret" not in str(info.value) and "topsecret" not in info.value.url
    assert not (tmp_path / "v.mp4").exists()


async def test_html_is_not_a_video(server, session, tmp_path: Path) -> None:
    base, _ = server
    with pytest.raises(DownloadError, match="not a video: text/html"):
        await stream_to_file(session, f"{base}/html", tmp_path / "v.mp4")
    assert not (tmp_path / "v.mp4").exists()


@pytest.mark.parametrize(
    "ctype", ["application/octet-stream", "binary/octet-stream", "video/webm", ""]
)
async def test_accepted_content_types(server, session, tmp_path: Path, ctype: str) -> None:
    base, st = server
    st.content_type = ctype
    result = await stream_to_file(session, f"{base}/video", tmp_path / "v.mp4")
    assert result.sha256 == sha(BODY)


async def test_connection_refused_is_a_download_error(session, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="failed") as info:
        await stream_to_file(
            session, f"http://127.0.0.1:{port}/v?sig=topsecret", tmp_path / "v.mp4"
        )
    assert "topsecret" not in str(info.value)
    assert not (tmp_path / "v.mp4").exists()


async def test_disk_full(server, session, tmp_path: Path, monkeypatch) -> None:
    base, _ = server

    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_download_stream, "_write", full)
    with pytest.raises(DownloadError, match="disk full") as info:
        await stream_to_file(session, f"{base}/video", tmp_path / "v.mp4", chunk_size=1 << 16)
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.ENOSPC
    assert not (tmp_path / "v.mp4").exists()


async def test_20mb_download_keeps_memory_flat(server, session, tmp_path: Path) -> None:
    base, st = server
    st.body = os.urandom(20 * 1024 * 1024)
    tracemalloc.start()
    try:
        result = await stream_to_file(session, f"{base}/video", tmp_path / "big.mp4")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.sha256 == sha(st.body)
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../x", "x.mp4"),
        ("/etc/passwd", "etc_passwd.mp4"),
        ("a/b\\c", "a_b_c.mp4"),
        ("..", "video.mp4"),
        (".", "video.mp4"),
        ("", "video.mp4"),
        ("vidéo 🎬 clip", "vid_o_clip.mp4"),
        ("a\x00b", "a_b.mp4"),
        ("--rf", "rf.mp4"),
        ("clip.MP4", "clip.mp4"),
        ("task_123.mp4", "task_123.mp4"),
        ("a...b___c", "a.b_c.mp4"),
        ("NUL", "_NUL.mp4"),
        ("con.txt", "_con.txt.mp4"),
    ],
)
def test_safe_filename_table(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


def test_safe_filename_long_names_are_capped_and_distinct() -> None:
    a, b = safe_filename("x" * 500 + "a"), safe_filename("x" * 500 + "b")
    assert a != b
    assert len(a) == len(b) == 120
    assert a.endswith(".mp4") and a.startswith("x" * 100)
    assert len(safe_filename("y" * 500, max_len=40, suffix=".json")) == 40


@pytest.mark.parametrize(
    "name", ["../../x", "/etc/passwd", "a/b\\c", "..", ".", "", "\x00", "é" * 300]
)
def test_safe_filename_never_escapes(name: str, tmp_path: Path) -> None:
    out = safe_filename(name)
    assert "/" not in out and "\\" not in out and "\x00" not in out
    assert out not in ("", ".", "..") and not out.startswith((".", "-"))
    assert (tmp_path / out).parent == tmp_path


def test_redact_url() -> None:
    url = "https://user:pw@cdn.example.com:8443/a/b.mp4?Signature=s&Expires=1#f"
    assert redact_url(url) == "https://cdn.example.com:8443/a/b.mp4"
    assert redact_url("http://[::1") == "<unparseable url>"
