"""EncodingCache: base64 encodings of image files, shared by every job that uses the file."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeAlias, TypeVar

import anyio
import anyio.to_thread

__all__ = ["ENCODE_PARALLEL", "EncodingCache", "off_loop"]

#: (resolved path, size, mtime_ns): a file that changes gets a new key.
_Key: TypeAlias = tuple[str, int, int]

#: Default bound on encodings in flight (the 2-core machines this is sized for gain nothing more).
ENCODE_PARALLEL = 4

_T = TypeVar("_T")


async def off_loop(work: Callable[[], _T], cache: EncodingCache | None) -> _T:
    """Run file reading / base64 on a worker thread, at most `cache.parallel` at a time."""
    return await anyio.to_thread.run_sync(work, limiter=cache.limiter() if cache else None)


class EncodingCache:
    """LRU of base64 encodings keyed by (path, size, mtime_ns), bounded by encoded bytes."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max(0, max_bytes)  # 0 turns caching off but keeps the single flight
        self.hits = 0  # served from the cache, or by sharing an encoding already in flight
        self.misses = 0  # encodings actually run
        self.nbytes = 0
        self._entries: dict[_Key, str] = {}  # insertion order is the LRU order
        self._pending: dict[_Key, asyncio.Task[str]] = {}
        #: Encodings running at once: each holds up to 10 MB read + 13 MB of base64.
        self.parallel = ENCODE_PARALLEL
        self._limiter: anyio.CapacityLimiter | None = None  # made in the loop that uses it

    def limiter(self) -> anyio.CapacityLimiter:
        """The CapacityLimiter bounding this cache's encoding threads."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.parallel)
        return self._limiter

    def __len__(self) -> int:
        return len(self._entries)

    async def _get(self, key: _Key, encode: Callable[[], str]) -> str:
        if (value := self._entries.get(key)) is not None:
            self._entries[key] = self._entries.pop(key)  # now the most recently used
            self.hits += 1
            return value
        if (task := self._pending.get(key)) is not None:
            self.hits += 1
        else:  # single flight: the first caller starts the encoding, later ones await it too
            self.misses += 1
            task = asyncio.create_task(off_loop(encode, self))
            self._pending[key] = task
            task.add_done_callback(lambda t: self._settle(key, t))
        # shield: one waiter being cancelled must not cancel the encoding the others await
        return await asyncio.shield(task)

    def _settle(self, key: _Key, task: asyncio.Task[str]) -> None:
        del self._pending[key]
        if task.cancelled() or task.exception() is not None or len(task.result()) > self.max_bytes:
            return  # failures are never cached; neither is one entry larger than the whole cache
        self._entries[key] = task.result()
        self.nbytes += len(task.result())
        while self.nbytes > self.max_bytes:
            self.nbytes -= len(self._entries.pop(next(iter(self._entries))))
