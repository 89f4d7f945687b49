"""Tasks running over time, kling-async vs the baseline, with the account's cap: SVG charts.

Drawn from the simulator's per-task timestamps (created_at, updated_at), relative to each client's
start. Needs matplotlib (`pip install -e ".[bench]"`); without it nothing is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ._scenarios import Run, capacity_segments

__all__ = ["CHARTS", "draw_charts", "running_steps"]

#: Scenario key → (file name, title).
CHARTS = {
    "known": ("running_known_cap.svg", "known cap"),
    "changing": ("running_changing_cap.svg", "cap changing mid-run"),
}


def running_steps(spans: Sequence[tuple[float, float]]) -> tuple[list[float], list[int]]:
    """(times, tasks running from each time on): a step function of the spans."""
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    times, counts, running = [0.0], [0], 0
    for at, change in events:
        running += change
        times.append(at)
        counts.append(running)
    return times, counts


def _cap_steps(run: Run, end: float) -> tuple[list[float], list[int]]:
    times, caps = [], []
    for at, cap in capacity_segments(run.scenario):
        times.append(at)
        caps.append(cap)
    times.append(end)
    caps.append(caps[-1])
    return times, caps


def draw_charts(runs: dict[tuple[str, str], Run], out_dir: Path) -> list[Path]:
    """Draw each chart whose runs are there; returns the files written ([] without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key, (name, title) in CHARTS.items():
        pair = [(client, runs.get((key, client))) for client in ("kling-async", "baseline")]
        if any(run is None or not run.spans for _, run in pair):
            continue
        fig, ax = plt.subplots(figsize=(9, 3.6))
        end = 0.0
        for (client, run), colour in zip(pair, ("tab:blue", "tab:orange"), strict=True):
            assert run is not None
            times, counts = running_steps(run.spans)
            label = f"{client}: {run.result.wall_s:.1f} s ({run.makespan_ratio:.3f} × bound)"
            ax.step(times, counts, where="post", color=colour, lw=0.9, label=label)
            end = max(end, run.result.wall_s)
        first = pair[0][1]
        assert first is not None
        times, caps = _cap_steps(first, end)
        ax.step(times, caps, where="post", color="black", ls="--", lw=1.2, label="account cap")
        ax.axvline(first.bound_s, color="grey", lw=0.8, ls=":", label="ideal makespan (bound)")
        ax.set_xlabel("seconds since the client started")
        ax.set_ylabel("tasks running")
        sc = first.scenario
        ax.set_title(f"Tasks running, {title}: M={sc.jobs}, T≈{sc.gen_seconds:g} s")
        ax.set_ylim(0, max(caps) + 2)
        ax.set_xlim(0, end * 1.01)
        ax.legend(loc="lower center", fontsize=8, ncol=2)
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, format="svg")
        plt.close(fig)
        written.append(path)
    return written
