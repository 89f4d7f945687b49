"""Reading an image's format and pixel size from its header (JPEG or PNG), without Pillow."""

from __future__ import annotations

import struct
import zlib
from typing import Literal, TypeAlias

__all__ = ["HEAD_BYTES", "ImageFormat", "Truncated", "probe_image", "sniff"]

ImageFormat: TypeAlias = Literal["jpeg", "png"]
HEAD_BYTES = 64 * 1024  # holds IHDR and, in nearly every JPEG, all segments before the frame
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
# SOF0–SOF15 carry the frame size; DHT (C4), JPG (C8) and DAC (CC) sit in that range but do not.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_MAGIC = ((_PNG_SIG, "PNG"), (b"\xff\xd8", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"))


class Truncated(ValueError):
    """The data ends inside the header: more bytes may complete it."""


def sniff(data: bytes) -> str:
    """What the data looks like, for messages: "PNG", "GIF", "WEBP", "empty data"…"""
    if data[:4] == b"RIFF" or data[4:8] == b"ftyp":  # both name their type at 8: WEBP, HEIC, AVIF…
        return data[8:12].decode("ascii", "replace").strip().upper() or "unknown format"
    found = (name for magic, name in _MAGIC if data.startswith(magic))
    return next(found, "unknown format" if data else "empty data")


def probe_image(data: bytes) -> tuple[ImageFormat, int, int]:
    """(format, width, height) from the header; ValueError with the reason if not sound JPEG/PNG."""
    if data.startswith(b"\xff\xd8"):
        return _probe_jpeg(data)
    if not data.startswith(_PNG_SIG):
        raise ValueError(f"format must be JPEG or PNG, got {sniff(data)}")
    if len(data) < 33:
        raise Truncated("truncated PNG header (IHDR incomplete)")
    length, tag, width, height = struct.unpack_from(">I4sII", data, 8)
    if length != 13 or tag != b"IHDR":
        raise ValueError("corrupt PNG header: first chunk is not IHDR")
    if zlib.crc32(data[12:29]) != struct.unpack_from(">I", data, 29)[0]:
        raise ValueError("corrupt PNG header: IHDR checksum mismatch")
    if not (0 < width < 2**31 and 0 < height < 2**31):
        raise ValueError(f"corrupt PNG header: impossible size {width}x{height}")
    return "png", width, height


def _probe_jpeg(data: bytes) -> tuple[ImageFormat, int, int]:
    pos, end = 2, len(data)
    while True:  # walk marker segments until a frame header (SOFn) gives the size
        if pos < end and data[pos] != 0xFF:
            raise ValueError(f"corrupt JPEG header: expected a marker at byte {pos}")
        while pos < end and data[pos] == 0xFF:  # 0xFF fill bytes may pad before any marker
            pos += 1
        if pos + 8 > end:  # too short for a frame header, which must still come
            raise Truncated("truncated JPEG header (ends before the frame header)")
        marker = data[pos]
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM / RSTn have no length field
            pos += 1
            continue
        if marker in (0x00, 0xD8, 0xD9, 0xDA):
            raise ValueError(f"corrupt JPEG header: marker FF{marker:02X} before the frame header")
        (length,) = struct.unpack_from(">H", data, pos + 1)
        if length < (8 if marker in _SOF else 2):
            raise ValueError(f"corrupt JPEG header: bad length {length} of segment FF{marker:02X}")
        if marker in _SOF:
            height, width = struct.unpack_from(">HH", data, pos + 4)
            if not width or not height:  # height 0 means "defined later by DNL": unsupported
                raise ValueError(f"corrupt JPEG header: frame size {width}x{height}")
            return "jpeg", width, height
        pos += 1 + length
