"""A body small enough to be saved whole (`_sink.JOINT_MAX`): the request goes first, then one
job writes, hashes, fsyncs and publishes it. The same guarantees as the streamed path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cdn_helpers
import pytest

from kling_async import _download_stream
from kling_async._download_stream import DownloadResult, stream_to_file
from kling_async._errors import DownloadError

server = cdn_helpers.server
session = cdn_helpers.session
sha = cdn_helpers.sha
SMALL_BODY = os.urandom(150_000)  # three 64 KiB writes of the test server, under JOINT_MAX


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def small(server: tuple[str, cdn_helpers.State]) -> tuple[str, cdn_helpers.State]:
    base, st = server
    st.body = SMALL_BODY
    return base, st


async def test_saved_whole_fsynced_then_published(small, session, tmp_path: Path, monkeypatch):
    base, _ = small
    order: list[str] = []
    real_finish, real_commit = _download_stream._finish, _download_stream._commit
    monkeypatch.setattr(
        _download_stream, "_finish", lambda fh: (order.append("fsync"), real_finish(fh))
    )
    monkeypatch.setattr(
        _download_stream, "_commit", lambda p, d: (order.append("rename"), real_commit(p, d))
    )
    dest = tmp_path / "d" / "v.mp4"
    progress: list[tuple[int, int | None]] = []
    result = await stream_to_file(
        session, f"{base}/video", dest, on_progress=lambda *a: progress.append(a)
    )
    assert result == DownloadResult(dest, len(SMALL_BODY), sha(SMALL_BODY), 0)
    assert dest.read_bytes() == SMALL_BODY and list(dest.parent.iterdir()) == [dest]
    assert order == ["fsync", "rename"]
    assert progress == [(len(SMALL_BODY), len(SMALL_BODY))]


async def test_cut_short_keeps_a_durable_prefix_and_resumes(small, session, tmp_path: Path):
    base, st = small
    st.cut_at = 70_000
    dest = tmp_path / "v.mp4"
    with pytest.raises(DownloadError, match=f"truncated after .* of {len(SMALL_BODY)} bytes"):
        await stream_to_file(session, f"{base}/video", dest)
    assert not dest.exists()
    kept = (tmp_path / "v.mp4.part").read_bytes()
    assert SMALL_BODY.startswith(kept)
    result = await stream_to_file(session, f"{base}/video", dest)
    assert (result.resumed_from, result.sha256) == (len(kept), sha(SMALL_BODY))
    assert dest.read_bytes() == SMALL_BODY
    if kept:  # the second request asked only for the rest
        assert st.seen[-1]["Range"] == f"bytes={len(kept)}-"


async def test_wrong_digest_publishes_nothing_and_keeps_nothing(small, session, tmp_path: Path):
    base, _ = small
    dest = tmp_path / "v.mp4"
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        await stream_to_file(session, f"{base}/video", dest, expected_sha256="0" * 64)
    assert _names(tmp_path) == []
    result = await stream_to_file(
        session, f"{base}/video", dest, expected_sha256=sha(SMALL_BODY).upper()
    )
    assert result.sha256 == sha(SMALL_BODY) and dest.read_bytes() == SMALL_BODY


async def test_disk_full_is_reported_and_leaves_no_file(small, session, tmp_path, monkeypatch):
    base, _ = small

    def full(fh: Any, batch: list[Any]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_download_stream, "_write", full)
    with pytest.raises(DownloadError, match="disk full"):
        await stream_to_file(session, f"{base}/video", tmp_path / "v.mp4")
    assert _names(tmp_path) == []  # the empty .part was dropped
