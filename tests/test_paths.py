"""Server-controlled file names and URLs: nothing is ever written outside the target folder, and
only http(s) video URLs are fetched."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from kling_async import Client, DownloadError, Task
from kling_async._download_retry import video_filename

MS = int(time.time() * 1000)  # recent: the 30-day retention has not passed
VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8

HOSTILE = [
    "../../x",
    "/etc/passwd",
    "..",
    ".",
    "a/b\\c",
    "a\x00b",
    "\x00",
    "x" * 5000,
    "../" * 300 + "etc/passwd",
    "视频",
    "动画",
    "vidéo 🎬 clip",
    "NUL",
    "con.mp4",
    "C:\\Windows\\x",
    "~/.bashrc",
    "-rf",
    " ",
    "\u202e4pm.exe",
]


def task(
    task_id: str = "1", ext: str | None = None, videos: list[dict[str, Any]] | None = None
) -> Task:
    return Task.model_validate(
        {
            "task_id": task_id,
            "task_status": "succeed",
            "task_info": {"external_task_id": ext},
            "task_result": {"videos": videos or []},
            "created_at": MS,
            "updated_at": MS,
        }
    )


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
async def cdn() -> AsyncIterator[str]:
    """A video origin on 127.0.0.1 that serves the same bytes for any path."""

    async def any_path(_: web.Request) -> web.Response:
        return web.Response(body=VIDEO, content_type="video/mp4")

    app = web.Application()
    app.router.add_get("/{tail:.*}", any_path)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def client(sleeps: Sleeps) -> AsyncIterator[Client]:
    """A client whose sleeps are recorded (a refused URL must not be retried)."""
    async with Client(
        access_key="AKpaths0123456789",
        secret_key="SKpaths-0123456789abcdef0123456789abcdef",
        base_url="http://127.0.0.1:1",
        sleep=sleeps,
    ) as c:
        yield c


def all_files(root: Path) -> set[Path]:
    return {Path(d) / f for d, _, files in os.walk(root) for f in files}


def assert_inside(paths: list[Path], out: Path) -> None:
    for p in paths:
        assert p.resolve().parent == out.resolve(), p
        assert p.is_file()


@pytest.mark.parametrize("hostile", HOSTILE, ids=range(len(HOSTILE)))
async def test_download_never_leaves_the_folder(
    client: Client, cdn: str, tmp_path: Path, hostile: str
) -> None:
    out = tmp_path / "deep" / "out"
    videos = [
        {"id": hostile, "url": f"{cdn}/{hostile}?x=1", "watermark_url": f"{cdn}/{hostile}#wm"},
        {"id": hostile, "url": f"{cdn}/../../{hostile}", "watermark_url": f"{cdn}/w/{hostile}"},
    ]
    written: list[Path] = []
    tasks = [task("2", hostile, videos)]  # the name comes from the external id
    if hostile not in (".", ".."):  # (such a task id is refused when the answer is parsed)
        tasks.append(task(hostile, None, videos))  # …from the task id
    for t in tasks:
        written += await client.download(t, out)
        written += await client.download(t, out, watermarked=True) if t.task_id == "2" else []
    written += await client.download(task("3", None, videos[:1]), out, name=hostile)
    assert_inside(written, out)
    assert all_files(tmp_path) == set(written)  # nothing elsewhere, no .part left over
    assert all(p.read_bytes() == VIDEO for p in written)


async def test_unicode_ids_do_not_share_a_file(client: Client, cdn: str, tmp_path: Path) -> None:
    # "视频" and "动画" both sanitise to nothing: each still gets its own file.
    names = ["视频", "动画", "a b", "a_b", "a/b", "a\\b", "..", "."]
    written = []
    for i, ext in enumerate(names):
        written += await client.download(
            task(str(i), ext, [{"id": "v", "url": cdn + "/v"}]), tmp_path
        )
    assert len({p.name for p in written}) == len(names)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "FILE:///etc/passwd",
        "ftp://example.com/v.mp4",
        "javascript:alert(1)",
        "data:video/mp4;base64,AAAA",
        "//example.com/v.mp4",
        "/etc/passwd",
        "../../x.mp4",
        "http:///no-host.mp4",
        "http://[::1",
        "gopher://127.0.0.1:70/x",
        "",
    ],
)
async def test_non_http_video_urls_are_refused(
    client: Client, sleeps: Sleeps, tmp_path: Path, url: str
) -> None:
    t = task("1", "ext", [{"id": "v", "url": url, "watermark_url": url}])
    for watermarked in (False, True):
        with pytest.raises(DownloadError):
            await client.download(t, tmp_path, watermarked=watermarked)
    assert sleeps.calls == []  # refused, not retried
    assert all_files(tmp_path) == set()


TEXT = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=300),
    st.sampled_from(HOSTILE),
)


@settings(max_examples=500, deadline=None)
@given(
    # A lone surrogate is refused by Task itself (a ResponseValidationError elsewhere).
    task_id=TEXT.filter(
        lambda s: s not in ("", ".", "..") and not any("\ud800" <= c <= "\udfff" for c in s)
    ),
    ext=st.none() | TEXT,
    name=st.none() | TEXT,
    count=st.integers(1, 3),
    watermarked=st.booleans(),
)
def test_video_filename_is_one_plain_name(
    task_id: str, ext: str | None, name: str | None, count: int, watermarked: bool
) -> None:
    videos = [{"id": "v", "url": "https://cdn/v"}] * count
    t = task(task_id, ext, videos)
    out = Path("/nonexistent/out")
    for index in range(count):
        fname = video_filename(t, index, name=name, watermarked=watermarked)
        assert fname.endswith(".mp4") and len(fname) <= 120
        assert fname.isascii() and fname.isprintable()
        assert "/" not in fname and "\\" not in fname and "\x00" not in fname
        assert not fname.startswith((".", "-"))
        assert (out / fname).parent == out
        assert os.path.normpath(out / fname) == str(out / fname)


@settings(max_examples=500, deadline=None)
@given(a=TEXT.filter(bool), b=TEXT.filter(bool))
def test_distinct_external_ids_get_distinct_files(a: str, b: str) -> None:
    ta = task("1", a, [{"id": "v", "url": "https://cdn/v"}])
    tb = task("2", b, [{"id": "v", "url": "https://cdn/v"}])
    same = video_filename(ta, 0) == video_filename(tb, 0)
    assert same == (a == b)
