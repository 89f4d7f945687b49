"""The results table (rows: metric; columns: kling-async, baseline, bound/limit, ratio) and JSON."""

from __future__ import annotations

import math
import os
import platform
from datetime import UTC, datetime
from typing import Any

from ._download import download_limit
from ._plan import Results
from ._rows import BASE, KA, Row, frontier_product

__all__ = ["footnote", "machine_facts", "render", "summary"]


def _fmt(value: float | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def render(rows: list[Row]) -> str:
    """A Markdown table, one sub-heading row per section."""
    head = "| metric | kling-async | baseline | bound / limit | ratio (ka÷base) | target |"
    lines = [head, "|---|--:|--:|--:|--:|:-:|"]
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            lines.append(f"| **{section}** | | | | | |")
        ref = _fmt(row.ref, row.digits)
        if row.target:
            ref = f"{'≤' if row.target == '<=' else '≥'} {ref}"
        met = {True: "met", False: "**MISSED**", None: ""}[row.met]
        lines.append(
            f"| {row.metric} | {_fmt(row.ours, row.digits)} | {_fmt(row.base, row.digits)} | "
            f"{ref} | {_fmt(row.ratio, 2)} | {met} |"
        )
    return "\n".join(lines)


def footnote(results: Results) -> str:
    """How to read the table."""
    p = results.plan
    s = p.t / 120
    return "\n".join(
        [
            f"Time is compressed: T≈{p.t:g} s stands for Kling's ~120 s, so every absolute time "
            f"constant on BOTH sides is scaled by T/120 = {s:.4g} (baseline: 5 s poll → "
            f"{5 * s:.3g} s; kling-async: poll/retry intervals, slot-gate probe interval, rps).",
            "Bound = max(ΣT_i/N, max T_i) from the simulator's per-task generation times "
            "(updated_at − created_at; identical for both clients: fresh simulator, same seed). "
            "With a changing cap the bound integrates the capacity over time. The zero-latency "
            "greedy schedule (refill each slot the instant it frees) is the best any client that "
            "does not know durations in advance can do; it exceeds the bound by the last wave's "
            "tail, ≈ N/(2M).",
            "Theory: with uniform polling every Δ, a completion is noticed Δ/2 late on average, "
            "so makespan÷bound − 1 ≈ Δ/(2T); one list sweep per Δ serves N tasks, so status "
            f"requests/job ≈ T/(NΔ): their product ≈ 1/(2N) = {1 / (2 * p.n):.3f} (per-task "
            "polling: ≈ 1/2). The polling frontier row measures it against the zero-latency "
            "greedy schedule (the bound also holds the last wave's tail, which no polling "
            "removes). kling-async sweeps once the slot-time that completions not yet seen are "
            "expected to have cost (from the learnt durations) is worth a request; with "
            "callbacks (a CallbackReceiver on 127.0.0.1; the simulator POSTs each status change) "
            "a claimed end frees the slot at once and polling is the safety net.",
            "Baseline: asyncio.gather over per-job coroutines, Semaphore(N) held from create to "
            "terminal state, per-task GET every 5 s×T/120, 1303 retried with jittered exponential "
            "back-off, `await resp.read()` downloads; plain aiohttp + pyjwt.",
            f"Create bodies: 4 images of {p.body_image_bytes / 1e6:g} MB per job (≈ "
            f"{4 * 4 / 3 * p.body_image_bytes / 1e6:.0f} MB of JSON), T≈{p.body_t:g} s (uploads "
            "are not time-compressed, so a longer T keeps them from dominating); distinct = hard "
            "links (distinct paths, nothing deduplicated). The simulator's own peak RSS shows it "
            "reads those bodies in bounded memory too.",
            "Downloads: kling-async = stream_to_file (1 MiB chunks; sha256 of every byte and the "
            "writes on two worker threads beside the read; length check, fsync, atomic rename). "
            "raw = aiohttp iter_chunked(1 MiB) with plain f.write on the loop (no hash, no fsync). "
            "baseline = await resp.read() + one write. same-work = raw + sha256 + fsync inline on "
            "the loop. sha256 = hashlib over the same bytes in memory on one thread. Limit = the "
            "slower of the bare read and sha256: hashing every byte, no download can pass it. "
            "Client and simulator share the machine's cores (CPU-bound on 2 cores).",
        ]
    )


def machine_facts() -> dict[str, Any]:
    """Where and when this ran."""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def summary(results: Results, rows: list[Row]) -> dict[str, Any]:
    """The JSON document: the issue's top-level keys, then every row and run."""

    def get(key: str, client: str, metric: Any) -> float | None:
        run = results.runs.get((key, client))
        return None if run is None else float(metric(run))

    d = results.downloads
    raw = d["raw-disk"].mb_per_s if d else None
    out: dict[str, Any] = {
        "makespan_ratio": get("known_large", KA, lambda r: r.makespan_ratio),
        "baseline_makespan_ratio": get("known_large", BASE, lambda r: r.makespan_ratio),
        "rejected_creates_per_job": get("unknown", KA, lambda r: r.rejected_per_job),
        "status_requests_per_job": get("known_large", KA, lambda r: r.status_per_job),
        "baseline_status_requests_per_job": get("known_large", BASE, lambda r: r.status_per_job),
        "client_cpu_ms_per_job": get("huge", KA, lambda r: r.cpu_ms_per_job),
        "client_peak_rss_mb": get("huge", KA, lambda r: r.result.peak_rss_mb),
        "download_throughput_ratio": d["kling-async"].mb_per_s / raw if d and raw else None,
        "download_peak_rss_mb": d["kling-async"].peak_rss_mb if d else None,
        "polling_frontier_product": get("known_large", KA, frontier_product),
        "polling_frontier_n": results.plan.n,
        "callback_status_requests_per_job": get("callbacks", KA, lambda r: r.status_per_job),
        "callback_makespan_greedy_ratio": get("callbacks", KA, lambda r: r.greedy_ratio),
        "changing_cap_makespan_ratio": get("changing", KA, lambda r: r.makespan_ratio),
        "baseline_changing_cap_makespan_ratio": get("changing", BASE, lambda r: r.makespan_ratio),
        "download_limit_ratio": None if (lim := download_limit(d)) is None else lim[3],
    }
    out["quick"] = results.plan.quick
    out["machine"] = machine_facts()
    out["rows"] = [
        {
            "metric": r.metric.strip(),
            "section": r.section,
            "kling_async": r.ours,
            "baseline": r.base,
            "bound_or_limit": r.ref,
            "target": r.target,
            "met": r.met,
        }
        for r in rows
    ]
    out["runs"] = {
        f"{key}/{client}": {
            "jobs": run.scenario.jobs,
            "wall_s": run.result.wall_s,
            "bound_s": run.bound_s,
            "greedy_s": run.greedy_s,
            "makespan_ratio": run.makespan_ratio,
            "greedy_ratio": run.greedy_ratio,
            "cpu_ms_per_job": run.cpu_ms_per_job,
            "peak_rss_mb": run.result.peak_rss_mb,
            "sim_peak_rss_mb": run.sim_peak_rss_mb,
            "requests_per_job": {k: run.per_job(k) for k in ("create", "query", "list", "video")},
            "rejected_per_job": run.rejected_per_job,
            "jobs_ok": run.result.jobs_ok,
            "client_extra": run.result.extra,
        }
        for (key, client), run in results.runs.items()
    }
    out["failed_runs"] = {f"{key}/{client}": why for (key, client), why in results.failures.items()}
    out["downloads"] = {
        mode: {
            "mb_per_s": dl.mb_per_s,
            "seconds": dl.seconds,
            "cpu_s": dl.cpu_s,
            "peak_rss_mb": dl.peak_rss_mb,
        }
        for mode, dl in d.items()
    }
    return out
