"""The slot gate's interface: what the client and the batch need of the account's concurrency.

A slot is taken before a create and held until its task is seen finished. Two implementations
fit: `_limits.SlotGate` (this process's view, in memory) and `_shared_slots.SharedSlots` (every
process's view, as leases in Redis). `acquire` hands out a `Slot`, the handle `release` gives
back (a lease id names it to a shared gate). `accepted` and `rejected` may need a round trip
(async); `release` and `hold` never wait, so they can run in a future's done-callback (a shared
gate does its part of them in the background).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Gate", "Slot"]


@dataclass(frozen=True, slots=True)
class Slot:
    """A slot held: `id` names it to the gate (a lease); `probe` when above the proven level."""

    id: str = ""
    probe: bool = False


class Gate(Protocol):
    """Account concurrency as the client sees it: wait for a slot, hold it, give it back."""

    #: Seconds between probes for a raised cap after a 1303 (the client tunes it as it learns).
    probe_interval: float

    @property
    def maximum(self) -> int:
        """The configured ceiling (the user's `Limits.concurrency`)."""
        ...

    @property
    def limit(self) -> int:
        """How many slots may be held now (≤ maximum; lowered by 1303, raised by probes)."""
        ...

    @property
    def in_use(self) -> int:
        """Slots this process holds."""
        ...

    @property
    def peak(self) -> int:
        """The most slots held at once."""
        ...

    @property
    def rejections(self) -> int:
        """Creates refused with 1303 so far."""
        ...

    @property
    def probes(self) -> int:
        """Creates sent above the proven level so far."""
        ...

    async def acquire(self) -> Slot:
        """Wait for a slot and take it."""
        ...

    async def accepted(self, slot: Slot) -> None:
        """The create on `slot` was accepted: the level held is proven."""
        ...

    async def rejected(self, slot: Slot) -> int:
        """The create on `slot` got 1303: give it back; return how many slots are still held."""
        ...

    def release(self, slot: Slot) -> None:
        """Give `slot` back: its task was seen ending, or its create failed before Kling took it."""
        ...

    def hold(self) -> Slot:
        """Count a slot already held without waiting (a running task found on resume)."""
        ...

    def set_maximum(self, maximum: int) -> None:
        """Change the configured ceiling at run time."""
        ...
