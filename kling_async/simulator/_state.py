"""Tasks, account slots and the task lifecycle (timers free slots the moment a task ends)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from ._clock import SimClock
from ._config import SimulatorConfig
from ._protocol import SimError
from ._stats import SimulatorStats
from ._validate import CreateRequest

__all__ = ["TERMINAL", "Task", "TaskStore"]

TERMINAL = frozenset({"succeed", "failed"})
# Snowflake-like ids: milliseconds since this epoch, shifted left by 22 bits, plus a sequence.
_ID_EPOCH_MS = 1_288_834_974_657
_ID_SHIFT = 22


@dataclass(slots=True, eq=False)
class Task:
    """One generation task and its planned outcome."""

    seq: int
    task_id: str
    request: CreateRequest
    created_ms: int
    updated_ms: int
    video_id: str
    will_fail: bool
    fail_message: str
    start_ms: int  # planned: processing begins (simulator clock)
    finish_ms: int  # planned: the task ends, succeeded or failed
    units: str = "1"  # the price when created; charged only if it succeeds
    status: str = "submitted"
    status_msg: str = ""
    handles: list[asyncio.TimerHandle] = field(default_factory=list)

    @property
    def external_task_id(self) -> str | None:
        """The caller's id, if any."""
        return self.request.external_task_id

    @property
    def video_duration(self) -> str:
        """Video length in seconds, as the API's string."""
        return f"{self.request.duration}.1"

    @property
    def final_unit_deduction(self) -> str:
        """Units charged: the price table's, fixed at creation; "0" unless it succeeded."""
        return self.units if self.status == "succeed" else "0"


class TaskStore:
    """All tasks of the one simulated account, with concurrency accounting."""

    def __init__(
        self,
        config: SimulatorConfig,
        clock: SimClock,
        stats: SimulatorStats,
        on_change: Callable[[Task], None] | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._stats = stats
        self._on_change = on_change
        self.concurrency = config.concurrency
        self.fail_rate = config.fail_rate
        self.gen_seconds = config.gen_seconds
        self.prices = dict(config.prices)
        stats.held_slots = config.held_slots
        self._tasks: list[Task] = []
        self._by_id: dict[str, Task] = {}
        self._by_external: dict[str, Task] = {}
        self._by_video: dict[str, Task] = {}
        self._last_id = 0
        self._closed = False
        #: Called with each new task before it exists or is answered (saved state appends it).
        self.on_create: Callable[[Task], None] | None = None

    @property
    def held_slots(self) -> int:
        """Slots taken by "someone else" on the same account."""
        return self._stats.held_slots

    @held_slots.setter
    def held_slots(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"held_slots must be >= 0, got {value}")
        self._stats.held_slots = value

    @property
    def running(self) -> int:
        """Own tasks currently holding a slot."""
        return self._stats.running

    def __len__(self) -> int:
        return len(self._tasks)

    def _new_id(self, now_ms: int) -> str:
        self._last_id = max(self._last_id + 1, (now_ms - _ID_EPOCH_MS) << _ID_SHIFT)
        return str(self._last_id)

    def create(self, request: CreateRequest) -> Task:
        """Create a task or raise SimError 1201 (duplicate external id) / 1303 (no slot)."""
        ext = request.external_task_id
        if ext is not None and ext in self._by_external:
            raise SimError(1201, f"external_task_id already exists: {ext!r}")
        if self._stats.running + self.held_slots >= self.concurrency:
            raise SimError(1303, "parallel task over resource pack limit")
        seq = len(self._tasks) + 1
        # Per-task randomness from seed + sequence, drawn in a fixed order: reproducible runs.
        rng = random.Random(f"{self._config.seed}:{seq}")
        spread = self._config.gen_spread
        total = self.gen_seconds * rng.uniform(1.0 - spread, 1.0 + spread)
        if request.mode == "pro":
            total *= self._config.pro_factor
        if request.duration == "10":
            total *= self._config.long_factor
        fails = rng.random() < self.fail_rate
        message = rng.choice(self._config.failure_messages)
        video_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        now_ms = self._clock.now_ms()
        task = Task(
            seq=seq,
            task_id=self._new_id(now_ms),
            request=request,
            created_ms=now_ms,
            updated_ms=now_ms,
            video_id=video_id,
            will_fail=fails,
            fail_message=message,
            start_ms=now_ms + round(total * self._config.queue_fraction * 1000),
            finish_ms=now_ms + round(total * 1000),
            units=self.prices[f"{request.mode}-{request.duration}"],
        )
        if self.on_create is not None:
            self.on_create(task)
        self._add(task)
        self._notify(task)
        return task

    def adopt(self, task: Task) -> None:
        """Take over a task from an earlier run (saved state): its status follows its plan and
        the clock, what is left of its lifecycle runs on from here, and the counters count it
        as one of the account's tasks, so they cover every run."""
        now_ms = self._clock.now_ms()
        if now_ms >= task.finish_ms:
            task.status = "failed" if task.will_fail else "succeed"
            task.status_msg = task.fail_message if task.will_fail else ""
            task.updated_ms = task.finish_ms
        elif now_ms >= task.start_ms:
            task.status, task.updated_ms = "processing", task.start_ms
        self._last_id = max(self._last_id, int(task.task_id))
        self._add(task)

    def _add(self, task: Task) -> None:
        """Index a task, count it, and time what is left of its lifecycle."""
        self._tasks.append(task)
        self._by_id[task.task_id] = task
        self._by_video[task.video_id] = task
        ext = task.external_task_id
        if ext is not None:
            self._by_external[ext] = task
        stats = self._stats
        stats.tasks_by_status[task.status] += 1
        stats.accepted_creates += 1
        stats.creates_by_prompt[task.request.prompt] += 1
        if ext is not None:
            stats.creates_by_external_id[ext] += 1
        if task.status in TERMINAL:
            return
        stats.task_started()
        self._schedule(task)

    def _schedule(self, task: Task) -> None:
        """Time what is left of the task's lifecycle by the simulator clock as it is now."""
        for handle in task.handles:
            handle.cancel()
        loop, now_ms = asyncio.get_running_loop(), self._clock.now_ms()
        task.handles = [
            loop.call_later(max(0, due - now_ms) / 1000, step, task)
            for due, step in (
                (task.start_ms, self._start_processing),
                (task.finish_ms, self._finish),
            )
        ]

    def clock_moved(self) -> None:
        """The clock was advanced: a running task whose finish time has passed ends now (as
        its timestamps say), the others as planned on the new time."""
        for task in self._tasks:
            if task.handles:
                self._schedule(task)

    def _set_status(self, task: Task, status: str) -> None:
        self._stats.tasks_by_status[task.status] -= 1
        self._stats.tasks_by_status[status] += 1
        task.status = status
        task.updated_ms = self._clock.now_ms()

    def _start_processing(self, task: Task) -> None:
        if task.status == "submitted":
            self._set_status(task, "processing")
            self._notify(task)

    def _finish(self, task: Task) -> None:
        if task.status in TERMINAL:
            return
        if task.will_fail:
            task.status_msg = task.fail_message
            self._set_status(task, "failed")
        else:
            self._set_status(task, "succeed")
        task.handles = []
        self._stats.running -= 1
        self._notify(task)

    def _notify(self, task: Task) -> None:
        if self._on_change is not None and not self._closed:
            self._on_change(task)

    def get(self, ident: str) -> Task | None:
        """Look a task up by task_id, then by external_task_id."""
        return self._by_id.get(ident) or self._by_external.get(ident)

    def by_video(self, video_id: str) -> Task | None:
        """The task that owns ``video_id``."""
        return self._by_video.get(video_id)

    def page(self, page_num: int, page_size: int) -> list[Task]:
        """One page of tasks, newest first."""
        end = len(self._tasks) - (page_num - 1) * page_size
        if end <= 0:
            return []
        start = max(0, end - page_size)
        return self._tasks[start:end][::-1]

    def close(self) -> None:
        """Cancel every pending lifecycle timer (tasks stay where they are)."""
        self._closed = True
        for task in self._tasks:
            for handle in task.handles:
                handle.cancel()
            task.handles = []
