"""ClientStats: a snapshot of what a client has done (requests, sweeps, slots, encodings)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClientStats"]


@dataclass(frozen=True, slots=True)
class ClientStats:
    """What a client has done so far (`Client.stats`, a snapshot).

    `requests_sent`: API requests (retries included, video downloads not); `sweeps`, with the
    `list_calls` and `get_calls` they made: status sweeps; `following`: tasks followed now
    (each holding its concurrency slot until seen finished); `slots_in_use`, `slot_limit`,
    `slot_peak`: the slot gate now, and the most slots held at once; `rejections`: creates
    refused with 1303; `probes`: creates sent above the level Kling had accepted;
    `encoding_hits` / `encoding_misses`: image encodings served from the cache (or shared
    while in flight) / run.
    """

    requests_sent: int
    sweeps: int
    list_calls: int
    get_calls: int
    following: int
    slots_in_use: int
    slot_limit: int
    slot_peak: int
    rejections: int
    probes: int
    encoding_hits: int
    encoding_misses: int
