"""Tests for kling_async._images: early validation, lazy encoding, and the encoding cache."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kling_async import _images
from kling_async._errors import InvalidRequestError
from kling_async._imagefile import CheckedFile
from kling_async._images import (
    MAX_ASPECT,
    MAX_IMAGE_BYTES,
    MIN_ASPECT,
    MIN_SIDE,
    EncodingCache,
    ImageInfo,
    ImageInput,
    probe_image,
)

# --------------------------------------------------------------------------- image builders

PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png(width: int, height: int, *, pad: int = 0) -> bytes:
    """A PNG whose IHDR says width x height (the pixel data is not needed by the checks)."""
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return PNG_SIG + ihdr + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b"") + bytes(pad)


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def sof(width: int, height: int, marker: int = 0xC0) -> bytes:
    """A frame header (SOFn) segment with three components."""
    return _segment(marker, struct.pack(">BHHB", 8, height, width, 3) + bytes(9))


APP0 = _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
DQT = _segment(0xDB, bytes(65))
# A DHT segment whose bytes look like a frame header at the offset a naive scan would read.
DHT_DECOY = _segment(0xC4, struct.pack(">BHHB", 8, 10, 10, 3) + bytes(20))


def jpeg(width: int, height: int, *, marker: int = 0xC0, before: bytes = b"") -> bytes:
    """A minimal JPEG: SOI, APP0, DQT, <before>, SOFn, EOI."""
    return b"\xff\xd8" + APP0 + DQT + before + sof(width, height, marker) + b"\xff\xd9"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def bump_mtime(path: Path) -> None:
    """Make a change visible even on filesystems with coarse mtimes."""
    st_ = path.stat()
    os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns + 1_000_000_000))


GOOD_PNG = png(800, 600)
GOOD_JPEG = jpeg(640, 480)


# --------------------------------------------------------------------------- probe_image


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (png(800, 600), ("png", 800, 600)),
        (png(1, 70000), ("png", 1, 70000)),
        (jpeg(640, 480), ("jpeg", 640, 480)),
        (jpeg(640, 480, marker=0xC1), ("jpeg", 640, 480)),
        (jpeg(640, 480, marker=0xC2), ("jpeg", 640, 480)),  # progressive
        (jpeg(640, 480, marker=0xCF), ("jpeg", 640, 480)),  # SOF15
        (jpeg(640, 480, before=DHT_DECOY), ("jpeg", 640, 480)),  # C4 is not a frame header
        (jpeg(640, 480, before=_segment(0xC8, bytes(12))), ("jpeg", 640, 480)),  # JPG
        (jpeg(640, 480, before=_segment(0xCC, bytes(12))), ("jpeg", 640, 480)),  # DAC
        (jpeg(640, 480, before=b"\xff\xff\xff"), ("jpeg", 640, 480)),  # fill bytes
        (jpeg(640, 480, before=b"\xff\xd0\xff\x01"), ("jpeg", 640, 480)),  # RST0, TEM
        (b"\xff\xd8" + sof(300, 300), ("jpeg", 300, 300)),  # SOF right after SOI
    ],
)
def test_probe_image_reads_dimensions(data: bytes, expected: tuple[str, int, int]) -> None:
    assert probe_image(data) == expected


def _corrupt_crc(data: bytes) -> bytes:
    return data[:29] + bytes([data[29] ^ 0xFF]) + data[30:]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "got empty data"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "got WEBP"),
        (b"GIF89a" + bytes(20), "got GIF"),
        (b"BM" + bytes(40), "got BMP"),
        (b"\x00\x00\x00\x18ftypheic" + bytes(8), "got HEIC"),
        (b"hello world", "got unknown format"),
        (png(800, 600)[:20], "truncated PNG header"),
        (_corrupt_crc(png(800, 600)), "checksum mismatch"),
        (PNG_SIG + _chunk(b"IDAT", bytes(13)), "first chunk is not IHDR"),
        (png(0, 600), "impossible size 0x600"),
        (b"\xff\xd8", "truncated JPEG header"),
        (jpeg(640, 480)[:40], "truncated JPEG header"),  # cut inside DQT
        (jpeg(640, 480)[: 2 + len(APP0) + len(DQT) + 6], "truncated JPEG header"),  # inside SOF
        (b"\xff\xd8\xff\xda" + bytes(20), "marker FFDA before the frame header"),  # SOS first
        (b"\xff\xd8\xff\xd9" + bytes(20), "marker FFD9 before the frame header"),  # EOI first
        (b"\xff\xd8\x00\x11" + bytes(20), "expected a marker at byte 2"),
        (b"\xff\xd8\xff\xe0\x00\x01" + bytes(20), "bad length 1"),
        (b"\xff\xd8\xff\xc0\x00\x05" + bytes(20), "bad length 5 of segment FFC0"),
        (b"\xff\xd8" + sof(640, 0), "frame size 640x0"),
    ],
)
def test_probe_image_rejects_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("(", r"\(")):
        probe_image(data)


def test_constants() -> None:
    assert MAX_IMAGE_BYTES == 10 * 1024 * 1024
    assert MIN_SIDE == 300
    assert (MIN_ASPECT, MAX_ASPECT) == (1 / 2.5, 2.5)


# --------------------------------------------------------------------------- the rules


def _parse_error(value: Any, **kw: Any) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        ImageInput.parse(value, **kw)
    return info.value


@pytest.mark.parametrize(
    ("w", "h", "fmt"),
    [(300, 300, "png"), (300, 750, "png"), (750, 300, "jpeg"), (4000, 1600, "jpeg")],
)
def test_dimensions_on_the_limits_pass(w: int, h: int, fmt: str) -> None:
    data = png(w, h) if fmt == "png" else jpeg(w, h)
    image = ImageInput.parse(data)
    assert image.info == ImageInfo(fmt, w, h, len(data))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "limit", "value", "message"),
    [
        (png(299, 600), "≥ 300 px", (299, 600), "image is 299x600 px, both sides must be ≥ 300 px"),
        (jpeg(600, 299), "≥ 300 px", (600, 299), "image is 600x299 px"),
        (png(900, 300), "aspect 1:2.5–2.5:1", 3.0, "aspect ratio 3.00 (900x300) is outside"),
        (png(751, 300), "aspect 1:2.5–2.5:1", 751 / 300, "aspect ratio 2.50 (751x300)"),
        (jpeg(300, 751), "aspect 1:2.5–2.5:1", 300 / 751, "aspect ratio 0.40 (300x751)"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(100), "JPEG or PNG", "WEBP", "got WEBP"),
        (b"GIF89a" + bytes(100), "JPEG or PNG", "GIF", "format must be JPEG or PNG, got GIF"),
        (jpeg(640, 480)[:40], "JPEG or PNG", "JPEG", "truncated JPEG header"),
        (_corrupt_crc(png(800, 600)), "JPEG or PNG", "PNG", "corrupt PNG header"),
    ],
)
def test_rule_violations_name_rule_and_value(
    data: bytes, limit: str, value: object, message: str
) -> None:
    err = _parse_error(data, index=2)
    assert err.field == "images[2]"
    assert err.limit == limit
    assert err.value == value
    assert str(err).startswith(f"images[2] (<{len(data)} bytes>): ")
    assert message in str(err)


def test_format_is_judged_by_content_not_extension(tmp_path: Path) -> None:
    disguised = write(tmp_path, "cat.png", b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(100))
    err = _parse_error(str(disguised), index=1)
    assert str(err) == f"images[1] ({str(disguised)!r}): format must be JPEG or PNG, got WEBP"
    real = write(tmp_path, "photo.webp", GOOD_JPEG)
    assert ImageInput.parse(real).info == ImageInfo("jpeg", 640, 480, len(GOOD_JPEG))


def test_file_size_limit(tmp_path: Path) -> None:
    exact = write(tmp_path, "exact.png", png(800, 600, pad=MAX_IMAGE_BYTES - len(png(800, 600))))
    assert ImageInput.parse(exact).info == ImageInfo("png", 800, 600, MAX_IMAGE_BYTES)
    over = write(tmp_path, "over.png", png(800, 600, pad=MAX_IMAGE_BYTES - len(png(800, 600)) + 1))
    err = _parse_error(over)
    assert (err.limit, err.value) == ("≤ 10 MB", MAX_IMAGE_BYTES + 1)
    assert "file is 10.1 MB, limit is 10 MB" in str(err)  # rounded up: never "10.0 MB"
    big = write(tmp_path, "big.png", png(800, 600, pad=13_000_000 - len(png(800, 600))))
    assert str(_parse_error(big.name, base_dir=tmp_path)) == (
        "images[0] ('big.png'): file is 12.4 MB, limit is 10 MB"
    )


def test_bytes_and_base64_size_limits_use_decoded_size() -> None:
    data = png(800, 600, pad=MAX_IMAGE_BYTES)
    err = _parse_error(data)
    assert (err.value, err.limit) == (len(data), "≤ 10 MB")
    assert "image is 10.1 MB" in str(err)
    err = _parse_error(b64(data))
    assert err.value == len(data)  # decoded bytes, not base64 characters
    assert "decoded image is 10.1 MB" in str(err)
    ok = png(800, 600, pad=MAX_IMAGE_BYTES - len(png(800, 600)))
    assert ImageInput.parse(b64(ok)).info == ImageInfo("png", 800, 600, MAX_IMAGE_BYTES)


@pytest.mark.parametrize("tail", [b"", b"x", b"xy", b"xyz"])  # every padding length
def test_base64_decoded_size_is_exact(tail: bytes) -> None:
    data = GOOD_PNG + bytes(200) + tail  # raw base64 must be > 200 chars to be recognised
    assert ImageInput.parse(b64(data)).info == ImageInfo("png", 800, 600, len(data))


def test_header_beyond_64_kib_is_still_found(tmp_path: Path) -> None:
    # Two 65 KB APP segments (EXIF, ICC…) push the frame header past the first 64 KiB.
    data = jpeg(1024, 768, before=_segment(0xE1, bytes(65000)) + _segment(0xE2, bytes(65000)))
    info = ImageInfo("jpeg", 1024, 768, len(data))
    assert ImageInput.parse(write(tmp_path, "exif.jpg", data)).info == info
    assert ImageInput.parse(data).info == info
    assert ImageInput.parse(b64(data)).info == info
    assert "truncated JPEG" in str(_parse_error(write(tmp_path, "cut.jpg", data[:100_000])))


# --------------------------------------------------------------------------- input kinds


def test_kinds(tmp_path: Path) -> None:
    path = write(tmp_path, "a.png", GOOD_PNG)
    assert ImageInput.parse(str(path)).kind == "path"
    assert ImageInput.parse(path).kind == "path"
    assert ImageInput.parse(GOOD_PNG).kind == "bytes"
    assert ImageInput.parse(bytearray(GOOD_PNG)).kind == "bytes"
    assert ImageInput.parse(b64(GOOD_PNG + bytes(200))).kind == "base64"
    assert ImageInput.parse("https://cdn.example.com/dog.png").kind == "url"
    image = ImageInput.parse(GOOD_PNG)
    assert ImageInput.parse(image) is image


def test_relative_paths_resolve_against_base_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "imgs").mkdir()
    write(tmp_path / "imgs", "cat.png", GOOD_PNG)
    image = ImageInput.parse("imgs/cat.png", base_dir=tmp_path)
    assert (image.kind, image.describe()) == ("path", "imgs/cat.png")
    assert ImageInput.parse(Path("cat.png"), base_dir=tmp_path / "imgs").kind == "path"
    absolute = str(tmp_path / "imgs" / "cat.png")
    assert ImageInput.parse(absolute, base_dir=Path("/nonexistent")).kind == "path"
    monkeypatch.chdir(tmp_path / "imgs")
    assert ImageInput.parse("cat.png").kind == "path"  # no base_dir: the working directory


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/a.png",
        "https://p1-kling.klingai.com/kcdn/cdn-kcdn112452/kling-qa-test/dog.png",
        "HTTPS://Example.com:8443/x.jpg?sig=abc#frag",
        "https://[2001:db8::1]/a.png",
    ],
)
async def test_urls_pass_through(url: str) -> None:
    image = ImageInput.parse(f"  {url}\n")
    assert (image.kind, image.info) == ("url", None)
    assert await image.wire_value() == url


@pytest.mark.parametrize(
    "url",
    ["http://", "https:///path.png", "http://host:99999/a.png", "http://[::1/a.png", "http://a b/"],
)
def test_malformed_urls(url: str) -> None:
    err = _parse_error(url, index=3)
    assert (err.field, err.limit, err.value) == ("images[3]", "http(s) URL", url)
    assert "malformed http(s) URL" in str(err)


@pytest.mark.parametrize(
    ("value", "scheme"),
    [("ftp://example.com/a.png", "ftp"), ("file:///tmp/a.png", "file"), ("s3://b/k.png", "s3")],
)
def test_other_url_schemes_are_refused(value: str, scheme: str) -> None:
    err = _parse_error(value)
    assert (err.limit, err.value) == ("http(s) URL", scheme)
    assert f"URL scheme {scheme!r} is not supported" in str(err)


@pytest.mark.parametrize(
    "prefix", ["data:image/png;base64,", "data:image/jpeg;base64,", "DATA:IMAGE/JPG;BASE64,"]
)
async def test_data_uri_prefix_is_stripped(prefix: str) -> None:
    image = ImageInput.parse(prefix + b64(GOOD_JPEG))  # short payloads are fine in a data: URI
    assert image.kind == "base64"
    assert image.info == ImageInfo("jpeg", 640, 480, len(GOOD_JPEG))
    assert await image.wire_value() == b64(GOOD_JPEG)


@pytest.mark.parametrize(
    "value", ["data:image/webp;base64,AAAA", "data:text/plain,hello", "data:image/png,AAAA"]
)
def test_bad_data_uris(value: str) -> None:
    err = _parse_error(value)
    assert err.limit == "data URI"
    assert "not a data:image/png|jpeg;base64 URI" in str(err)


async def test_wrapped_base64_is_accepted_and_sent_without_whitespace() -> None:
    raw = b64(GOOD_PNG + bytes(300))
    wrapped = "\n".join(raw[i : i + 76] for i in range(0, len(raw), 76)) + "\n"
    image = ImageInput.parse(wrapped)
    assert image.kind == "base64"
    assert await image.wire_value() == raw


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b64(GOOD_PNG)[:-1], "bad padding or length"),
        ("AAAA=AAA" + b64(GOOD_PNG), "bad padding or length"),
        (b64(GOOD_PNG)[:40] + "*" + b64(GOOD_PNG)[41:], "character '*' at 40"),
        (b64(GOOD_PNG)[:40] + "-" + b64(GOOD_PNG)[41:], "character '-' at 40"),  # URL-safe
    ],
)
def test_invalid_base64(payload: str, why: str) -> None:
    err = _parse_error("data:image/png;base64," + payload)
    assert err.limit == "base64 (RFC 4648)"
    assert f"invalid base64: {why}" in str(err)


def test_long_base64_like_string_with_bad_padding_is_reported_as_base64() -> None:
    err = _parse_error(b64(GOOD_PNG + bytes(300))[:-1])
    assert "invalid base64" in str(err)
    assert err.field == "images[0]"


@pytest.mark.parametrize("value", ["missing.png", "", "   ", "short-non-path-text", "ab-" * 5000])
def test_missing_file(value: str, tmp_path: Path) -> None:
    err = _parse_error(value, base_dir=tmp_path, index=1)
    assert (err.field, err.limit) == ("images[1]", "existing file")
    label = value if len(value) <= 80 else value[:77] + "..."  # long text is cut in messages
    assert str(err).startswith(f"images[1] ({label!r}): file not found")
    assert len(str(err)) < 200


def test_long_base64_alphabet_text_is_taken_as_base64() -> None:
    err = _parse_error("x" * 5000)
    assert str(err).startswith("images[0] (<base64, 5000 chars>): format must be JPEG or PNG")


def test_directory_fifo_and_unreadable_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    err = _parse_error(tmp_path)
    assert "is a directory, not an image file" in str(err)
    assert err.limit == "regular file"
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    assert "is not a regular file" in str(_parse_error(fifo))
    # Relative to the cwd: the message shortens long paths, and tmp_path's length varies.
    monkeypatch.chdir(tmp_path)
    path = Path(write(tmp_path, "locked.png", GOOD_PNG).name)

    def refuse(*_a: Any, **_k: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(_images, "open", refuse, raising=False)
    err = _parse_error(path)
    assert f"images[0] ({str(path)!r}): cannot read file: Permission denied" == str(err)
    assert not isinstance(err, OSError)


def test_unsupported_type() -> None:
    err = _parse_error(12345)
    assert "unsupported type int" in str(err)


async def test_index_of_passed_through_image_is_updated(tmp_path: Path) -> None:
    path = write(tmp_path, "a.png", GOOD_PNG)
    image = ImageInput.parse(path, index=0)
    moved = ImageInput.parse(image, index=3)
    assert moved == image and moved is not image
    path.write_bytes(png(10, 10))
    bump_mtime(path)
    with pytest.raises(InvalidRequestError) as info:
        await moved.wire_value()
    assert info.value.field == "images[3]"


# --------------------------------------------------------------------------- repr / describe


def test_repr_and_describe_stay_short(tmp_path: Path) -> None:
    big = png(800, 600, pad=200_000)
    image = ImageInput.parse(b64(big))
    assert repr(image) == f"ImageInput(kind='base64', <base64, {len(b64(big))} chars>, png 800x600)"
    assert image.describe() == f"<base64, {len(b64(big))} chars>"
    image = ImageInput.parse(big)
    assert repr(image) == f"ImageInput(kind='bytes', <{len(big)} bytes>, png 800x600)"
    assert image.describe() == f"<{len(big)} bytes>"
    path = write(tmp_path, "cat.jpg", GOOD_JPEG)
    assert repr(ImageInput.parse(path)) == f"ImageInput(kind='path', {str(path)!r}, jpeg 640x480)"
    url = "https://example.com/" + "a" * 300 + ".png"
    image = ImageInput.parse(url)
    assert len(image.describe()) == 80 and image.describe().endswith("...")
    assert len(repr(image)) < 120
    assert len(str(_parse_error("ftp://example.com/" + "a" * 5000))) < 250


# --------------------------------------------------------------------------- lazy encoding


async def test_bytes_encode_to_base64() -> None:
    assert await ImageInput.parse(GOOD_PNG).wire_value() == b64(GOOD_PNG)


async def test_file_is_read_at_send_time_in_chunks_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = png(800, 600, pad=500_000)
    path = write(tmp_path, "a.png", data)
    reads: list[tuple[int, bool]] = []
    real_read = _images._read

    def spy(at: Any, p: Path, limit: int) -> Any:
        reads.append((limit, threading.current_thread() is threading.main_thread()))
        return real_read(at, p, limit)

    monkeypatch.setattr(_images, "_read", spy)
    threads: set[bool] = set()
    real_encode = _images._encode_next

    def spy_encode(chunks: Any) -> Any:
        threads.add(threading.current_thread() is threading.main_thread())
        return real_encode(chunks)

    monkeypatch.setattr(_images, "_encode_next", spy_encode)
    image = ImageInput.parse(path)
    assert reads == [(64 * 1024, True)]  # parse: only the header, synchronously
    chunks = [c async for c in image.chunks()]
    assert b"".join(chunks) == b64(data).encode()
    assert max(map(len, chunks)) == 256 * 1024 and len(chunks) == 3  # 196,608 bytes a read
    assert threads == {False}  # every read and encoding on a worker thread
    assert image.encoded_size == len(b64(data))


@pytest.mark.parametrize(
    ("new", "what"),
    [
        (png(100, 100), ""),  # same length: only the modification time tells
        (png(800, 600, pad=MAX_IMAGE_BYTES), "size 65 → 10,485,825 bytes"),
        (b"not an image any more", "size 65 → 21 bytes"),
    ],
)
@pytest.mark.parametrize("cached", [False, True])
async def test_change_after_parse_is_rejected(
    tmp_path: Path, new: bytes, what: str, cached: bool
) -> None:
    path = write(tmp_path, "a.png", GOOD_PNG)
    image = ImageInput.parse(path, index=2)
    path.write_bytes(new)
    bump_mtime(path)
    if len(new) == len(GOOD_PNG):
        what = "modified (same size, new modification time)"
    with pytest.raises(InvalidRequestError) as info:
        await image.wire_value(EncodingCache() if cached else None)
    assert info.value.field == "images[2]"
    assert (
        str(info.value) == f"images[2] ({str(path)!r}): file changed since it was checked: {what}"
    )


async def test_same_size_and_mtime_but_new_header_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "a.png", GOOD_PNG)
    image = ImageInput.parse(path)
    st_ = path.stat()
    path.write_bytes(png(900, 600))  # same length, other size in the header
    os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns))
    with pytest.raises(InvalidRequestError, match=r"header says png 900x600, was png 800x600"):
        await image.wire_value()


@pytest.mark.parametrize(("change", "what"), [("shrink", "shrank"), ("grow", "grew")])
async def test_change_while_streaming_stops_before_the_last_chunk(
    tmp_path: Path, change: str, what: str
) -> None:
    data = png(800, 600, pad=1_000_000)
    path = write(tmp_path, "a.png", data)
    image = ImageInput.parse(path)
    got: list[bytes] = []
    with pytest.raises(InvalidRequestError, match=f"it {what} while being sent"):
        async for chunk in image.chunks():
            if not got:  # after the first chunk went out, the file changes under us
                st_ = path.stat()
                new = data[:300_000] if change == "shrink" else data + b"more"
                path.write_bytes(new)
                os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns))
            got.append(chunk)
    assert sum(map(len, got)) < len(b64(data))  # the image never went out whole


@pytest.mark.parametrize("cached", [False, True])
async def test_file_removed_after_parse(tmp_path: Path, cached: bool) -> None:
    path = write(tmp_path, "a.png", GOOD_PNG)
    image = ImageInput.parse(path)
    path.unlink()
    with pytest.raises(InvalidRequestError, match="cannot read file: No such file"):
        await image.wire_value(EncodingCache() if cached else None)


async def test_bytes_and_base64_stream_from_memory() -> None:
    data = png(800, 600, pad=700_000)
    for image in (ImageInput.parse(data), ImageInput.parse(b64(data))):
        chunks = [c async for c in image.chunks()]
        assert len(chunks) == 4 and max(map(len, chunks)) == 256 * 1024
        assert b"".join(chunks) == b64(data).encode() == image.encode_now()
        assert image.encoded_size == len(b64(data))
    assert ImageInput.parse("https://example.com/a.png").encoded_size is None


# --------------------------------------------------------------------------- EncodingCache


async def test_cache_keeps_an_image_from_its_second_use(tmp_path: Path) -> None:
    cache = EncodingCache()
    a = ImageInput.parse(write(tmp_path, "a.png", GOOD_PNG))
    b = ImageInput.parse(write(tmp_path, "b.jpg", GOOD_JPEG))
    assert await a.wire_value(cache) == b64(GOOD_PNG)  # used once: not kept
    assert len(cache) == 0
    assert await a.wire_value(cache) == b64(GOOD_PNG)  # used again: kept
    assert await ImageInput.parse(tmp_path / "a.png").wire_value(cache) == b64(GOOD_PNG)
    assert await b.wire_value(cache) == b64(GOOD_JPEG)
    assert (cache.hits, cache.misses, len(cache)) == (1, 3, 1)
    assert cache.nbytes == len(b64(GOOD_PNG))
    (tmp_path / "a.png").write_bytes(png(900, 600))
    bump_mtime(tmp_path / "a.png")
    again = ImageInput.parse(tmp_path / "a.png")  # checked anew: a new key, encoded again
    assert await again.wire_value(cache) == b64(png(900, 600))
    assert (cache.hits, cache.misses) == (1, 4)
    with pytest.raises(InvalidRequestError, match="changed since it was checked"):
        await a.wire_value(cache)  # the cached old content is not sent for a changed file


async def test_symlink_shares_the_cache_entry(tmp_path: Path) -> None:
    cache = EncodingCache()
    target = write(tmp_path, "a.png", GOOD_PNG)
    (tmp_path / "link.png").symlink_to(target)
    await ImageInput.parse(target).wire_value(cache)
    await ImageInput.parse(tmp_path / "link.png").wire_value(cache)  # the same file, again
    await ImageInput.parse(target).wire_value(cache)
    assert (cache.hits, cache.misses, len(cache)) == (1, 2, 1)


async def test_cache_evicts_least_recently_used_by_bytes(tmp_path: Path) -> None:
    images = {
        n: ImageInput.parse(write(tmp_path, f"{n}.png", png(800, 600, pad=3000))) for n in "abc"
    }
    size = len(b64(png(800, 600, pad=3000)))
    cache = EncodingCache(max_bytes=2 * size + 10)  # room for two
    for name in "aabba":
        await images[name].wire_value(cache)
    assert (cache.hits, cache.misses, len(cache)) == (1, 4, 2)
    for name in "cc":  # kept at its second use: evicts b, the least recently used
        await images[name].wire_value(cache)
    assert (len(cache), cache.nbytes) == (2, 2 * size)
    await images["a"].wire_value(cache)
    assert (cache.hits, cache.misses) == (2, 6)
    await images["b"].wire_value(cache)  # seen before: kept again at once, evicting c
    assert (cache.hits, cache.misses, len(cache)) == (2, 7, 2)
    await images["a"].wire_value(cache)
    assert cache.hits == 3 and cache.nbytes <= cache.max_bytes


async def test_only_small_files_go_through_the_cache(tmp_path: Path) -> None:
    cache = EncodingCache(max_bytes=100)
    image = ImageInput.parse(write(tmp_path, "a.png", GOOD_PNG + bytes(200)))
    for _ in range(2):
        assert await image.wire_value(cache) == b64(GOOD_PNG + bytes(200))
    assert (len(cache), cache.nbytes, cache.misses) == (0, 0, 2)  # larger than the whole cache
    big = ImageInput.parse(write(tmp_path, "big.png", png(800, 600, pad=2_000_000)))
    cache = EncodingCache()
    for _ in range(3):
        assert await big.wire_value(cache) == b64(png(800, 600, pad=2_000_000))
    assert (len(cache), cache.hits, cache.misses) == (0, 0, 0)  # > 1 MiB: streamed each time


def _count_encodings(
    monkeypatch: pytest.MonkeyPatch, gate: threading.Event | None = None
) -> list[int]:
    calls: list[int] = []
    real = CheckedFile.encode

    def spy(self: CheckedFile) -> bytes:
        calls.append(1)
        if gate is not None:
            gate.wait(5)
        return real(self)

    monkeypatch.setattr(CheckedFile, "encode", spy)
    return calls


async def test_single_flight_under_gather(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "a.png", png(800, 600, pad=100_000))
    images = [ImageInput.parse(path, index=i % 4) for i in range(50)]
    calls = _count_encodings(monkeypatch)
    cache = EncodingCache()
    results = await asyncio.gather(*(image.wire_value(cache) for image in images))
    assert set(results) == {b64(path.read_bytes())}
    assert len(calls) == 1  # one read + encoding for all fifty
    assert (cache.misses, cache.hits, len(cache)) == (1, 49, 1)  # shared: worth keeping


async def test_single_flight_failure_reaches_every_waiter_and_is_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = ImageInput.parse(write(tmp_path, "a.png", GOOD_PNG))
    failing = InvalidRequestError("images[0]: cannot read file", field="images[0]")

    def fail(self: CheckedFile) -> bytes:
        raise failing

    monkeypatch.setattr(CheckedFile, "encode", fail)
    cache = EncodingCache()
    results = await asyncio.gather(
        *(image.wire_value(cache) for _ in range(10)), return_exceptions=True
    )
    assert results == [failing] * 10
    assert (cache.misses, cache.hits, len(cache)) == (1, 9, 0)
    monkeypatch.undo()
    assert await image.wire_value(cache) == b64(GOOD_PNG)
    assert (cache.misses, len(cache)) == (2, 1)


async def test_cancelled_waiter_does_not_cancel_shared_encoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = ImageInput.parse(write(tmp_path, "a.png", GOOD_PNG))
    gate = threading.Event()
    calls = _count_encodings(monkeypatch, gate)
    cache = EncodingCache()
    first = asyncio.create_task(image.wire_value(cache))
    second = asyncio.create_task(image.wire_value(cache))
    await asyncio.sleep(0.01)
    first.cancel()
    gate.set()
    assert await second == b64(GOOD_PNG)
    with pytest.raises(asyncio.CancelledError):
        await first
    assert (cache.misses, len(cache), len(calls)) == (1, 1, 1)


# --------------------------------------------------------------------------- properties

_PREFIXES = [
    b"",
    PNG_SIG,
    PNG_SIG + b"\x00\x00\x00\x0dIHDR",
    b"\xff\xd8",
    b"\xff\xd8\xff",
    png(800, 600)[:33],
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_PREFIXES), st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_else(prefix: bytes, tail: bytes) -> None:
    data = prefix + tail
    with contextlib.suppress(ValueError):
        probe_image(data)
    for value in (data, b64(data), "data:image/png;base64," + b64(data)):
        with contextlib.suppress(InvalidRequestError):
            assert isinstance(ImageInput.parse(value), ImageInput)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises_anything_else(text: str) -> None:
    with contextlib.suppress(InvalidRequestError):
        ImageInput.parse(text)
