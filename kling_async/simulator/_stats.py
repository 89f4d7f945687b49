"""Counters the simulator keeps for tests and benchmarks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["SimulatorStats"]


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    return [dict(v) for v in value] if isinstance(value, list) else value


@dataclass
class SimulatorStats:
    """Live counters; ``as_dict()`` gives a JSON-ready snapshot.

    ``running``, ``held_slots`` and ``tasks_by_status`` describe state and survive ``reset()``;
    every other field is a counter that ``reset()`` zeroes (``peak_running`` restarts at the
    current ``running``).
    """

    requests: Counter[str] = field(default_factory=Counter)
    accepted_creates: int = 0
    creates_by_external_id: Counter[str] = field(default_factory=Counter)
    creates_by_prompt: Counter[str] = field(default_factory=Counter)
    rejected_concurrency: int = 0
    rejected_rate: int = 0
    errors_by_code: Counter[int] = field(default_factory=Counter)
    faults_injected: Counter[str] = field(default_factory=Counter)
    peak_running: int = 0
    running: int = 0
    held_slots: int = 0
    tasks_by_status: Counter[str] = field(
        default_factory=lambda: Counter(
            dict.fromkeys(("submitted", "processing", "succeed", "failed"), 0)
        )
    )
    video_bytes_served: int = 0
    video_auth_headers: int = 0
    callbacks_sent: int = 0
    callbacks_failed: int = 0
    #: API requests that arrived while the API origin was down (dropped without an answer).
    outage_drops: int = 0
    #: With ``record_bodies``: one dict per create body received (content_length, chunked,
    #: size, sha256), in arrival order.
    create_bodies: list[dict[str, Any]] = field(default_factory=list)

    def record_error(self, code: int) -> None:
        """Count one error answer by business code."""
        self.errors_by_code[code] += 1
        if code == 1303:
            self.rejected_concurrency += 1
        elif code == 1302:
            self.rejected_rate += 1

    def task_started(self) -> None:
        """A task took a slot."""
        self.running += 1
        self.peak_running = max(self.peak_running, self.running)

    def reset(self) -> None:
        """Zero the counters; keep the state fields."""
        fresh = SimulatorStats(
            running=self.running,
            held_slots=self.held_slots,
            tasks_by_status=self.tasks_by_status,
            peak_running=self.running,
        )
        self.__dict__.update(fresh.__dict__)

    def as_dict(self) -> dict[str, Any]:
        """A deep-copied plain-dict snapshot (Counters become dicts)."""
        # dataclasses.asdict would rebuild Counters from (key, value) pairs: copy by hand.
        return {f.name: _copy(getattr(self, f.name)) for f in fields(self)}
