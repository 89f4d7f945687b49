"""The video origin: sample MP4, Range, generated bodies, retention, signed URLs."""

from __future__ import annotations

import hashlib

import aiohttp
import pytest

from kling_async.simulator import Simulator, VideoContent
from kling_async.simulator._content import SAMPLE_PATH

from .helpers import Api


async def _video(api: Api, **fields: object) -> dict[str, str]:
    done = await api.wait(await api.new_task(**fields))
    return dict(done["task_result"]["videos"][0])


def test_sample_asset_is_a_small_mp4():
    data = SAMPLE_PATH.read_bytes()
    assert 1000 < len(data) < 50_000
    assert data[4:8] == b"ftyp"


async def test_full_download_is_the_sample(api: Api):
    video = await _video(api)
    async with api.http.get(video["url"]) as r:
        data = await r.read()
        assert r.status == 200
        assert r.headers["Content-Type"] == "video/mp4"
        assert r.headers["Accept-Ranges"] == "bytes"
        assert int(r.headers["Content-Length"]) == len(data)
    assert data == SAMPLE_PATH.read_bytes()
    assert hashlib.sha256(data).hexdigest() == api.sim.video_sha256(video["id"])
    assert api.sim.stats.video_bytes_served == len(data)
    assert api.sim.stats.video_auth_headers == 0


async def test_head_gives_length_without_body(api: Api):
    video = await _video(api)
    async with api.http.head(video["url"]) as r:
        assert r.status == 200
        assert int(r.headers["Content-Length"]) == api.sim.video_size(video["id"])


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=0-99", 0, 99), ("bytes=100-", 100, None), ("bytes=-50", -50, None)],
)
async def test_range_is_206(api: Api, header: str, start: int, end: int | None):
    video = await _video(api)
    full = SAMPLE_PATH.read_bytes()
    size = len(full)
    async with api.http.get(video["url"], headers={"Range": header}) as r:
        data = await r.read()
        assert r.status == 206
        expected = full[start : None if end is None else end + 1]
        assert data == expected
        first = start % size
        assert r.headers["Content-Range"] == f"bytes {first}-{first + len(expected) - 1}/{size}"
        assert int(r.headers["Content-Length"]) == len(expected)


async def test_range_past_the_end_is_clamped(api: Api):
    video = await _video(api)
    size = api.sim.video_size(video["id"])
    async with api.http.get(video["url"], headers={"Range": f"bytes=10-{size * 2}"}) as r:
        assert r.status == 206
        assert len(await r.read()) == size - 10


@pytest.mark.parametrize("header", ["bytes=999999-", "bytes=999999-1000000", "bytes=-0"])
async def test_unsatisfiable_range_is_416(api: Api, header: str):
    video = await _video(api)
    async with api.http.get(video["url"], headers={"Range": header}) as r:
        assert r.status == 416
        assert r.headers["Content-Range"] == f"bytes */{api.sim.video_size(video['id'])}"


async def test_invalid_range_serves_everything(api: Api):
    video = await _video(api)
    async with api.http.get(video["url"], headers={"Range": "lines=1-2"}) as r:
        assert r.status == 200
        assert len(await r.read()) == api.sim.video_size(video["id"])


async def test_authorization_header_is_counted(api: Api):
    video = await _video(api)
    async with api.http.get(video["url"], headers=api.headers()) as r:
        assert r.status == 200
    assert api.sim.stats.video_auth_headers == 1


async def test_watermarked_copy_is_served(api: Api):
    video = await _video(api, watermark_info={"enabled": True})
    async with api.http.get(video["watermark_url"]) as r:
        assert r.status == 200
        await r.read()
    plain_wm = video["url"].replace(".mp4", "-wm.mp4")
    assert plain_wm == video["watermark_url"]


async def test_unknown_video_is_404(api: Api):
    async with api.http.get(api.sim.video_url + "/videos/nope.mp4") as r:
        assert r.status == 404
    video = await _video(api)  # no watermark asked for: no -wm copy
    async with api.http.get(video["url"].replace(".mp4", "-wm.mp4")) as r:
        assert r.status == 404


async def test_generated_video_streams_exact_bytes(http: aiohttp.ClientSession):
    size = 5 * 1024 * 1024 + 123
    async with Simulator(gen_seconds=0.01, video_bytes=size) as sim:
        api = Api(sim, http)
        video = await _video(api)
        digest = hashlib.sha256()
        async with http.get(video["url"]) as r:
            assert int(r.headers["Content-Length"]) == size
            async for chunk in r.content.iter_chunked(256 * 1024):
                digest.update(chunk)
        assert digest.hexdigest() == sim.video_sha256(video["id"])
        assert sim.stats.video_bytes_served == size
        # ranges of a generated body are consistent with the whole
        async with http.get(video["url"], headers={"Range": "bytes=70000-70099"}) as r:
            part = await r.read()
        content = VideoContent(size)
        assert part == b"".join(content.iter_range(video["id"], 70000, 70099))
        assert b"".join(content.iter_range(video["id"], 0, 7))[4:8] == b"ftyp"


def test_generated_content_differs_per_video():
    content = VideoContent(1000)
    assert content.sha256("a") != content.sha256("b")
    assert content.sha256("a") == VideoContent(1000).sha256("a")
    assert VideoContent(0).sha256("a") == hashlib.sha256(b"").hexdigest()


async def test_retention_expiry(api: Api):
    video = await _video(api, external_task_id="old")
    api.sim.advance(29 * 86400)
    async with api.http.get(video["url"]) as r:
        assert r.status == 200
    api.sim.advance(2 * 86400)
    async with api.http.get(video["url"]) as r:
        assert r.status == 404
    _, data = await api.query("old")
    assert data["data"]["task_status"] == "succeed"
    assert data["data"]["task_result"] == {"videos": []}
    _, listing = await api.list()
    assert listing["data"][0]["task_result"] == {"videos": []}


async def test_retention_is_configurable(http: aiohttp.ClientSession):
    async with Simulator(gen_seconds=0.01, retention_days=1) as sim:
        api = Api(sim, http)
        video = await _video(api)
        sim.advance(86401)
        async with http.get(video["url"]) as r:
            assert r.status == 404


async def test_url_ttl_signed_links(http: aiohttp.ClientSession):
    async with Simulator(gen_seconds=0.01, url_ttl=60) as sim:
        api = Api(sim, http)
        video = await _video(api, external_task_id="ttl")
        assert "exp=" in video["url"] and "sig=" in video["url"]
        async with http.get(video["url"]) as r:
            assert r.status == 200
        unsigned = video["url"].split("?")[0]
        async with http.get(unsigned) as r:
            assert r.status == 403
        forged = video["url"][:-4] + "0000"
        async with http.get(forged) as r:
            assert r.status == 403
        sim.advance(61)
        async with http.get(video["url"]) as r:
            assert r.status == 403
        _, fresh = await api.query("ttl")
        new_url = fresh["data"]["task_result"]["videos"][0]["url"]
        assert new_url != video["url"]
        async with http.get(new_url) as r:
            assert r.status == 200
