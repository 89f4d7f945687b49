"""Small shared type aliases and protocols; stdlib only so every module may import it."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import TypeAlias

__all__ = ["Clock", "PathLike", "Sleep"]

#: Returns seconds; `time.time` for wall-clock stamps, `time.monotonic` for intervals.
Clock: TypeAlias = Callable[[], float]
#: `asyncio.sleep`, or a fake that records the waits in tests.
Sleep: TypeAlias = Callable[[float], Awaitable[None]]
PathLike: TypeAlias = str | os.PathLike[str]
