"""Helpers of the fault, crash and disk tests (on top of batch_helpers)."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import by_line, collect, simulators

from kling_async import BatchResult, Client, run_batch
from kling_async.simulator import Simulator

StartSim = Callable[..., Awaitable[Simulator]]

#: Faults injected over the run, by fault name (written to $KLING_FAULT_TALLY if set, so a
#: report can quote the numbers; the tests never depend on it).
TALLY: Counter[str] = Counter()


def tally(stats: dict[str, Any]) -> dict[str, Any]:
    """Add a simulator stats snapshot's injected faults to the tally; return the snapshot."""
    TALLY.update(stats["faults_injected"])
    path = os.environ.get("KLING_FAULT_TALLY")
    if path:
        Path(path).write_text(json.dumps(dict(TALLY), sort_keys=True), encoding="utf-8")
    return stats


@pytest.fixture
async def start_sim() -> AsyncIterator[StartSim]:
    """`await start_sim(**config)`: a running simulator (test defaults), stopped at teardown."""
    async with simulators(on_stop=lambda sim: tally(sim.stats.as_dict())) as start:
        yield start


async def run(
    client: Client, jobs: Any, out: Path, timeout: float = 20.0, **kw: Any
) -> dict[int, BatchResult]:
    """Run a batch to its end; results by line."""
    return by_line(await collect(run_batch(client, jobs, out, **kw), timeout))


def not_ok(results: dict[int, BatchResult]) -> list[tuple[int, str, Any]]:
    """(line, state, error) of every job that has no video on disk: for assertion messages."""
    return [(r.line, r.state, r.error) for r in results.values() if not r.ok]
