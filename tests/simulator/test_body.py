"""The simulator reads create bodies as they stream: same verdicts as parsing them whole."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kling_async.simulator import Simulator
from kling_async.simulator._body import MAX_IMAGE_BYTES, BodyReader
from kling_async.simulator._protocol import SimError
from kling_async.simulator._validate import parse_create

from .helpers import PATH, URL_IMAGE, Api, b64, body, jpeg_bytes, png_bytes

PAD = b"\x00" * 70_000  # past the 64 KiB a string must reach to be streamed


def outcome(parse: Any) -> Any:
    """What the simulator would answer: the parsed request, or (code, message)."""
    try:
        return parse()
    except SimError as exc:
        return exc.code, exc.message


def streamed(raw: bytes, cuts: list[int], limit: int = 64 << 20) -> Any:
    reader = BodyReader(limit)
    edges = [0, *sorted(c % (len(raw) + 1) for c in cuts), len(raw)]
    for start, end in itertools.pairwise(edges):
        reader.feed(raw[start:end])
    return outcome(lambda: parse_create(*reader.finish()))


def whole(raw: bytes) -> Any:
    return outcome(lambda: parse_create(raw))


IMAGES = {
    "url": lambda: URL_IMAGE,
    "small": lambda: b64(png_bytes(400, 400)),
    "big png": lambda: b64(png_bytes(640, 480) + PAD),
    "big jpeg": lambda: b64(jpeg_bytes(1200, 800) + PAD),
    "tiny sides": lambda: b64(png_bytes(100, 400) + PAD),
    "bad aspect": lambda: b64(png_bytes(1200, 300) + PAD),
    "not an image": lambda: b64(b"GIF89a" + PAD),
    "long url": lambda: "https://example.com/" + "a" * 70_000,
    "data uri": lambda: "data:image/png;base64," + b64(png_bytes(640, 480) + PAD),
}
#: Edits of a big base64 string: (position in it, text) inserted, or characters cut off.
EDITS = ["!", "=", "==", "é", "\u2603", "\ud83d\ude00", "\n", " ", "A", "AA", "/"]


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A create body as some client might send it, valid or not, in many spellings."""
    kinds = draw(st.lists(st.sampled_from(sorted(IMAGES)), min_size=1, max_size=3))
    images = [IMAGES[k]() for k in kinds]
    if draw(st.integers(0, 2)) == 0:  # damage one image
        i = draw(st.integers(0, len(images) - 1))
        at = draw(st.integers(0, len(images[i])))
        if draw(st.booleans()):
            images[i] = images[i][:at] + draw(st.sampled_from(EDITS)) + images[i][at:]
        else:
            images[i] = images[i][: len(images[i]) - draw(st.integers(1, 3))]
    doc: dict[str, Any] = body(image_list=[{"image": v} for v in images])
    doc["prompt"] = draw(st.sampled_from(["a cat", "un chat élégant ☃", "a dog", " ", "x" * 2501]))
    if draw(st.booleans()):
        doc["mode"] = draw(st.sampled_from(["pro", "turbo"]))
    text = json.dumps(
        doc,
        ensure_ascii=draw(st.booleans()),
        separators=draw(st.sampled_from([(", ", ": "), (",", ":"), (" , ", " :\n ")])),
    )
    if draw(st.booleans()):
        text = text.replace("/", "\\/")  # PHP's json_encode escapes every slash
    raw = text.encode("utf-8", "surrogatepass")
    damage = draw(st.sampled_from(["none"] * 6 + ["control", "bad utf-8", "cut"]))
    at = draw(st.integers(0, len(raw)))
    if damage == "control":
        raw = raw[:at] + b"\x01" + raw[at:]
    elif damage == "bad utf-8":
        raw = raw[:at] + b"\xc3(" + raw[at:]
    elif damage == "cut":
        raw = raw[:at]
    return raw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=bodies(), cuts=st.lists(st.integers(0, 1 << 30), max_size=12))
def test_streamed_reading_answers_as_whole_parsing(raw: bytes, cuts: list[int]) -> None:
    assert streamed(raw, cuts) == whole(raw)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet="ABCxyz019+/=!é", max_size=40),
    chunk=st.integers(1, 9),
)
def test_base64_verdict_matches_strict_decoding(text: str, chunk: int) -> None:
    value = b64(png_bytes(640, 480) + PAD) + text  # streamed, with an arbitrary ending
    raw = json.dumps(body(image_list=[{"image": value}])).encode()
    cuts = list(range(len(raw) - 200, len(raw), chunk))
    assert streamed(raw, cuts) == whole(raw)


def test_big_images_leave_only_a_placeholder_in_the_document() -> None:
    images = [b64(png_bytes(640, 480) + PAD * 4) for _ in range(4)]
    raw = json.dumps(body(image_list=[{"image": v} for v in images])).encode()
    reader = BodyReader(64 << 20)
    for i in range(0, len(raw), 65_536):
        reader.feed(raw[i : i + 65_536])
    doc, images_seen = reader.finish()
    assert len(doc) < 500 and len(images_seen) == 4
    assert all(len(img.head) < 300_000 for img in images_seen.values())
    assert parse_create(doc, images_seen).image_count == 4


def test_oversize_streamed_image_reports_the_estimate() -> None:
    value = b64(png_bytes(640, 480) + b"\x00" * MAX_IMAGE_BYTES)
    raw = json.dumps(body(image_list=[{"image": value}])).encode()
    result = streamed(raw, list(range(0, len(raw), 1 << 20)))
    assert result == whole(raw)
    assert result[0] == 1201 and "must be at most 10 MB" in result[1]


def test_limit_is_enforced_while_streaming() -> None:
    reader = BodyReader(1000)
    reader.feed(b"x" * 1000)
    with pytest.raises(SimError, match="exceeds 1000 bytes"):
        reader.feed(b"x")


# --------------------------------------------------------------------------- over HTTP


@pytest.fixture
async def recording() -> AsyncIterator[Simulator]:
    async with Simulator(concurrency=50, gen_seconds=0.05, record_bodies=True) as sim:
        yield sim


async def _chunks(raw: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(raw), size):
        yield raw[i : i + size]


async def test_chunked_body_is_accepted_and_recorded(
    recording: Simulator, http: aiohttp.ClientSession
) -> None:
    raw = json.dumps(body(image_list=[{"image": b64(png_bytes(640, 480) + PAD)}] * 2)).encode()
    headers = {**Api(recording, http).headers(), "Content-Type": "application/json"}
    async with http.post(recording.url + PATH, data=_chunks(raw, 7_777), headers=headers) as r:
        assert (r.status, (await r.json())["code"]) == (200, 0)
    (seen,) = recording.stats.create_bodies
    assert seen == {
        "content_length": None,
        "chunked": True,
        "size": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }


async def test_bad_streamed_image_is_1201_naming_it(api: Api) -> None:
    good = b64(png_bytes(640, 480) + PAD)
    bad = b64(png_bytes(640, 100) + PAD)
    status, data = await api.create(body(image_list=[{"image": good}, {"image": bad}]))
    assert (status, data["code"]) == (400, 1201)
    assert "image_list[1].image" in data["message"] and "640x100" in data["message"]


async def test_many_big_bodies_at_once(recording: Simulator, http: aiohttp.ClientSession) -> None:
    rng = random.Random(5)
    raws = [
        json.dumps(
            body(image_list=[{"image": b64(png_bytes(640, 480) + rng.randbytes(300_000))}] * 4)
        ).encode()
        for _ in range(20)
    ]
    api = Api(recording, http)

    async def post(raw: bytes) -> int:
        headers = {**api.headers(), "Content-Type": "application/json"}
        async with http.post(recording.url + PATH, data=_chunks(raw, 65_536), headers=headers) as r:
            return int((await r.json())["code"])

    assert await asyncio.gather(*(post(raw) for raw in raws)) == [0] * 20
    digests = sorted(b["sha256"] for b in recording.stats.create_bodies)
    assert digests == sorted(hashlib.sha256(raw).hexdigest() for raw in raws)
