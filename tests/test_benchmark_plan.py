"""The benchmark harness: one client's failed run is reported, and every other run still goes."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import _plan
from benchmarks._report import summary
from benchmarks._rows import build_rows
from benchmarks._scenarios import Run, Scenario


def test_a_failed_run_is_recorded_and_the_plan_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []

    def run_client(client: str, scenario: Scenario, work: Path) -> Run:
        calls.append((scenario.name, client))
        raise RuntimeError(f"{client} run {scenario.name!r} failed (1):\nTimeoutError")

    monkeypatch.setattr(_plan, "run_client", run_client)
    monkeypatch.setattr(_plan, "_make_images", lambda plan, image_dir: None)
    lines: list[str] = []
    plan = _plan.build_plan(quick=True)
    results = _plan.run_plan(plan, tmp_path, lines.append, frozenset({"known", "unknown"}))

    assert calls == [(k, c) for k in ("known", "unknown") for c in ("kling-async", "baseline")]
    assert set(results.failures) == set(calls)
    assert "TimeoutError" in results.failures["known", "baseline"]
    assert sum("FAILED" in line for line in lines) == 4
    doc = summary(results, build_rows(results))
    assert doc["failed_runs"]["unknown/baseline"].startswith("baseline run 'unknown' failed")
    assert doc["makespan_ratio"] is None
