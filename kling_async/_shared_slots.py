"""SharedSlots: the account's concurrency slots, shared through Redis by every process.

The same policy as `SlotGate`, with its state in Redis so that all processes on one account
act as one gate (scripts in `_shared_lua`):
- a slot is a **lease** (a member of a sorted set scored by its expiry in Redis time), taken
  in `acquire()` before the create and given back when the task is seen finished; one keeper
  call per process every TTL/3 renews all its leases, so the slots of a process killed with -9
  come back within the TTL (default 15 s);
- waiting creates form one account-wide **FIFO** (a queue with heartbeats): the first `free`
  waiters of the whole account are served, so no process starves, and a dead waiter leaves the
  queue when its heartbeat lapses; one call per process serves all its waiters;
- what the account allows is learned once for all: a 1303 anywhere sets the shared limit to what
  all our processes hold; timed probes raise it by one, one at a time account-wide; slow start
  lets at most `RAMP` unconfirmed creates out above the level Kling has accepted. Each process
  still caps what it lets the account run at its own `maximum` (`--concurrency`).

It implements the slot gate's interface (`_gate.Gate`; a `Lease` is its `Slot`, the id naming
the lease): `await acquire() → Lease`, `await accepted(lease)`, `await rejected(lease) → slots
still held account-wide`; `release(lease)` and `hold() → Lease` are synchronous (safe from a
done-callback: the local bookkeeping is immediate, the Redis write goes through the keeper,
which retries until it lands); `limit`, `maximum`, `in_use` (ours), `probe_interval`,
`set_maximum()`; besides, `shared_in_use`.

Redis lost mid-run: `acquire()` waits until it is back (or raises `CoordinatorUnavailableError`
with `fail_fast=True`), so no create starts; `accepted`/`rejected` update what they can;
releases queue up; on reconnect the keeper re-adds every lease still held (a ZADD, so nothing is
counted twice) and, if Redis lost its data, no slot is granted for one TTL so that every live
holder re-adds its leases first. Leases still held at `aclose()` are left to expire (their
tasks may still run on Kling).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._errors import CoordinatorUnavailableError
from ._gate import Gate, Slot
from ._limits import RAMP
from ._shared_link import KeepAlive, RedisLink
from ._shared_lua import ACCEPTED, ACQUIRE, KEEP, REJECTED

__all__ = ["Lease", "SharedSlots"]

_KEYS = ("leases", "probing", "queue", "beats", "gate", "epoch", "seq")


def _new_id() -> str:
    return f"{os.getpid()}-{secrets.token_hex(6)}"


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


#: One slot held in Redis from a create until its task is seen finished (`probe`: above the
#: level Kling has accepted so far).
Lease = Slot


@dataclass(eq=False, slots=True)
class _Waiter:
    id: str
    future: asyncio.Future[Lease]


class SharedSlots:
    """The account's slots as leases in Redis, served fairly to every process."""

    def __init__(
        self,
        link: RedisLink,
        maximum: int,
        *,
        ttl: float = 15.0,
        probe_interval: float = 30.0,
        slow_start: bool = True,
        fail_fast: bool = False,
    ) -> None:
        if maximum < 1:
            raise ValueError(f"maximum must be ≥ 1, got {maximum}")
        self.link, self.maximum, self.ttl = link, maximum, ttl
        self.probe_interval, self.slow_start, self.fail_fast = probe_interval, slow_start, fail_fast
        self.limit = maximum  # the account-wide limit as last seen, capped by our maximum
        self.shared_in_use = 0  # leases of every process, as last seen
        self.rejections = 0
        self.peak = 0
        self.probes = 0  # leases granted above the level Kling has accepted
        self._held: set[str] = set()
        self._holds: set[str] = set()  # held on resume, not yet written
        self._releasing: set[str] = set()  # given back, not yet written
        self._waiters: deque[_Waiter] = deque()
        self._epoch = ""
        self._wake = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._closing = False  # the pump checks it: a cancel inside a redis-py call can be lost
        self._keys = [link.key(f"slots:{name}") for name in _KEYS]
        self._channel = link.key("slots:wake")
        self._scripts = {s: link.script(s) for s in (ACQUIRE, KEEP, ACCEPTED, REJECTED)}
        self._keeper = KeepAlive(link, ttl / 3, self._keep)

    def __repr__(self) -> str:
        return (
            f"SharedSlots(in_use={self.in_use}, shared_in_use={self.shared_in_use}, "
            f"limit={self.limit}, maximum={self.maximum})"
        )

    @property
    def in_use(self) -> int:
        """Slots this process holds."""
        return len(self._held)

    def start(self) -> None:
        """Start the keeper and the wake-up subscription (needs a running loop)."""
        self.link.listen("slots:wake", lambda _: self._wake.set())
        self.link.on_change(self._availability)
        self._keeper.start()

    async def _run(self, script: str, *args: Any) -> Any:
        head = [self._channel, self._epoch, _ms(self.ttl)]
        return await self.link.run(self._scripts[script], self._keys, [*head, *args])

    def _seen(self, epoch: str, limit: int, in_use: int) -> None:
        self._epoch = epoch
        self.limit = self.maximum if limit < 0 else min(int(limit), self.maximum)
        self.shared_in_use = int(in_use)

    async def acquire(self) -> Lease:
        """Wait for a slot (in the account-wide queue) and take it."""
        if self._closing:
            raise RuntimeError("this SharedSlots is closed")
        if self.fail_fast and not self.link.available:
            raise CoordinatorUnavailableError(f"coordinator {self.link.url} is unavailable")
        waiter = _Waiter(_new_id(), asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.ensure_future(self._serve())
        else:
            self._wake.set()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            self._held.discard(waiter.id)  # granted just before the cancel: give it back
            self._give_back(waiter.id)
            raise

    async def _serve(self) -> None:
        """One loop per process: a single script call serves all our waiters, in order."""
        try:
            while self._waiters and not self._closing:
                if not self.link.available:
                    if self.fail_fast:
                        self._fail_waiters()
                        return
                    await self.link.wait_available()
                    continue
                batch = list(itertools.islice(self._waiters, max(1, self.maximum)))
                self._wake.clear()
                args = [self.maximum, _ms(self.probe_interval), int(self.slow_start), RAMP]
                try:
                    epoch, flags, limit, in_use, wait_ms = await self._run(
                        ACQUIRE, *args, *(w.id for w in batch)
                    )
                except CoordinatorUnavailableError:
                    continue
                self._seen(epoch, limit, in_use)
                if not self._grant(batch, flags) and self._waiters:
                    with contextlib.suppress(TimeoutError):  # not wait_for: see KeepAlive
                        async with asyncio.timeout(wait_ms / 1000):
                            await self._wake.wait()
        except Exception as exc:  # a script or protocol error: fail loudly, never hang
            for waiter in self._waiters:
                if not waiter.future.done():
                    waiter.future.set_exception(exc)
            self._waiters.clear()

    def _grant(self, batch: list[_Waiter], flags: list[int]) -> bool:
        granted = False
        for waiter, flag in zip(batch, flags, strict=True):
            if not flag:
                continue
            granted = True
            if waiter.future.done():  # cancelled while the call was in flight
                self._give_back(waiter.id)
                continue
            self._waiters.remove(waiter)
            self._held.add(waiter.id)
            self.peak = max(self.peak, len(self._held))
            self.probes += flag == 2
            waiter.future.set_result(Lease(waiter.id, probe=flag == 2))
        return granted

    def _fail_waiters(self, unavailable: bool = True) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            self._give_back(waiter.id)  # its queue entry, once Redis is back
            if waiter.future.done():
                continue
            if unavailable:
                waiter.future.set_exception(
                    CoordinatorUnavailableError(f"coordinator {self.link.url} is unavailable")
                )
            else:
                waiter.future.cancel()

    def _availability(self, available: bool) -> None:
        if available:
            self._wake.set()
        elif self.fail_fast:
            self._fail_waiters()

    async def accepted(self, lease: Lease) -> None:
        """The create on this lease was accepted: the level held is proven (account-wide)."""
        with contextlib.suppress(CoordinatorUnavailableError):  # knowledge, not safety
            self._seen(*await self._run(ACCEPTED, lease.id, _ms(self.probe_interval)))

    async def rejected(self, lease: Lease) -> int:
        """Kling answered 1303 on this lease: give it back, limit := what all of us hold.

        Returns the slots still held account-wide (our own if Redis is unavailable).
        """
        self.rejections += 1
        self._held.discard(lease.id)
        self._holds.discard(lease.id)
        try:
            epoch, limit, in_use = await self._run(REJECTED, lease.id)
        except CoordinatorUnavailableError:
            self._give_back(lease.id)
            return self.in_use
        self._seen(epoch, limit, in_use)
        return int(in_use)

    def release(self, lease: Lease) -> None:
        """Give a slot back (its task ended, or its create failed before Kling took it)."""
        self._held.discard(lease.id)
        self._holds.discard(lease.id)
        self._give_back(lease.id)

    def hold(self) -> Lease:
        """Count a slot we already hold without waiting (a running task found on resume)."""
        lease = Lease(_new_id())
        self._held.add(lease.id)
        self._holds.add(lease.id)
        self.peak = max(self.peak, len(self._held))
        self._keeper.poke()
        return lease

    def set_maximum(self, maximum: int) -> None:
        """Change this process's ceiling at run time."""
        self.maximum = max(1, maximum)
        self.limit = min(self.limit, self.maximum)
        self._wake.set()

    def _give_back(self, lease_id: str) -> None:
        self._releasing.add(lease_id)
        self._keeper.poke()

    async def _keep(self, renew_held: bool = True) -> None:
        """Renew every lease we hold, write holds and releases: one call per process."""
        releases = list(self._releasing)
        holds = list(self._holds) if renew_held else []
        renew = [lease for lease in self._held if lease not in self._holds] if renew_held else []
        epoch, in_use = await self._run(KEEP, len(releases), *releases, len(holds), *holds, *renew)
        self._releasing.difference_update(releases)
        self._holds.difference_update(holds)
        self._epoch, self.shared_in_use = epoch, int(in_use)

    async def snapshot(self) -> dict[str, int]:
        """The shared state (limit, confirmed, rejections, in_use, waiting) as Redis has it."""

        async def read() -> dict[str, int]:
            gate = await self.link.client.hgetall(self._keys[4])
            state = {str(k): int(float(v)) for k, v in gate.items()}
            state["in_use"] = await self.link.client.zcard(self._keys[0])
            state["waiting"] = await self.link.client.zcard(self._keys[2])
            return state

        result: dict[str, int] = await self.link.call(read)
        return result

    async def aclose(self) -> None:
        """Leave the queue and stop; held leases expire by their TTL (their tasks may run on)."""
        self._closing = True
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        self._fail_waiters(unavailable=False)
        if self._releasing and self.link.available:
            with contextlib.suppress(CoordinatorUnavailableError):
                await self._keep(renew_held=False)
        await self._keeper.aclose()


if TYPE_CHECKING:  # mypy checks that the shared gate fits the interface the client uses

    def _is_a_gate(slots: SharedSlots) -> Gate:
        return slots
