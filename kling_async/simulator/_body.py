"""Reading a create body as it arrives (Content-Length or chunked) in bounded memory.

The JSON is kept as received, except the value of an ``"image"`` key that runs past 64 KiB of
base64: that string is checked and decoded chunk by chunk (only the image header is kept) and a
placeholder string takes its place. `parse_create` then validates the reduced document exactly
as it would the whole one, asking the placeholder for the verdict on its image. Fifty 54 MB
bodies at once so cost the simulator kilobytes each, not gigabytes.
"""

from __future__ import annotations

import binascii
import codecs
import hashlib
import json
import re
import secrets

from ._images import ImageInfo, sniff_image
from ._protocol import SimError

__all__ = ["MAX_IMAGE_BYTES", "BodyReader", "StreamedImage"]

MAX_IMAGE_BYTES = 10 * 1024 * 1024
_SMALL = 64 * 1024  # image strings up to this stay in the document, checked as before
_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_IMAGE_KEY = re.compile(rb'"image"\s*:\s*\Z')  # the string starting now is an image value
_CONTROL = re.compile(rb"[\x00-\x1f]")


class _Broken(ValueError): ...  # the body is not valid JSON, whatever else it holds


class StreamedImage:
    """A long base64 image string, checked as it streams; ``head`` keeps only its header."""

    def __init__(self) -> None:
        self.chars = 0  # characters of the JSON string (its decoded length)
        self.tail = b""  # the last two characters: the size estimate counts trailing "="
        # Not yet decoded: the last complete group and any partial one, then padding. The last
        # group is held back so the final decode sees what strict decoding of the whole sees.
        self.hold = b""
        self.padded = False
        self.valid = True
        self.head = bytearray()  # decoded bytes, kept until the header is understood
        self.info: ImageInfo | None = None
        self._sniff_at = 64 * 1024

    @property
    def estimated(self) -> int:
        """Decoded size as `check_image` estimates it before decoding."""
        return self.chars * 3 // 4 - self.tail.count(b"=")

    def feed(self, text: bytes, chars: int) -> None:
        """More characters of the string (`chars` of them, as UTF-8 `text`)."""
        self.chars += chars
        self.tail = (self.tail + text[-2:])[-2:]
        if not self.valid or self.chars * 3 // 4 - 2 > MAX_IMAGE_BYTES:
            return  # the verdict is settled: only the length still counts
        if text.translate(None, _B64):  # anything outside the alphabet
            self.valid = False
        elif self.padded:
            self._pad(text)
        elif (eq := text.find(b"=")) >= 0:
            self._decode(text[:eq])
            self.padded = True
            self._pad(text[eq:])
        else:
            self._decode(text)

    def _pad(self, text: bytes) -> None:
        if text.translate(None, b"="):  # data after padding: strict decoding refuses it
            self.valid = False
        else:  # how strict decoding judges k pad characters no longer changes past a few
            self.hold += text[: max(0, 8 - self.hold.count(b"="))]

    def _decode(self, text: bytes) -> None:
        total = len(self.hold) + len(text)
        keep = min(total, total % 4 + 4)
        if self.info is not None:  # whole groups of the alphabet always decode: skip them
            self.hold = (self.hold + text[-keep:])[-keep:]
            return
        data = self.hold + text
        self.hold = data[total - keep :]
        if total > keep:
            self._take(data[: total - keep])

    def _take(self, block: bytes) -> None:
        try:
            raw = binascii.a2b_base64(block, strict_mode=True)
        except binascii.Error:
            self.valid = False
            return
        if self.info is None:
            self.head += raw
            if len(self.head) >= self._sniff_at:  # again at each doubling: linear overall
                self._sniff_at *= 2
                self._sniff()

    def _sniff(self) -> None:
        try:
            self.info = sniff_image(bytes(self.head))
        except ValueError:
            return  # maybe more data completes the header; decided on the whole at the end
        self.head = bytearray()

    def finish(self) -> None:
        """The string ended: decode its last group, settle the header."""
        if self.valid and self.estimated <= MAX_IMAGE_BYTES:
            if self.hold:
                self._take(self.hold)
            if self.valid and self.info is None:
                self._sniff()


class _ImageValue:
    """The string value of an ``"image"`` key: kept whole while short, else streamed."""

    def __init__(self) -> None:
        self.raw = bytearray()  # as received, escapes included (not once streaming)
        self.keep = False  # not plain base64 (URL, data: URI, junk): kept whole, as before
        self.stream: StreamedImage | None = None
        self.utf8: codecs.IncrementalDecoder | None = None  # once a non-ASCII byte streamed

    def add(self, part: bytes, escape: bool) -> None:
        if self.stream is None:
            self.raw += part
            if not self.keep and len(self.raw) > _SMALL:
                self._decide()
        elif escape:
            self._feed_escape(part)
        elif self.utf8 is None and not part.translate(None, _B64):
            self.stream.feed(part, len(part))  # the usual case: plain base64
        else:
            self._feed_other(part)

    def _decide(self) -> None:
        """Stream from here if the string so far is plain base64; else keep it whole."""
        try:
            text = json.loads(b'"' + self.raw + b'"')
        except ValueError:
            text = None  # left in the document: json.loads reports it there
        if isinstance(text, str) and text.isascii() and not text.encode().translate(None, _B64):
            self.stream = StreamedImage()
            self.stream.feed(text.encode(), len(text))
            self.raw = bytearray()
        else:
            self.keep = True  # bounded by the body limit, like any other string

    def _feed_escape(self, part: bytes) -> None:
        assert self.stream is not None
        if self.utf8 is not None:
            self._utf8(part)
        try:
            text = json.loads(b'"' + part + b'"')
        except ValueError:
            raise _Broken from None
        self.stream.feed(text.encode("utf-8", "surrogatepass"), len(text))

    def _feed_other(self, part: bytes) -> None:
        assert self.stream is not None
        if _CONTROL.search(part):
            raise _Broken  # JSON allows no raw control characters in a string
        if self.utf8 is None and part.isascii():
            self.stream.feed(part, len(part))
            return
        if self.utf8 is None:
            self.utf8 = codecs.getincrementaldecoder("utf-8")()
        self.stream.feed(part, len(self._utf8(part)))

    def _utf8(self, part: bytes, final: bool = False) -> str:
        try:
            assert self.utf8 is not None
            return self.utf8.decode(part, final)
        except UnicodeDecodeError:
            raise _Broken from None

    def close(self, marker: str, streamed: dict[str, StreamedImage]) -> bytes:
        """The JSON string to keep in the document: the value itself, or a placeholder."""
        if self.stream is None:
            return b'"' + self.raw + b'"'
        if self.utf8 is not None:
            self._utf8(b"", final=True)
        self.stream.finish()
        streamed["\x00" + marker] = self.stream
        return b'"\\u0000' + marker.encode() + b'"'


class BodyReader:
    """Feed the body's chunks in order; `finish()` gives the reduced document and images."""

    def __init__(self, limit: int, *, digest: bool = False) -> None:
        self.limit = limit
        self.size = 0
        self.sha256 = hashlib.sha256() if digest else None
        self.doc = bytearray()
        self.streamed: dict[str, StreamedImage] = {}
        self._nonce = secrets.token_hex(8)  # placeholders no client can guess
        self._in_string = False
        self._escape: bytearray | None = None  # an escape sequence not yet complete
        self._image: _ImageValue | None = None
        self._broken = False

    def feed(self, chunk: bytes) -> None:
        """Account for one chunk; raise SimError 1201 once the body passes the limit."""
        self.size += len(chunk)
        if self.size > self.limit:
            raise SimError(1201, f"request body exceeds {self.limit} bytes")
        if self.sha256 is not None:
            self.sha256.update(chunk)
        if not self._broken:
            try:
                self._lex(chunk)
            except _Broken:
                self._broken = True
                self.doc = bytearray()

    def _lex(self, chunk: bytes) -> None:
        pos, end = 0, len(chunk)
        while pos < end:
            if self._escape is not None:
                pos = self._more_escape(chunk, pos)
            elif not self._in_string:
                quote = chunk.find(b'"', pos)
                if quote < 0:
                    self.doc += chunk[pos:]
                    return
                self.doc += chunk[pos:quote]
                pos = quote + 1
                self._in_string = True
                if _IMAGE_KEY.search(self.doc[-64:]):
                    self._image = _ImageValue()
                else:
                    self.doc += b'"'
            else:  # two memchr-speed finds: base64 holds neither a quote nor a backslash
                quote = chunk.find(b'"', pos)
                slash = chunk.find(b"\\", pos, end if quote < 0 else quote)
                stop = slash if slash >= 0 else end if quote < 0 else quote
                if stop > pos:
                    self._part(chunk[pos:stop], escape=False)
                if stop == end:
                    return
                pos = stop + 1
                if slash >= 0:
                    self._escape = bytearray(b"\\")
                else:
                    self._close_string()

    def _more_escape(self, chunk: bytes, pos: int) -> int:
        esc = self._escape
        assert esc is not None
        if len(esc) == 1:
            esc.append(chunk[pos])
            pos += 1
        want = 6 if esc[1] == 0x75 else 2  # \uXXXX or \x
        take = chunk[pos : pos + want - len(esc)]
        esc += take
        if len(esc) == want:
            self._escape = None
            self._part(bytes(esc), escape=True)
        return pos + len(take)

    def _part(self, part: bytes, *, escape: bool) -> None:
        if self._image is None:
            self.doc += part
        else:
            self._image.add(part, escape)

    def _close_string(self) -> None:
        self._in_string = False
        if self._image is None:
            self.doc += b'"'
            return
        marker = f"{self._nonce}-{len(self.streamed)}"
        self.doc += self._image.close(marker, self.streamed)
        self._image = None

    def finish(self) -> tuple[bytes, dict[str, StreamedImage]]:
        """The document to parse and its streamed images; SimError 1200 if not valid JSON."""
        if self._broken:
            raise SimError(1200, "request body is not valid JSON")
        # A body that ends inside a string leaves an unfinished document: json.loads says so.
        return bytes(self.doc), self.streamed
