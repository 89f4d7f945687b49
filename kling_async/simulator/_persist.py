"""Saved state: the simulated account's tasks kept in a file, so a restarted simulator has them.

The file is append-only JSON lines: a header, one line per created task (ids, request, times and
its planned lifecycle), and one line per start naming the video origin's port. A task's status
is never written: it follows from its plan and the wall clock, so a restarted simulator carries
every task on by elapsed time, and the file is written once per create, before the answer
leaves (a client that heard of a task always finds it again), never on a status change.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import IO, Any

from ._state import Task, TaskStore
from ._validate import CreateRequest

__all__ = ["SavedState"]

_HEADER = {"kling_async_simulator_state": 1}
# Everything that defines a task, its plan and its price; not what follows from the clock.
_TASK_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(Task)
    if f.name not in {"request", "updated_ms", "status", "status_msg", "handles"}
)


class SavedState:
    """The state file of one simulator: ``load()`` reads it, ``attach(store, port)`` hands the
    saved tasks to the store and records every new one from then on."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._tasks: list[Task] = []
        self._file: IO[str] | None = None

    def load(self) -> int | None:
        """Read the saved tasks (nothing changes yet); the port the video links point at."""
        self._tasks, video_port = self._read()
        return video_port

    def attach(self, store: TaskStore, video_port: int) -> None:
        """Give ``store`` the loaded tasks, note the video port, and record each new task."""
        for task in self._tasks:
            store.adopt(task)
        self._tasks = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Line-buffered appends: each record reaches the OS before the create is answered, so
        # a killed simulator loses none (a crash of the machine itself is out of scope).
        self._file = self.path.open("a", encoding="utf-8", buffering=1)
        if self._file.tell() == 0:
            self._write(_HEADER)
        self._write({"video_port": video_port})
        store.on_create = self.record_task

    def record_task(self, task: Task) -> None:
        """Append a new task (called before it is answered)."""
        record = {name: getattr(task, name) for name in _TASK_FIELDS}
        record["request"] = dataclasses.asdict(task.request)
        self._write({"task": record})

    def close(self) -> None:
        """Close the file (records already written stay)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            raise RuntimeError("SavedState.attach() first")
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def _read(self) -> tuple[list[Task], int | None]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], None
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) < len(data):  # a write cut short by a kill: drop the partial line
            with self.path.open("r+b") as fh:
                fh.truncate(len(complete))
        lines = complete.decode("utf-8").splitlines()
        if lines and json.loads(lines[0]) != _HEADER:
            raise ValueError(f"{self.path}: not a simulator state file (or another version)")
        tasks: list[Task] = []
        video_port: int | None = None
        for number, line in enumerate(lines[1:], start=2):
            try:
                record = json.loads(line)
                if "video_port" in record:
                    video_port = int(record["video_port"])
                    continue
                fields = record["task"]
                request = CreateRequest(**fields.pop("request"))
                tasks.append(Task(request=request, updated_ms=fields["created_ms"], **fields))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{self.path}, line {number}: unreadable record: {exc}") from None
        return tasks, video_port
