"""SharedGate: the slot gate of a client with a coordinator — `SharedSlots` once Redis is up.

A `Client` is built synchronously but reaches Redis asynchronously, so the gate it is given
connects on first need: `acquire()` connects (or waits for the connection another caller
started), and a slot held before that (`hold()`, a running task found on resume) is a local
placeholder that becomes a lease as soon as the shared slots exist. Until then `limit` is the
configured ceiling and nothing is counted as refused.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ._gate import Gate, Slot

if TYPE_CHECKING:
    from ._shared_slots import SharedSlots

__all__ = ["SharedGate"]


class SharedGate:
    """Account concurrency shared by every process through Redis (see `_shared_slots`)."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[SharedSlots]],
        maximum: int,
        *,
        probe_interval: float = 30.0,
    ) -> None:
        self._connect = connect
        self._maximum, self._probe_interval = maximum, probe_interval
        self._slots: SharedSlots | None = None
        self._early: dict[str, Slot | None] = {}  # held before Redis was up → its lease
        self._refusal: Exception | None = None  # set by `close()`: no slot is ever given again
        self._closed = asyncio.Event()

    def __repr__(self) -> str:
        return f"SharedGate({self._slots!r})"

    def attach(self, slots: SharedSlots) -> None:
        """The shared slots are up: hand them our settings and the slots already held."""
        self._slots = slots
        slots.probe_interval = self._probe_interval
        slots.set_maximum(self._maximum)
        for early in self._early:
            self._early[early] = slots.hold()

    @property
    def probe_interval(self) -> float:
        """Seconds between upward probes after a 1303 (account-wide: one probe per interval)."""
        return self._slots.probe_interval if self._slots else self._probe_interval

    @probe_interval.setter
    def probe_interval(self, seconds: float) -> None:
        self._probe_interval = seconds
        if self._slots is not None:
            self._slots.probe_interval = seconds

    @property
    def maximum(self) -> int:
        """This process's ceiling (`Limits.concurrency`)."""
        return self._maximum

    @property
    def limit(self) -> int:
        """The account-wide limit as last seen (≤ maximum)."""
        return self._slots.limit if self._slots else self._maximum

    @property
    def in_use(self) -> int:
        """Slots this process holds."""
        return self._slots.in_use if self._slots else len(self._early)

    @property
    def peak(self) -> int:
        """The most slots this process held at once."""
        return self._slots.peak if self._slots else len(self._early)

    @property
    def rejections(self) -> int:
        """Creates of this process refused with 1303."""
        return self._slots.rejections if self._slots else 0

    @property
    def probes(self) -> int:
        """Leases this process was granted above the proven level."""
        return self._slots.probes if self._slots else 0

    async def acquire(self) -> Slot:
        """Wait in the account-wide queue for a slot (connecting first if need be); raises
        the `close()` error if the gate is closed first."""
        if self._refusal is not None:
            raise self._refusal
        slots = self._slots or await self._connect()
        waiting = asyncio.ensure_future(slots.acquire())
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({waiting, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not waiting.done():
                waiting.cancel()  # leaves the account's queue
            await asyncio.gather(waiting, closed, return_exceptions=True)
        if waiting.cancelled() and self._refusal is not None:
            raise self._refusal
        return waiting.result()

    @property
    def refused(self) -> bool:
        """Closed for good (`close()`)."""
        return self._refusal is not None

    def close(self, error: Exception) -> None:
        """Give no slot any more: waiting and later `acquire()` calls raise `error`."""
        self._refusal = error
        self._closed.set()

    async def accepted(self, slot: Slot) -> None:
        """The create on `slot` was accepted (the level is proven account-wide)."""
        assert self._slots is not None, "a slot is only handed out once connected"
        await self._slots.accepted(slot)

    async def rejected(self, slot: Slot) -> int:
        """1303 on `slot`: give it back; return the slots still held account-wide."""
        assert self._slots is not None, "a slot is only handed out once connected"
        return await self._slots.rejected(slot)

    def release(self, slot: Slot) -> None:
        """Give `slot` back (the Redis write happens in the background)."""
        if slot.id in self._early:
            lease = self._early.pop(slot.id)
            if lease is None:
                return  # never reached Redis
            slot = lease
        if self._slots is not None:
            self._slots.release(slot)

    def hold(self) -> Slot:
        """Count a slot already held (a running task found on resume), without waiting."""
        if self._slots is not None:
            return self._slots.hold()
        slot = Slot(f"early-{secrets.token_hex(6)}")
        self._early[slot.id] = None
        return slot

    def set_maximum(self, maximum: int) -> None:
        """Change this process's ceiling at run time."""
        self._maximum = max(1, maximum)
        if self._slots is not None:
            self._slots.set_maximum(maximum)


if TYPE_CHECKING:  # mypy checks that the shared gate fits the interface the client uses

    def _is_a_gate(gate: SharedGate) -> Gate:
        return gate
