"""Shared status tracking: one elected process sweeps the task list, every process reads.

- `LeaderLease`: leadership is a key set with `SET NX PX` and extended by its holder every
  TTL/3 (one claim-or-extend script); a leader that dies is replaced within the TTL, one that
  stops cleanly resigns at once. A leader that loses Redis, or renews later than 2/3 of the TTL
  (a paused process), steps down on its own: two sweepers for a moment are harmless, and the
  publish script is fenced, so a deposed leader writes nothing.
- `SharedStatus`: the leader publishes each task's compact state (the raw task data as the
  list endpoint gave it, a string) under `task:<id>` with a TTL, fenced by its leadership, and
  announces the changed ids on the `status` channel; the others `read()` them (MGET) when told,
  and on their own poll as the safety net. Each process `watch()`es the tasks it follows (a
  sorted set scored by expiry, renewed by one call per period), so the leader knows which tasks
  its sweeps must cover — and a dead process's tasks drop out by themselves.

Redis lost mid-run: publish/read raise `CoordinatorUnavailableError`; the client then follows its
own tasks directly (its own sweeps) until Redis is back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping

from ._errors import CoordinatorUnavailableError
from ._shared_link import KeepAlive, RedisLink
from ._shared_lua import LEADER_CLAIM, LEADER_RESIGN, PUBLISH, WATCH
from ._types import Clock

__all__ = ["LeaderLease", "SharedStatus"]

log = logging.getLogger("kling_async")


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class LeaderLease:
    """Elects one process of the account (per `name`) and keeps it elected while it lives."""

    def __init__(
        self,
        link: RedisLink,
        *,
        name: str = "leader",
        ttl: float = 10.0,
        on_change: Callable[[bool], None] | None = None,
        monotonic: Clock = time.monotonic,
    ) -> None:
        self.link, self.ttl = link, ttl
        self.id = f"{os.getpid()}-{secrets.token_hex(6)}"
        self.is_leader = False
        self.key = link.key(name)
        self._resigned = f"{name}:resigned"  # the channel a resigning leader publishes on
        self._claim, self._resign = link.script(LEADER_CLAIM), link.script(LEADER_RESIGN)
        self._on_change = on_change
        self._monotonic = monotonic
        self._renewed = 0.0
        self._keeper = KeepAlive(link, ttl / 3, self._campaign)
        link.on_change(self._availability)

    def __repr__(self) -> str:
        return f"LeaderLease(id={self.id!r}, is_leader={self.is_leader})"

    def start(self) -> None:
        """Start campaigning (needs a running loop); the first attempt is made at once."""
        # A leader that resigns says so: the others claim at once, not at their next attempt
        # (up to TTL/3 later, while every follower would sweep for itself).
        self.link.listen(self._resigned, lambda _: self._keeper.poke())
        self._keeper.start()
        self._keeper.poke()

    def _set(self, leader: bool) -> None:
        if leader != self.is_leader:
            self.is_leader = leader
            log.info("coordinator: %s status leader", "now the" if leader else "no longer the")
            if self._on_change is not None:
                self._on_change(leader)

    def _availability(self, available: bool) -> None:
        # Without Redis we can neither publish nor know whether our lease outlives the outage:
        # step down now, claim again (keeping the key if it is still ours) once it is back.
        if not available:
            self._set(False)

    async def _campaign(self) -> None:
        if self.is_leader and self._monotonic() - self._renewed > self.ttl * 2 / 3:
            self._set(False)  # renewed too late (a paused process): someone else may lead
        ok = await self.link.run(self._claim, [self.key], [self.id, _ms(self.ttl)])
        if ok:
            self._renewed = self._monotonic()
        self._set(bool(ok))

    async def aclose(self) -> None:
        """Stop campaigning and hand leadership over at once."""
        await self._keeper.aclose()
        if self.is_leader:
            link, channel = self.link, self.link.key(self._resigned)
            with contextlib.suppress(CoordinatorUnavailableError):
                await link.run(self._resign, [self.key], [self.id])
                await link.call(lambda: link.client.publish(channel, self.id))
            self._set(False)


class SharedStatus:
    """Task states published by the leader, read by every process; watched task ids."""

    def __init__(
        self,
        link: RedisLink,
        *,
        state_ttl: float = 3600.0,
        watch_ttl: float = 15.0,
        on_update: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.link, self.state_ttl, self.watch_ttl = link, state_ttl, watch_ttl
        self._watch_key = link.key("status:watch")
        self._channel = link.key("status")
        self._publish, self._watch = link.script(PUBLISH), link.script(WATCH)
        self._watching: set[str] = set()
        self._dropped: set[str] = set()
        self._on_update = on_update
        self._keeper = KeepAlive(link, watch_ttl / 3, self._renew_watch)

    def start(self) -> None:
        """Subscribe to updates and start renewing our watches (needs a running loop)."""
        if self._on_update is not None:
            self.link.listen("status", self._notice)
        self._keeper.start()

    def _notice(self, message: str) -> None:
        assert self._on_update is not None
        try:
            ids = json.loads(message)
        except ValueError:
            ids = []  # a (re)subscription: anything may have changed
        self._on_update([str(i) for i in ids] if isinstance(ids, list) else [])

    def _state_key(self, task_id: str) -> str:
        return self.link.key(f"task:{task_id}")

    async def publish(self, leader: LeaderLease, states: Mapping[str, str]) -> bool:
        """Store each task's state and announce the ids; False if we are no longer leader."""
        if not states:
            return True
        ids = list(states)
        keys = [leader.key, *(self._state_key(i) for i in ids)]
        args = [leader.id, _ms(self.state_ttl), self._channel, json.dumps(ids)]
        done = await self.link.run(self._publish, keys, [*args, *(states[i] for i in ids)])
        return bool(done)

    async def read(self, task_ids: Iterable[str]) -> dict[str, str]:
        """The published states of these tasks (absent: not published, or expired)."""
        ids = list(task_ids)
        if not ids:
            return {}
        values = await self.link.call(
            lambda: self.link.client.mget([self._state_key(i) for i in ids])
        )
        return {i: v for i, v in zip(ids, values, strict=True) if v is not None}

    def watch(self, task_ids: Iterable[str]) -> None:
        """Ask the leader to cover these tasks (written by the next renewal, at once)."""
        ids = set(task_ids)
        self._watching |= ids
        self._dropped -= ids
        self._keeper.poke()

    @property
    def watching(self) -> frozenset[str]:
        """The tasks we ask the leader to cover."""
        return frozenset(self._watching)

    def unwatch(self, task_ids: Iterable[str]) -> None:
        """These tasks are done here: the leader need not cover them for us."""
        ids = set(task_ids) & self._watching
        self._watching -= ids
        self._dropped |= ids
        self._keeper.poke()

    async def watched(self) -> list[str]:
        """Every task some live process follows (for the leader's sweeps)."""
        result: list[str] = await self.link.run(
            self._watch, [self._watch_key], [_ms(self.watch_ttl), 0]
        )
        return result

    async def _renew_watch(self) -> None:
        if not self._watching and not self._dropped:
            return
        dropped, renew = list(self._dropped), list(self._watching)
        await self.link.run(
            self._watch, [self._watch_key], [_ms(self.watch_ttl), len(dropped), *dropped, *renew]
        )
        self._dropped.difference_update(dropped)

    async def aclose(self) -> None:
        """Stop renewing; our watches lapse by their TTL."""
        await self._keeper.aclose()
