"""Base64 for image bytes: chunk sizes, off-loop work, and the cache of small shared images."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeAlias, TypeVar

import anyio
import anyio.to_thread

__all__ = ["CHUNK", "ENCODE_PARALLEL", "EncodingCache", "b64_size", "off_loop"]

#: (resolved path, size, mtime_ns) as validated: a file that changes gets a new key.
_Key: TypeAlias = tuple[str, int, int]

#: Raw bytes read and encoded per step of a streamed image: a multiple of 3, so the chunks'
#: encodings concatenate to the whole one's, and 256 KiB of base64 per chunk on the wire.
CHUNK = 3 * 64 * 1024

#: Default bound on encodings in flight (the 2-core machines this is sized for gain nothing more).
ENCODE_PARALLEL = 4

#: Keys remembered to spot reuse: an image is cached the second time it is asked for.
_SEEN = 4096

_T = TypeVar("_T")


def b64_size(n: int) -> int:
    """Length of the base64 encoding of n bytes (with padding): 4·⌈n/3⌉."""
    return 4 * ((n + 2) // 3)


async def off_loop(work: Callable[[], _T], cache: EncodingCache | None) -> _T:
    """Run file reading / base64 on a worker thread, at most `cache.parallel` at a time."""
    return await anyio.to_thread.run_sync(work, limiter=cache.limiter() if cache else None)


class EncodingCache:
    """Base64 encodings of small image files that recur across jobs: LRU, bounded by bytes.

    Only files of at most `max_image_bytes` are cached, and only from their second use on: a
    large or one-off image is streamed from its file instead, so caching it would only cost
    memory. `max_bytes=0` turns caching off but keeps the single flight (one encoding shared by
    concurrent requests for the same file). The limiter bounds every encoding thread, streamed
    chunks included.
    """

    def __init__(
        self, max_bytes: int = 32 * 1024 * 1024, *, max_image_bytes: int = 1024 * 1024
    ) -> None:
        self.max_bytes = max(0, max_bytes)
        self.max_image_bytes = max(0, max_image_bytes)
        self.hits = 0  # served from the cache, or by sharing an encoding already in flight
        self.misses = 0  # encodings actually run
        self.nbytes = 0
        self._entries: dict[_Key, bytes] = {}  # insertion order is the LRU order
        self._pending: dict[_Key, asyncio.Task[bytes]] = {}
        self._shared: set[_Key] = set()  # in flight and asked for again meanwhile
        self._seen: OrderedDict[_Key, None] = OrderedDict()
        #: Encodings running at once: each holds up to one image (or one chunk) and its base64.
        self.parallel = ENCODE_PARALLEL
        self._limiter: anyio.CapacityLimiter | None = None  # made in the loop that uses it

    def limiter(self) -> anyio.CapacityLimiter:
        """The CapacityLimiter bounding this cache's encoding threads."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.parallel)
        return self._limiter

    def __len__(self) -> int:
        return len(self._entries)

    def eligible(self, size: int) -> bool:
        """Whether a file of `size` bytes goes through the cache (else it is streamed)."""
        return size <= self.max_image_bytes

    async def _get(self, key: _Key, encode: Callable[[], bytes]) -> bytes:
        if (value := self._entries.get(key)) is not None:
            self._entries[key] = self._entries.pop(key)  # now the most recently used
            self.hits += 1
            return value
        if (task := self._pending.get(key)) is not None:
            self.hits += 1
            self._shared.add(key)
        else:  # single flight: the first caller starts the encoding, later ones await it too
            self.misses += 1
            if key in self._seen:
                self._shared.add(key)  # asked for before: worth keeping this time
            self._seen[key] = None
            self._seen.move_to_end(key)
            if len(self._seen) > _SEEN:
                self._seen.popitem(last=False)
            task = asyncio.create_task(off_loop(encode, self))
            self._pending[key] = task
            task.add_done_callback(lambda t: self._settle(key, t))
        # shield: one waiter being cancelled must not cancel the encoding the others await
        return await asyncio.shield(task)

    def _settle(self, key: _Key, task: asyncio.Task[bytes]) -> None:
        del self._pending[key]
        keep = key in self._shared
        self._shared.discard(key)
        if not keep or task.cancelled() or task.exception() is not None:
            return  # failures are never cached; neither are images used once
        value = task.result()
        if len(value) > self.max_bytes:
            return  # one entry larger than the whole cache
        self._entries[key] = value
        self.nbytes += len(value)
        while self.nbytes > self.max_bytes:
            self.nbytes -= len(self._entries.pop(next(iter(self._entries))))
