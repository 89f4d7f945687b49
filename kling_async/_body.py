"""The create body as a streamed aiohttp payload: flat memory whatever the images.

The JSON around the images is made by `json.dumps` (so it is byte for byte what
``json.dumps(await request.to_wire())`` gives) and written as is; each image is base64-encoded
from its file or bytes a chunk at a time while the request is being sent. The length is known
up front (base64 of n bytes is 4·⌈n/3⌉ characters), so the request carries a Content-Length.
Every send streams from the sources again: a create re-sent after an unknown outcome sends the
same bytes, or is refused if a file changed in between.
"""

from __future__ import annotations

import json
import secrets
from contextlib import aclosing

import aiohttp
from aiohttp.abc import AbstractStreamWriter

from ._encoding import EncodingCache, off_loop
from ._errors import InvalidRequestError
from ._images import ImageInput
from .models import MultiImageToVideoRequest

__all__ = ["CreateBody"]


class CreateBody(aiohttp.Payload):
    """One create request's JSON, streamed from its sources each time it is sent."""

    def __init__(self, parts: list[bytes | ImageInput], cache: EncodingCache | None = None) -> None:
        super().__init__(None, content_type="application/json")
        self._parts = parts
        self._cache = cache
        self._size = sum(len(p) if isinstance(p, bytes) else p.encoded_size or 0 for p in parts)
        #: Why the last send stopped short: an image that changed since it was checked.
        self.failure: InvalidRequestError | None = None

    @classmethod
    async def build(
        cls, request: MultiImageToVideoRequest, cache: EncodingCache | None = None
    ) -> CreateBody:
        """The body of `request`; InvalidRequestError if an image file changed since parse."""
        token = secrets.token_hex(16)  # stands in for each streamed image inside the JSON text
        values = [
            f"{token}-{i}" if img.encoded_size is not None else await img.wire_value()
            for i, img in enumerate(request.images)
        ]
        text = json.dumps(request.wire_body(values))
        parts: list[bytes | ImageInput] = []
        for i, img in enumerate(request.images):
            if img.encoded_size is not None:
                before, text = text.split(f"{token}-{i}", 1)
                parts += [before.encode("ascii"), img]
        parts.append(text.encode("ascii"))  # json.dumps escapes all non-ASCII
        body = cls(parts, cache)
        if any(img.kind == "path" for img in request.images):
            await off_loop(body.check, cache)  # refuse a changed file before any byte is sent
        return body

    def check(self) -> None:
        """Raise InvalidRequestError if an image file changed since it was checked (a stat)."""
        for part in self._parts:
            if isinstance(part, ImageInput):
                part.check_unchanged()

    async def write(self, writer: AbstractStreamWriter) -> None:
        """Stream the body to `writer` (aiohttp calls this, or `write_with_length`)."""
        self.failure = None
        sent = 0
        try:
            for part in self._parts:
                if isinstance(part, bytes):
                    await writer.write(part)
                    sent += len(part)
                    continue
                async with aclosing(part.chunks(self._cache)) as chunks:  # closes its file
                    async for chunk in chunks:
                        await writer.write(chunk)
                        sent += len(chunk)
        except InvalidRequestError as exc:
            self.failure = exc  # the body stops short: the server cannot take it as a request
            raise
        if sent != self._size:  # would leave the server waiting for bytes that never come
            raise RuntimeError(f"create body: {sent} bytes streamed, {self._size} declared")

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        """As `write`: the body is exactly its declared size, never cut."""
        await self.write(writer)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        """The whole body as text, read and encoded now (for debugging and tests; blocking)."""
        return "".join(
            p.decode("ascii") if isinstance(p, bytes) else p.encode_now().decode("ascii")
            for p in self._parts
        )

    def __repr__(self) -> str:
        return f"CreateBody({self._size} bytes, {len(self._parts) // 2} streamed images)"
