"""The table's rows: one metric each, with kling-async, baseline, its bound or limit, target."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

from ._download import download_limit
from ._plan import Results
from ._scenarios import Run

__all__ = ["BASE", "KA", "Row", "build_rows", "frontier_product"]

KA, BASE = "kling-async", "baseline"


@dataclass(frozen=True, slots=True)
class Row:
    """One metric. `ref` is the bound or limit it is held to; `target` says how (≤ or ≥)."""

    metric: str
    ours: float | None
    base: float | None
    ref: float | None = None
    target: str = ""  # "<=" or ">=" against ref, or "" for information only
    digits: int = 3
    section: str = ""

    @property
    def ratio(self) -> float | None:
        """kling-async ÷ baseline."""
        if self.ours is None or self.base is None or self.base == 0:
            return None
        return self.ours / self.base

    @property
    def met(self) -> bool | None:
        """Whether kling-async meets its target (None if the row has none)."""
        if not self.target or self.ours is None or self.ref is None:
            return None
        return self.ours <= self.ref if self.target == "<=" else self.ours >= self.ref


def frontier_product(run: Run) -> float:
    """(makespan ÷ zero-latency greedy − 1) × status requests per job: ≈ 1/(2N) for uniform
    polling, whatever the interval."""
    return (run.greedy_ratio - 1) * run.status_per_job


def _runs(results: Results, key: str) -> tuple[Run | None, Run | None]:
    return results.runs.get((key, KA)), results.runs.get((key, BASE))


def _row(results: Results, key: str, label: str, metric: Any, **kw: Any) -> Row:
    ours, base = _runs(results, key)
    return Row(label, metric(ours) if ours else None, metric(base) if base else None, **kw)


def _rss_row(results: Results, key: str, label: str, sec: str, target: str = "<=") -> Row:
    """The client's peak RSS in a scenario, held to 150 MB."""
    return _row(
        results,
        key,
        f"client peak RSS MB, {label}",
        lambda r: r.result.peak_rss_mb,
        ref=150.0,
        target=target,
        digits=1,
        section=sec,
    )


def build_rows(results: Results) -> list[Row]:
    """Every row of the table, in order."""
    p = results.plan
    rows: list[Row] = []
    cases = (
        ("known", f"known cap, M={p.m_small}", 1.03),
        ("known_large", f"known cap, M={p.m_large}", 1.03),
        ("unknown", f"unknown cap (set {2 * p.n}, account {p.n}), M={p.m_small}", 1.05),
        ("changing", f"changing cap (4 held, freed, cap +4), M={p.m_small}", 1.05),
        ("cap_falls", f"cap falls 8 → 2 halfway, M={p.m_fall}", None),
        ("slots_taken", f"3 of 6 slots taken a quarter in, M={p.m_fall}", None),
        ("callbacks", f"known cap with callbacks, M={p.m_large}", None),
    )
    sec = f"1-2 makespan ÷ ideal (N={p.n}, T≈{p.t:g} s ±20 %)"
    for key, label, limit in cases:
        bound = _runs(results, key)[0]
        rows.append(
            _row(
                results,
                key,
                f"makespan s, {label}",
                lambda r: r.result.wall_s,
                digits=2,
                ref=bound.bound_s if bound else None,
                section=sec,
            )
        )
        rows.append(
            _row(
                results,
                key,
                "  ÷ bound max(ΣT_i/N, max T_i)",
                lambda r: r.makespan_ratio,
                ref=limit,
                target="<=" if limit else "",
                section=sec,
            )
        )
        rows.append(
            _row(
                results,
                key,
                "  ÷ zero-latency greedy (info)",
                lambda r: r.greedy_ratio,
                ref=bound.greedy_s / bound.bound_s if bound else None,
                section=sec,
            )
        )
    sec = "2-3 API cost (requests per job, counted by the simulator)"
    for key, label, limit in (
        ("unknown", "unknown cap", 0.05),
        ("changing", "changing cap", 0.05),
        ("cap_falls", "cap falls 8 → 2", 0.1),
        ("slots_taken", "3 of 6 slots taken", 0.1),
    ):
        rows.append(
            _row(
                results,
                key,
                f"1303 answers / job, {label}",
                lambda r: r.rejected_per_job,
                ref=limit,
                target="<=",
                section=sec,
            )
        )
    main = "known_large"
    for kind in ("create", "query", "list"):
        rows.append(
            _row(
                results,
                main,
                f"{kind} requests / job, M={p.m_large}",
                lambda r, k=kind: r.per_job(k),
                section=sec,
            )
        )
    for key, label in (
        ("known_large", f"known cap M={p.m_large}"),
        ("known", f"M={p.m_small}"),
        ("unknown", "unknown cap"),
        ("changing", "changing cap"),
        ("huge", f"M={p.m_huge}"),
        ("callbacks", f"callbacks, M={p.m_large}"),
    ):
        rows.append(
            _row(
                results,
                key,
                f"status requests / job, {label}",
                lambda r: r.status_per_job,
                ref=0.2 if key == "callbacks" else 0.5,
                target="<=",
                section=sec,
            )
        )
    rows.append(
        _row(
            results,
            main,
            "(makespan÷bound − 1) × status/job",
            lambda r: (r.makespan_ratio - 1) * r.status_per_job,
            ref=1 / (2 * p.n),
            section=sec,
        )
    )
    greedy = operator.attrgetter("greedy_ratio")
    for key, label, metric, ref in (
        (
            main,
            f"polling frontier: (makespan÷greedy − 1) × status/job, N={p.n}",
            frontier_product,
            0.045,
        ),
        (main, "  makespan ÷ greedy at that point", greedy, 1.02),
        ("callbacks", "  the same product with callbacks", frontier_product, None),
        ("callbacks", "  makespan ÷ greedy with callbacks", greedy, 1.01),
    ):
        target = "<=" if ref else ""
        rows.append(_row(results, key, label, metric, ref=ref, target=target, section=sec))
    sec = "4 client overhead (CPU user+sys of the client process, all threads; peak RSS = VmHWM)"
    for key, label in (
        ("known_large", f"M={p.m_large}, URL images"),
        ("huge", f"M={p.m_huge}, URL images, N={p.huge_n}, T={p.huge_t:g} s"),
    ):
        rows.append(
            _row(
                results,
                key,
                f"client CPU ms / job, {label}",
                lambda r: r.cpu_ms_per_job,
                # issue 18: ≤ 1.5 ms per job at 10,000 jobs; the 1000-job run is shown for context
                ref=1.5 if key == "huge" else None,
                target="<=" if key == "huge" else "",
                section=sec,
            )
        )
        rows.append(_rss_row(results, key, label, sec, target="<=" if key == "huge" else ""))
    mb = p.image_bytes / 1e6
    for key, label in (("images_same", "same 4 files"), ("images_distinct", "distinct files")):
        ours = results.runs.get((key, KA))
        base = results.runs.get(("images_same", BASE))  # no cache: same cost either way
        rows.append(
            Row(
                f"client peak RSS MB, 4×{mb:g} MB images, {label}, M={p.m_images}",
                ours.result.peak_rss_mb if ours else None,
                base.result.peak_rss_mb if base else None,
                digits=1,
                section=sec,
            )
        )
        rows.append(
            Row(
                f"client CPU ms / job, 4×{mb:g} MB images, {label}",
                ours.cpu_ms_per_job if ours else None,
                base.cpu_ms_per_job if base else None,
                digits=2,
                section=sec,
            )
        )
    small = results.runs.get(("images_small", KA))
    if small is not None:
        rows.append(
            Row(
                f"client peak RSS MB, same 4 files, M={small.scenario.jobs} (flat in M?)",
                small.result.peak_rss_mb,
                None,
                digits=1,
                section=sec,
            )
        )
    rows += _body_rows(results)
    rows += _throttled_rows(results)
    rows += _download_rows(results)
    return rows


def _throttled_rows(results: Results) -> list[Row]:
    """The account answers 1302 above R requests/s: how many 1302s, and how near R's bound."""
    p = results.plan
    if _runs(results, "throttled") == (None, None):
        return []
    sec = (
        f"7 request-rate limit: 1302 above R={p.throttled_rate:g}/s, N={p.throttled_n}, "
        f"M={p.m_throttled}, T≈{p.t:g} s"
    )
    ours = _runs(results, "throttled")[0]
    return [
        _row(
            results,
            "throttled",
            "makespan s (ref: what R allows, max over k of ⌊k/R⌋ + T_k)",
            lambda r: r.result.wall_s,
            ref=ours.rate_bound_s if ours else None,
            digits=2,
            section=sec,
        ),
        _row(
            results,
            "throttled",
            "  ÷ what R allows (– when jobs were lost)",
            lambda r: r.rate_ratio if r.result.jobs_ok == r.scenario.jobs else None,
            ref=1.1,
            target="<=",
            section=sec,
        ),
        _row(
            results,
            "throttled",
            "1302 answers / job",
            lambda r: r.throttled_per_job,
            ref=0.1,
            target="<=",
            section=sec,
        ),
        _row(
            results,
            "throttled",
            "  API requests / job (create + status, info)",
            lambda r: r.per_job("create") + r.status_per_job,
            section=sec,
        ),
        _row(
            results,
            "throttled",
            "  jobs downloaded (of M)",
            lambda r: float(r.result.jobs_ok),
            ref=float(p.m_throttled),
            target=">=",
            digits=0,
            section=sec,
        ),
    ]


def _body_rows(results: Results) -> list[Row]:
    p = results.plan
    mb = p.body_image_bytes / 1e6
    sec = f"6 create bodies: 4 × {mb:g} MB images per job, T≈{p.body_t:g} s"
    rows: list[Row] = []
    for key, label in (
        ("bodies_8", f"distinct images, N=8, M={p.m_bodies_8}"),
        ("bodies_50", f"distinct images, N=50, M={p.m_bodies_50}"),
        ("bodies_50_shared", f"same 4 files, N=50, M={p.m_bodies_50}"),
    ):
        if _runs(results, key) == (None, None):
            continue
        rows.append(_rss_row(results, key, label, sec))
        rows.append(
            _row(results, key, "  makespan ÷ bound", lambda r: r.makespan_ratio, section=sec)
        )
        rows.append(
            _row(
                results,
                key,
                "  simulator peak RSS MB (info)",
                lambda r: r.sim_peak_rss_mb,
                digits=1,
                section=sec,
            )
        )
    return rows


def _download_rows(results: Results) -> list[Row]:
    d = results.downloads
    if not d:
        return []
    gb = results.plan.video_bytes / 1e9
    sec = f"5 downloads ({gb:g} GB simulated video; best of {results.plan.download_repeats})"
    raw = d["raw-disk"].mb_per_s
    ours, base = d["kling-async"], d["baseline"]
    rows = [
        Row(
            "download MB/s (ref: raw aiohttp iter_chunked → disk)",
            ours.mb_per_s,
            base.mb_per_s,
            raw,
            digits=0,
            section=sec,
        ),
        Row(
            "  ÷ raw aiohttp → disk (info)",
            ours.mb_per_s / raw,
            base.mb_per_s / raw,
            section=sec,
        ),
        Row(
            "  ÷ raw aiohttp + sha256 + fsync inline (same work, info)",
            ours.mb_per_s / d["raw-same-work"].mb_per_s,
            base.mb_per_s / d["raw-same-work"].mb_per_s,
            section=sec,
        ),
        Row(
            "  raw aiohttp, discarding bytes (info)",
            None,
            None,
            d["raw-discard"].mb_per_s,
            digits=0,
            section=sec,
        ),
    ]
    lim = download_limit(d)
    if lim is not None:
        rows += [
            Row(
                "  sha256 on one core, in memory (info)",
                None,
                None,
                lim[2],
                digits=0,
                section=sec,
            ),
            Row(
                "  ÷ limit = min(raw → disk, sha256 one core)",
                lim[3],
                base.mb_per_s / min(lim[1], lim[2]),
                0.9,
                ">=",
                section=sec,
            ),
        ]
    if "curl" in d:
        rows.append(
            Row("  curl -o file (info)", None, None, d["curl"].mb_per_s, digits=0, section=sec)
        )
    rows.append(
        Row(
            f"peak RSS MB while downloading {gb:g} GB",
            ours.peak_rss_mb,
            base.peak_rss_mb,
            100.0,
            "<=",
            digits=1,
            section=sec,
        )
    )
    rows.append(
        Row("download CPU s", ours.cpu_s, base.cpu_s, d["raw-disk"].cpu_s, digits=2, section=sec)
    )
    return rows
