"""Image sniffing without Pillow: format and dimensions from PNG IHDR / JPEG SOFn headers."""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = ["ImageInfo", "sniff_image"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# SOF markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length field.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


class ImageInfo(NamedTuple):
    """Format ("png" or "jpeg") and size in pixels of an image."""

    format: str
    width: int
    height: int


def _png(data: bytes) -> ImageInfo:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ValueError("PNG without an IHDR chunk")
    width, height = struct.unpack(">II", data[16:24])
    return ImageInfo("png", width, height)


def _jpeg(data: bytes) -> ImageInfo:
    pos = 2
    size = len(data)
    while pos < size:
        if data[pos] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {pos}")
        while pos < size and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= size:
            break
        marker = data[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            break
        if pos + 2 > size:
            break
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2:
            raise ValueError("JPEG segment with an invalid length")
        if marker in _SOF_MARKERS:
            if pos + 7 > size:
                break
            height, width = struct.unpack(">HH", data[pos + 3 : pos + 7])
            return ImageInfo("jpeg", width, height)
        pos += length
    raise ValueError("JPEG without a frame header (SOFn)")


def sniff_image(data: bytes) -> ImageInfo:
    """Return format and size of PNG or JPEG bytes; raise ValueError for anything else."""
    if data.startswith(_PNG_SIGNATURE):
        return _png(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    raise ValueError("not a JPEG or PNG image")
