"""Property tests of request construction, checked against the simulator.

1. `MultiImageToVideoRequest(**job)` returns a request or raises InvalidRequestError whose
   `.field` names the offending field (checked: that field alone breaks a valid job), never
   any other exception.
2. Whatever constructs is accepted by the simulator (its `to_wire()` body, POSTed as is), and a
   task created under an external_task_id can be looked up by it.

The simulator runs once for the module, on its own event loop in a background thread.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import json
import os
import struct
import tempfile
import threading
import uuid
import zlib
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kling_async import Client, InvalidRequestError, MultiImageToVideoRequest, Task
from kling_async._create import CREATE_PATH, task_path
from kling_async._images import MAX_IMAGE_BYTES
from kling_async.simulator import Simulator

T = TypeVar("T")
EXAMPLES = int(os.environ.get("KLING_PROPERTY_EXAMPLES", "500"))  # ≥ 500 in CI
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FIELDS = (
    "images",
    "prompt",
    "negative_prompt",
    "model_name",
    "mode",
    "duration",
    "aspect_ratio",
    "watermark",
    "callback_url",
    "external_task_id",
)
#: A few counters reported by the last test (and read for the report).
STATS: dict[str, int] = {"built": 0, "rejected": 0, "posted": 0, "looked_up": 0}


# -- image builders ---------------------------------------------------------------------------


def _chunk(tag: bytes, data: bytes) -> bytes:
    body = tag + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


@functools.lru_cache(maxsize=512)
def png(width: int, height: int) -> bytes:
    """A valid greyscale PNG: IHDR, one IDAT of zero rows, IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(bytes((width + 1) * height), 1)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def jpeg(width: int, height: int, before: list[bytes], sof: int) -> bytes:
    """A JPEG header walk: SOI, arbitrary segments/fill/RST markers, a SOFn frame, SOS, EOI."""
    frame = struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    scan = b"\xff\xda\x00\x0c\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00" + b"\x12\x34" * 4
    return b"\xff\xd8" + b"".join(before) + bytes([0xFF, sof]) + frame + scan + b"\xff\xd9"


# Sides near the 300 px minimum and near the 2.5 aspect boundary (300×750, 320×800, …).
SIDES = st.one_of(
    st.sampled_from([1, 2, 120, 298, 299, 300, 301, 319, 320, 321, 749, 750, 751, 799, 800, 801]),
    st.integers(1, 820),
)
SEGMENT = st.one_of(
    st.builds(
        lambda n, payload: bytes([0xFF, 0xE0 + n]) + struct.pack(">H", len(payload) + 2) + payload,
        st.integers(0, 15),
        st.binary(max_size=24),
    ),
    st.builds(lambda n: b"\xff" * n, st.integers(1, 3)),  # fill bytes before the next marker
    st.builds(lambda n: bytes([0xFF, 0xD0 + n]), st.integers(0, 7)),  # RSTn: no length
    st.just(b"\xff\x01"),  # TEM: no length
    st.builds(lambda p: b"\xff\xc4" + struct.pack(">H", len(p) + 2) + p, st.binary(max_size=8)),
)
SOF = st.sampled_from([0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC7, 0xC9, 0xCB, 0xCD, 0xCF])

# Pairs inside the rules, boundaries first: what a valid job is made of.
GOOD_DIMS = st.one_of(
    st.sampled_from([(300, 300), (300, 750), (750, 300), (320, 800), (800, 320), (301, 752)]),
    st.tuples(st.integers(300, 800), st.integers(300, 800)).filter(
        lambda d: 2 * d[0] <= 5 * d[1] and 2 * d[1] <= 5 * d[0]
    ),
)
GOOD_BYTES = st.one_of(
    GOOD_DIMS.map(lambda d: png(*d)),
    st.builds(
        lambda d, seg, sof: jpeg(d[0], d[1], seg, sof),
        GOOD_DIMS,
        st.lists(SEGMENT, max_size=4),
        SOF,
    ),
)
PNG_BYTES = st.one_of(
    st.builds(png, SIDES, SIDES),
    st.builds(lambda w, h, tail: png(w, h) + tail, SIDES, SIDES, st.binary(max_size=40)),
)
JPEG_BYTES = st.builds(jpeg, SIDES, SIDES, st.lists(SEGMENT, max_size=4), SOF)
IMAGE_BYTES = st.one_of(PNG_BYTES, JPEG_BYTES)
WHITESPACE = st.sampled_from(["\n", "\r\n", " ", "\t", "\u2028", "\x1c", "\u3000"])


def _b64(data: bytes, wrap: int, sep: str) -> str:
    text = base64.b64encode(data).decode()
    if wrap:
        text = sep.join(text[i : i + wrap] for i in range(0, len(text), wrap))
    return text


ANY_BYTES = st.one_of(GOOD_BYTES, IMAGE_BYTES)
BASE64 = st.builds(_b64, ANY_BYTES, st.sampled_from([0, 0, 64, 76]), WHITESPACE)
DATA_URI = st.builds(
    lambda prefix, body: prefix + body,
    st.sampled_from(
        [
            "data:image/png;base64,",
            "data:image/jpeg;base64,",
            "DATA:IMAGE/JPG;BASE64,",
            "data:image/gif;base64,",
            "data:text/plain;base64,",
            "data:image/png,",
        ]
    ),
    BASE64,
)
URL = st.builds(
    lambda scheme, sep, host, path: f"{scheme}{sep}{host}{path}",
    st.sampled_from(["http", "https", "HTTP", "hTtPs", "ftp", "file", "javascript", "data"]),
    st.sampled_from(["://", "://", ":", ":///"]),
    st.one_of(
        st.sampled_from(
            ["example.com", "127.0.0.1", "[::1]", "[::1", "h:0", "h:99999", "h:80", "u:p@h", ""]
        ),
        st.text(max_size=12),
    ),
    st.one_of(st.just("/dog.png"), st.text(max_size=16)),
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8)
)
ODD_TYPES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.lists(SCALARS, max_size=2),
    st.dictionaries(st.text(max_size=4), SCALARS, max_size=2),
)


def _file(data: bytes, name: str) -> str:
    assert IMAGE_DIR is not None
    path = IMAGE_DIR / f"{uuid.uuid4().hex}{name}"
    path.write_bytes(data)
    return str(path)


IMAGE_DIR: Path | None = None
FILE_PATH = st.builds(_file, ANY_BYTES, st.sampled_from([".png", ".jpg", "", ".txt"]))
VALID_IMAGE = st.one_of(
    GOOD_BYTES,
    GOOD_BYTES.map(bytearray),
    st.builds(_b64, GOOD_BYTES, st.sampled_from([0, 64, 76]), WHITESPACE),
    st.builds(lambda b: "data:image/png;base64," + base64.b64encode(b).decode(), GOOD_BYTES),
    st.builds(_file, GOOD_BYTES, st.sampled_from([".png", ".jpg", ""])),
    st.sampled_from(["https://example.com/dog.png", "http://例え.jp/犬.png", "HTTPS://h:8080/x"]),
)
ANY_IMAGE = st.one_of(
    VALID_IMAGE,
    IMAGE_BYTES,
    BASE64,
    DATA_URI,
    FILE_PATH,
    URL,
    st.binary(max_size=64),
    st.binary(min_size=160, max_size=400).map(lambda b: base64.b64encode(b).decode()),
    st.text(max_size=40),
    ODD_TYPES,
    st.just(str(Path(__file__).parent)),  # a directory
    st.just("/nonexistent/dog.png"),
)


def _text(min_len: int, max_len: int) -> st.SearchStrategy[str]:
    # Long texts as a repeated character: fast to draw, exact length control around 2500.
    return st.builds(
        lambda ch, n: ch * n,
        st.characters(exclude_categories=()),  # surrogates included
        st.integers(min_len, max_len),
    )


PROMPT = st.one_of(
    st.text(st.characters(exclude_categories=()), min_size=1, max_size=40),
    _text(2490, 2510),
    st.sampled_from(["", " ", "\n\t", "\u3000", "a", "🎬" * 2500, "🎬" * 2501]),
    ODD_TYPES,
)
MODE = st.one_of(st.sampled_from(["std", "pro", "STD", "fast", "", " std"]), ODD_TYPES)
DURATION = st.one_of(
    st.sampled_from(["5", "10", 5, 10, "05", "5.0", 5.0, 10.0, "", 7, "15", True]), ODD_TYPES
)
ASPECT = st.one_of(st.sampled_from(["16:9", "9:16", "1:1", "4:3", "16:9 ", "", "16/9"]), ODD_TYPES)
MODEL = st.one_of(st.sampled_from(["kling-v1-6", "kling-v1", "KLING-V1-6", ""]), ODD_TYPES)
BOOLISH = st.one_of(
    st.booleans(), st.sampled_from([0, 1, 2, "true", "false", "yes", "maybe", "", None])
)
WATERMARK_INFO: st.SearchStrategy[Any] = st.one_of(
    st.fixed_dictionaries({"enabled": BOOLISH}),
    st.sampled_from([{}, {"foo": True}, None, True, "x", []]),
)
CALLBACK = st.one_of(
    URL, st.sampled_from(["", "http://127.0.0.1:9/cb", "https://example.com/cb"]), ODD_TYPES
)
EXTERNAL_ID = st.one_of(
    st.text(st.characters(exclude_categories=()), min_size=1, max_size=24),
    st.sampled_from(
        [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a?b",
            "a#b",
            "%41",
            "a%2Fb",
            "x" * 256,
            "x" * 257,
            " ",
            "\udc80",
        ]
    ),
    ODD_TYPES,
)
EXTRA_NAME = st.one_of(
    st.sampled_from(
        ["self", "cls", "data", "image", "imageList", "Prompt", "images ", "__class__", "task_id"]
    ),
    st.text(min_size=1, max_size=10),
)


def _images(valid: bool) -> st.SearchStrategy[Any]:
    item = VALID_IMAGE if valid else ANY_IMAGE
    lo, hi = (1, 4) if valid else (0, 6)
    return st.one_of(st.lists(item, min_size=lo, max_size=hi), st.tuples(item, item))


VALID_JOB = st.fixed_dictionaries(
    {"images": _images(True), "prompt": st.sampled_from(["a dog", "x" * 2500, "视频 🎬"])},
    optional={
        "negative_prompt": st.sampled_from(["", "blurry", "y" * 2500]),
        "model_name": st.just("kling-v1-6"),
        "mode": st.sampled_from(["std", "pro"]),
        "duration": st.sampled_from(["5", "10", 5, 10]),
        "aspect_ratio": st.sampled_from(["16:9", "9:16", "1:1"]),
        "watermark": st.booleans(),
        "callback_url": st.sampled_from(["", "https://example.com/cb"]),
        "external_task_id": st.text(min_size=1, max_size=16),
    },
)
WIRE_JOB = st.fixed_dictionaries(
    {
        "image_list": st.lists(
            st.one_of(
                VALID_IMAGE.map(lambda v: {"image": v}), ANY_IMAGE.map(lambda v: {"image": v})
            ),
            min_size=1,
            max_size=5,
        ),
        "prompt": PROMPT,
    },
    optional={"watermark_info": WATERMARK_INFO, "duration": DURATION},
)
WILD_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "images": st.one_of(_images(False), ODD_TYPES, st.binary(max_size=8)),
    "image_list": st.one_of(st.lists(st.one_of(ANY_IMAGE, ODD_TYPES), max_size=5), ODD_TYPES),
    "prompt": PROMPT,
    "negative_prompt": PROMPT,
    "model_name": MODEL,
    "mode": MODE,
    "duration": DURATION,
    "aspect_ratio": ASPECT,
    "watermark": BOOLISH,
    "watermark_info": WATERMARK_INFO,
    "callback_url": CALLBACK,
    "external_task_id": EXTERNAL_ID,
}
WILD_JOB = st.fixed_dictionaries({}, optional=WILD_FIELDS)


@st.composite
def jobs(draw: st.DrawFn) -> dict[str, Any]:
    """Valid jobs, valid jobs with one field changed, and anything at all; plus unknown keys."""
    kind = draw(st.sampled_from(["valid", "valid", "mutated", "wire", "wild"]))
    if kind == "wild":
        job = draw(WILD_JOB)
    elif kind == "wire":
        job = draw(WIRE_JOB)
    else:
        job = draw(VALID_JOB)
    if kind == "mutated":
        name = draw(st.sampled_from(sorted(WILD_FIELDS)))
        job[name] = draw(WILD_FIELDS[name])
    if draw(st.integers(0, 9)) == 0:
        job[draw(EXTRA_NAME)] = draw(SCALARS)
    if draw(st.integers(0, 9)) == 0 and job:
        del job[draw(st.sampled_from(sorted(job)))]
    return job


# -- the simulator, once per module, on its own loop ------------------------------------------


class LoopThread:
    """An event loop in a daemon thread running the simulator and one client session."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sim: Simulator
        self.session: aiohttp.ClientSession
        self.client: Client
        self.used_ids: dict[str, str] = {}  # external_task_id → task_id

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def start(self) -> None:
        self.sim = await Simulator(concurrency=10**9, gen_seconds=3600, callbacks=False).start()
        self.session = aiohttp.ClientSession()
        self.client = Client(api_key=self.sim.api_key, base_url=self.sim.url)

    async def stop(self) -> None:
        await self.client.aclose()
        await self.session.close()
        await self.sim.stop()

    def close(self) -> None:
        self.run(self.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.sim.api_key}"}

    async def post(self, request: MultiImageToVideoRequest) -> dict[str, Any]:
        """POST the request's wire body; then look the task up by its external_task_id."""
        body = await request.to_wire()
        ext = body.get("external_task_id")
        if ext is not None and ext in self.used_ids:
            body["external_task_id"] = uuid.uuid4().hex  # accepted once already: send the rest
        url = self.sim.url + CREATE_PATH
        data = io.BytesIO(json.dumps(body).encode())  # raw bytes > 1 MiB make aiohttp warn
        headers = {**self.headers, "Content-Type": "application/json"}
        async with self.session.post(url, data=data, headers=headers) as resp:
            answer: dict[str, Any] = await resp.json(content_type=None)
        if answer.get("code") != 0 or ext is None:
            return answer
        self.used_ids.setdefault(ext, answer["data"]["task_id"])
        answer["expected_task_id"] = self.used_ids[ext]
        if "{" in ext or "}" in ext:
            return answer  # aiohttp's default {id} route cannot match braces (a simulator limit)
        async with self.session.get(self.sim.url + task_path(ext), headers=self.headers) as resp:
            answer["lookup"] = await resp.json(content_type=None)
        return answer


@pytest.fixture(scope="module")
def server() -> Iterator[LoopThread]:
    """The simulator in a background thread (high cap, no callbacks)."""
    global IMAGE_DIR
    runner = LoopThread()
    with tempfile.TemporaryDirectory() as tmp:
        IMAGE_DIR = Path(tmp)
        try:
            runner.run(runner.start())
            yield runner
        finally:
            runner.close()
            IMAGE_DIR = None


@pytest.fixture(scope="module")
def image_dir(server: LoopThread) -> Path:
    """Where file-path images are written (set up with the server)."""
    assert IMAGE_DIR is not None
    return IMAGE_DIR


# -- the properties ---------------------------------------------------------------------------


def _build(job: dict[str, Any]) -> MultiImageToVideoRequest | InvalidRequestError:
    try:
        return MultiImageToVideoRequest(**job)
    except InvalidRequestError as exc:
        return exc


def _root(field: str) -> str:
    for i, ch in enumerate(field):
        if ch in ".[":
            return field[:i]
    return field


def _blamed_key(job: dict[str, Any], root: str) -> str | None:
    """The job key the error's field stands for (wire names map to ours), or None if missing."""
    if root in job:
        return root
    alias = {"images": "image_list", "watermark": "watermark_info"}.get(root)
    if alias in job:
        return alias
    return None


def _check_blame(job: dict[str, Any], exc: InvalidRequestError) -> None:
    field = exc.field
    assert isinstance(field, str) and field, exc
    root = field if field in job else _root(field)  # an unknown key may hold "." or "["
    key = _blamed_key(job, root)
    if key is None:  # a required field that is missing
        assert root in ("images", "prompt"), (field, exc)
        return
    # That field alone must break a valid job, and be named for it.
    base: dict[str, Any] = {"images": [png(320, 320)], "prompt": "a dog"}
    if key == "image_list":
        del base["images"]
    base[key] = job[key]
    for pair in (("images", "image_list"), ("watermark", "watermark_info")):
        if key in pair and all(k in job for k in pair):  # both given: the wire name is extra
            base.update({k: job[k] for k in pair})
    alone = _build(base)
    assert isinstance(alone, InvalidRequestError), (field, key, exc)
    assert alone.field == key or _root(alone.field) in (root, key), (field, alone.field)


@SETTINGS
@given(job=jobs())
def _construction_raises_only_invalid_request_error(job: dict[str, Any], image_dir: Path) -> None:
    result = _build(job)  # any other exception fails the test
    if isinstance(result, InvalidRequestError):
        STATS["rejected"] += 1
        event(f"rejected: {_root(result.field)}")
        _check_blame(job, result)
    else:
        STATS["built"] += 1
        event("built")
        assert 1 <= len(result.images) <= 4


@SETTINGS
@given(job=jobs())
def _every_constructed_request_is_accepted(
    job: dict[str, Any], server: LoopThread, image_dir: Path
) -> None:
    result = _build(job)
    if isinstance(result, InvalidRequestError):
        event("invalid")
        return
    answer = server.run(server.post(result))
    assert answer.get("code") == 0, (answer, result)
    STATS["posted"] += 1
    event("accepted")
    lookup = answer.get("lookup")
    if lookup is not None:
        STATS["looked_up"] += 1
        assert lookup["code"] == 0, lookup
        assert lookup["data"]["task_id"] == answer["expected_task_id"]


@pytest.mark.parametrize(("extra", "ok"), [(0, True), (1, False)])
def test_ten_megabyte_boundary(server: LoopThread, extra: int, ok: bool) -> None:
    image = png(320, 320)
    data = image + bytes(MAX_IMAGE_BYTES - len(image) + extra)
    result = _build({"images": [data], "prompt": "big"})
    if not ok:
        assert isinstance(result, InvalidRequestError)
        assert result.field == "images[0]"
        return
    assert isinstance(result, MultiImageToVideoRequest)
    assert server.run(server.post(result))["code"] == 0
    # The client itself sends it (as a stream: no aiohttp ResourceWarning, an error here).
    task = server.run(server.client.submit(result))
    assert isinstance(task, Task) and task.task_status == "submitted"


def test_watermark_takes_json_booleans_only() -> None:
    # "false" is truthy and "yes" is no JSON boolean: a paid option is never guessed from them.
    for value in ("false", "yes", "true", 1, 0, None):
        bad = _build(
            {"images": [png(320, 320)], "prompt": "p", "watermark_info": {"enabled": value}}
        )
        assert isinstance(bad, InvalidRequestError) and bad.field == "watermark_info.enabled"
        bad = _build({"images": [png(320, 320)], "prompt": "p", "watermark": value})
        assert isinstance(bad, InvalidRequestError) and bad.field == "watermark"
        assert repr(value) in str(bad) and "true or false" in str(bad)


def test_a_field_named_self_is_an_unknown_field() -> None:
    bad = _build({"images": [png(320, 320)], "prompt": "p", "self": 1})
    assert isinstance(bad, InvalidRequestError) and bad.field == "self"


# Each property checks that its examples reached the code under test (a generator that
# drifted into rejecting everything would pass vacuously), within the same test, so the
# check holds on any xdist worker and in any order.
def test_construction_raises_only_invalid_request_error(image_dir: Path) -> None:
    before = dict(STATS)
    _construction_raises_only_invalid_request_error(image_dir=image_dir)
    assert STATS["rejected"] - before["rejected"] >= EXAMPLES // 5, STATS
    assert STATS["built"] - before["built"] >= EXAMPLES // 5, STATS


def test_every_constructed_request_is_accepted(server: LoopThread, image_dir: Path) -> None:
    before = dict(STATS)
    _every_constructed_request_is_accepted(server=server, image_dir=image_dir)
    print(json.dumps(STATS))
    assert STATS["posted"] - before["posted"] >= EXAMPLES // 5, STATS
