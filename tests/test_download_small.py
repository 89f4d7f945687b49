"""A body small enough to be saved whole (`_sink.JOINT_MAX`): the request goes first, then one
job writes, hashes, fsyncs and publishes it. The same guarantees as the streamed path."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import cdn_helpers
import pytest

from kling_async import _download_stream, _saver
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
    dest = tmp_path / "d" / "v.mp4"
    order: list[str] = []
    real_finish, real_fsync_dir = _download_stream._finish, _saver.fsync_dir

    def finish(fh: Any) -> None:
        order.append("fsync file")
        real_finish(fh)

    def fsync_dir(folder: Path) -> None:  # the rename is done; its folder is made durable
        order.append(f"fsync folder, {dest.name} there: {dest.exists()}")
        real_fsync_dir(folder)

    monkeypatch.setattr(_download_stream, "_finish", finish)
    monkeypatch.setattr(_saver, "fsync_dir", fsync_dir)
    progress: list[tuple[int, int | None]] = []
    result = await stream_to_file(
        session, f"{base}/video", dest, on_progress=lambda *a: progress.append(a)
    )
    assert result == DownloadResult(dest, len(SMALL_BODY), sha(SMALL_BODY), 0)
    assert dest.read_bytes() == SMALL_BODY and list(dest.parent.iterdir()) == [dest]
    assert order == ["fsync file", "fsync folder, v.mp4 there: True"]
    assert progress == [(len(SMALL_BODY), len(SMALL_BODY))]


async def test_saves_at_once_share_the_folder_fsync(small, session, tmp_path, monkeypatch):
    """Saves asked for in one loop turn go to the saver together: one fsync of their folder."""
    base, _ = small
    folders: list[Path] = []
    real = _saver.fsync_dir
    monkeypatch.setattr(_saver, "fsync_dir", lambda f: (folders.append(f), real(f)))
    dests = [tmp_path / f"v{i}.mp4" for i in range(6)]
    results = await asyncio.gather(*(stream_to_file(session, f"{base}/video", d) for d in dests))
    assert all(r.sha256 == sha(SMALL_BODY) and r.path.read_bytes() == SMALL_BODY for r in results)
    assert 1 <= len(folders) < len(dests) and set(folders) == {tmp_path}


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
