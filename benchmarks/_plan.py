"""Which scenarios a run measures (full or --quick), and running them all in order."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ._common import make_png
from ._download import DownloadRun, run_downloads
from ._scenarios import Run, Scenario, run_client

__all__ = ["KEYS", "Plan", "Results", "build_plan", "run_plan"]


@dataclass(frozen=True, slots=True)
class Plan:
    """Sizes for one benchmark run."""

    quick: bool
    n: int = 10
    t: float = 2.0
    m_small: int = 200
    m_large: int = 1000
    m_huge: int = 10_000
    huge_n: int = 50
    huge_t: float = 0.25
    m_images: int = 100
    m_fall: int = 100  # the cap falls 8 → 2, or someone else takes 3 of 6 slots
    image_bytes: int = 5_000_000
    #: Create bodies of ~54 MB: 4 images of this size per job (issue 16).
    body_image_bytes: int = 9_000_000
    body_t: float = 10.0
    m_bodies_8: int = 24
    m_bodies_50: int = 100
    video_bytes: int = 1_000_000_000
    download_repeats: int = 3
    dry_run_lines: int = 10_000  # `run --dry-run` of a job file sharing four images
    #: The account answers 1302 above `rate` requests/s (all API routes); slots are plenty
    #: (N = 50 > R·T), so the rate alone bounds the makespan (issue 15).
    m_throttled: int = 300
    throttled_n: int = 50
    throttled_rate: float = 15.0

    def scenarios(self, image_dir: Path) -> dict[str, Scenario]:
        """Every client scenario by key."""
        n, t, m = self.n, self.t, self.m_small
        work = m * t / n  # the makespan, roughly, at the full cap
        same = tuple(tuple(str(image_dir / f"same-{k}.png") for k in range(4)) for _ in range(1))
        distinct = tuple(
            tuple(str(image_dir / f"job-{j}-{k}.png") for k in range(4))
            for j in range(self.m_images)
        )
        big_same = (tuple(str(image_dir / f"big-{k}.png") for k in range(4)),)
        big = tuple(
            tuple(str(image_dir / f"bigjob-{j}-{k}.png") for k in range(4))
            for j in range(max(self.m_bodies_8, self.m_bodies_50))
        )
        bt = self.body_t
        return {
            "known": Scenario("known", m, n, n, t),
            "known_large": Scenario("known_large", self.m_large, n, n, t),
            "unknown": Scenario("unknown", m, n, 2 * n, t),
            "changing": Scenario(
                "changing",
                m,
                n,
                2 * n,
                t,
                held_slots=4,
                schedule=((0.3 * work, {"held_slots": 0}), (0.6 * work, {"concurrency": n + 4})),
            ),
            "callbacks": Scenario("callbacks", self.m_large, n, n, t, callbacks=True),
            "cap_falls": Scenario(
                "cap_falls",
                self.m_fall,
                8,
                8,
                t,
                schedule=((0.5 * self.m_fall * t / 8, {"concurrency": 2}),),
            ),
            "slots_taken": Scenario(
                "slots_taken",
                self.m_fall,
                6,
                6,
                t,
                schedule=((0.25 * self.m_fall * t / 6, {"held_slots": 3}),),
            ),
            "huge": Scenario("huge", self.m_huge, self.huge_n, self.huge_n, self.huge_t),
            "images_same": Scenario("images_same", self.m_images, n, n, t, image_paths=same),
            "images_small": Scenario(
                "images_small", max(4, self.m_images // 4), n, n, t, image_paths=same
            ),
            "images_distinct": Scenario(
                "images_distinct", self.m_images, n, n, t, image_paths=distinct
            ),
            "bodies_8": Scenario("bodies_8", self.m_bodies_8, 8, 8, bt, image_paths=big),
            "bodies_50": Scenario("bodies_50", self.m_bodies_50, 50, 50, bt, image_paths=big),
            "bodies_50_shared": Scenario(
                "bodies_50_shared", self.m_bodies_50, 50, 50, bt, image_paths=big_same
            ),
            "throttled": Scenario(
                "throttled",
                self.m_throttled,
                self.throttled_n,
                self.throttled_n,
                t,
                rate_limit=self.throttled_rate,
            ),
        }


def build_plan(quick: bool) -> Plan:
    """The full plan, or the CI smoke test's (every scenario type, small; ~1.5 min on 2 cores)."""
    if not quick:
        return Plan(quick=False)
    return Plan(
        quick=True,
        t=0.5,
        m_small=40,
        m_large=60,
        m_huge=400,
        m_images=8,
        m_fall=24,
        image_bytes=1_000_000,
        body_image_bytes=1_000_000,
        body_t=0.5,
        m_bodies_8=8,
        m_bodies_50=50,
        video_bytes=64_000_000,
        download_repeats=1,
        dry_run_lines=2_000,
        m_throttled=60,
    )


@dataclass(slots=True)
class Results:
    """Everything measured: client runs by (scenario, client), downloads by method."""

    plan: Plan
    runs: dict[tuple[str, str], Run] = field(default_factory=dict)
    #: Client runs that failed, by (scenario, client): the reason, kept so one client's
    #: failure (e.g. the baseline timing out on 50 parallel 48 MB uploads) ends no other run.
    failures: dict[tuple[str, str], str] = field(default_factory=dict)
    downloads: dict[str, DownloadRun] = field(default_factory=dict)


def _make_images(plan: Plan, image_dir: Path) -> None:
    """Four image files shared by all jobs, and hard links to them for the distinct variants.

    Hard links are distinct paths (the encoding cache keys on the resolved path, so nothing is
    deduplicated: every job's images are read and encoded afresh) without using M × 20 MB of disk.
    """
    image_dir.mkdir(parents=True, exist_ok=True)
    sets = (("same", "job", plan.image_bytes, plan.m_images),)
    sets += (("big", "bigjob", plan.body_image_bytes, max(plan.m_bodies_8, plan.m_bodies_50)),)
    for source, linked, size, jobs in sets:
        for k in range(4):
            make_png(image_dir / f"{source}-{k}.png", size)
        for j in range(jobs):
            for k in range(4):
                link = image_dir / f"{linked}-{j}-{k}.png"
                if not link.exists():
                    os.link(image_dir / f"{source}-{k}.png", link)


#: (scenario, clients) in run order. The baseline has no encoding cache: same files and
#: distinct files cost it the same, so it runs the image scenario once (same files).
ORDER: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("known", ("kling-async", "baseline")),
    ("known_large", ("kling-async", "baseline")),
    ("unknown", ("kling-async", "baseline")),
    ("changing", ("kling-async", "baseline")),
    ("cap_falls", ("kling-async", "baseline")),
    ("slots_taken", ("kling-async", "baseline")),
    ("callbacks", ("kling-async", "baseline")),
    ("huge", ("kling-async", "baseline")),
    ("images_same", ("kling-async", "baseline")),
    ("images_distinct", ("kling-async",)),
    ("images_small", ("kling-async",)),  # same files, M/4 jobs: is the peak flat in M?
    ("bodies_8", ("kling-async", "baseline")),
    ("bodies_50", ("kling-async", "baseline")),
    ("bodies_50_shared", ("kling-async", "baseline")),
    ("throttled", ("kling-async", "baseline")),
)


#: Everything `--only` accepts: the scenario keys, and the download comparison.
KEYS = (*(key for key, _ in ORDER), "downloads")


def run_plan(
    plan: Plan, work: Path, log: Callable[[str], None], only: frozenset[str] | None = None
) -> Results:
    """Run every scenario (or those in `only`) and the download comparison; `log` gets one
    line per step."""
    results = Results(plan)
    image_dir = work / "images"
    _make_images(plan, image_dir)
    scenarios = plan.scenarios(image_dir)
    for key, clients in ORDER:
        if only is not None and key not in only:
            continue
        for client in clients:
            try:
                run = run_client(client, scenarios[key], work)
            except RuntimeError as exc:
                reason = str(exc).strip().splitlines()
                results.failures[key, client] = f"{reason[0]} … {reason[-1]}"[:300]
                log(f"{key:<16} {client:<12} FAILED: {results.failures[key, client]}")
                continue
            results.runs[key, client] = run
            log(
                f"{key:<16} {client:<12} wall {run.result.wall_s:7.2f} s  bound "
                f"{run.bound_s:7.2f} s  cpu {run.cpu_ms_per_job:6.2f} ms/job  "
                f"rss {run.result.peak_rss_mb:6.1f} MB  ok {run.result.jobs_ok}/{run.scenario.jobs}"
                f"  sim rss {run.sim_peak_rss_mb or 0:6.1f} MB"
            )
    if only is not None and "downloads" not in only:
        return results
    results.downloads = run_downloads(
        plan.video_bytes, work / "downloads", repeats=plan.download_repeats
    )
    for mode, dl in results.downloads.items():
        log(f"download {mode:<12} {dl.mb_per_s:8.1f} MB/s  rss {dl.peak_rss_mb:7.1f} MB")
    return results
