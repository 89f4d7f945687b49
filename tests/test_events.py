"""Observability: every event reaches the one hook; DEBUG logs help and hold no secret."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import kling_async as kling
from kling_async._download_retry import progress_events
from kling_async._journal import JobState, Journal
from kling_async.simulator import Simulator

FAST_RETRY = kling.RetryPolicy(wait_initial=0.01, wait_max=0.05, concurrency_wait_initial=0.05)
FAST_POLL = kling.PollPolicy(interval=0.05, min_interval=0.02)


def make_client(sim: Simulator, hook: Callable[[kling.Event], None], **kw: Any) -> kling.Client:
    return kling.Client(
        access_key=sim.access_key,
        secret_key=sim.secret_key,
        base_url=sim.url,
        retry=FAST_RETRY,
        poll=FAST_POLL,
        event_hook=hook,
        **kw,
    )


def by_kind(events: list[kling.Event], kind: str) -> list[dict[str, Any]]:
    return [e.data for e in events if e.kind == kind]


async def test_a_task_reports_its_whole_life(png_path: Path, tmp_path: Path) -> None:
    events: list[kling.Event] = []
    async with (
        Simulator(gen_seconds=0.2, gen_spread=0.0, video_bytes=3 << 20) as sim,
        make_client(sim, events.append) as client,
    ):
        request = kling.MultiImageToVideoRequest(images=[png_path], prompt="life")
        task = await client.wait(await client.submit(request), timeout=10)
        [path] = await client.download(task, tmp_path)
    kinds = [e.kind for e in events]
    order = ["task_submitted", "task_status", "task_finished", "download_progress"]
    order.append("download_finished")
    assert [k for k in dict.fromkeys(kinds) if k in order] == order
    assert by_kind(events, "task_submitted")[0]["task_id"] == task.task_id
    assert by_kind(events, "task_status")[-1] == {"task_id": task.task_id, "status": "succeed"}
    progress = by_kind(events, "download_progress")
    assert progress[-1]["bytes"] == progress[-1]["total"] == 3 << 20
    assert len(progress) <= 3  # throttled: not one event per 1 MiB chunk on a fast link
    assert all("url" not in p for p in progress)  # signed CDN links stay out of events
    [finished] = by_kind(events, "download_finished")
    assert finished["path"] == str(path) and finished["bytes"] == 3 << 20


async def test_retries_and_1303_back_off_are_reported(png_path: Path) -> None:
    events: list[kling.Event] = []
    async with (
        Simulator(gen_seconds=0.1, gen_spread=0.0) as sim,
        make_client(sim, events.append, limits=kling.Limits(probe_interval=0.05)) as client,
    ):
        sim.faults.script("create", "5000", "1303")
        request = kling.MultiImageToVideoRequest(images=[png_path], prompt="retry")
        task = await client.wait(await client.submit(request), timeout=10)
        assert task.task_status == "succeed"
        assert sim.stats.accepted_creates == 1
    [retry] = by_kind(events, "request_retry")
    assert retry["code"] == 5000 and retry["delay"] > 0 and retry["error"] == "ServerError"
    [backoff] = by_kind(events, "concurrency_backoff")
    assert backoff == {"limit": 0, "held": 0}  # nothing held: wait for the gate's next probe


async def test_a_query_retry_is_reported_too(png_path: Path) -> None:
    events: list[kling.Event] = []
    async with (
        Simulator(gen_seconds=0.1, gen_spread=0.0) as sim,
        make_client(sim, events.append) as client,
    ):
        sim.faults.script("query", "5001")
        request = kling.MultiImageToVideoRequest(images=[png_path], prompt="query retry")
        await client.wait(await client.submit(request), timeout=10)
    assert [r["code"] for r in by_kind(events, "request_retry")] == [5001]


def test_download_progress_is_throttled() -> None:
    events: list[kling.Event] = []
    now = [0.0]
    seen: list[tuple[int, int | None]] = []
    on_progress = progress_events(
        events.append, "t1", 0, lambda n, t: seen.append((n, t)), monotonic=lambda: now[0]
    )
    assert on_progress is not None
    for step, at in enumerate([0.0, 0.1, 0.2, 0.3, 0.6, 0.7, 0.8], start=1):
        now[0] = at
        on_progress(step << 20, 8 << 20)
    now[0] = 0.85
    on_progress(8 << 20, 8 << 20)  # the last one always goes out
    assert [e.bytes >> 20 for e in events if isinstance(e, kling.DownloadProgress)] == [1, 5, 8]
    assert len(seen) == 8  # the user's own callback still sees every step
    assert events[0] == kling.DownloadProgress(task_id="t1", index=0, bytes=1 << 20, total=8 << 20)


def test_no_hook_means_no_wrapper() -> None:
    def mine(n: int, t: int | None) -> None:
        pass

    assert progress_events(None, "t1", 0, mine) is mine


async def test_a_failing_hook_never_breaks_the_client(
    png_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: kling.Event) -> None:
        raise RuntimeError("hook bug")

    async with (
        Simulator(gen_seconds=0.1, gen_spread=0.0) as sim,
        make_client(sim, broken) as client,
    ):
        request = kling.MultiImageToVideoRequest(images=[png_path], prompt="broken hook")
        task = await client.wait(await client.submit(request), timeout=10)
    assert task.task_status == "succeed"
    assert "event hook raised on task_submitted" in caplog.text


async def test_debug_logs_are_useful_and_hold_no_secret(
    png_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="kling_async")
    webhook_secret = base64.b64encode(b"webhook secret for the log test").decode()
    async with (
        Simulator(gen_seconds=0.1, gen_spread=0.0) as sim,
        make_client(sim, lambda e: None) as client,
        kling.CallbackReceiver(client, secret="whsec_" + webhook_secret) as recv,
        aiohttp.ClientSession() as http,
    ):
        sim.faults.script("create", "5000")
        request = kling.MultiImageToVideoRequest(images=[png_path], prompt="logs")
        task = await client.wait(await client.submit(request), timeout=10)
        await client.download(task, tmp_path)
        async with http.post(recv.url, json={"task_id": task.task_id}) as resp:
            assert resp.status == 401
        token = sim.make_token()
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("kling_async"))
    for useful in (
        "POST /v1/videos/multi-image2video → HTTP 500",
        "request_retry",
        "POST /v1/videos/multi-image2video → HTTP 200",
        f"task_submitted {{'task_id': '{task.task_id}'",
        "task_finished",
        "download_finished",
        "callback rejected (401)",
    ):
        assert useful in text, useful
    for secret in (sim.secret_key, webhook_secret, "Bearer", token.split(".")[0]):
        assert secret not in text


async def test_a_batch_task_that_ends_before_its_row_is_written_finishes_once(
    png_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_batch writes each task's `submitted` row before following it: a task seen finished
    meanwhile must not be followed again from its `submitted` view (a second `task_finished`,
    so a progress count past the total: examples/batch.py on a loaded machine)."""
    finished: dict[str, asyncio.Event] = {}
    events: list[kling.Event] = []

    def hook(event: kling.Event) -> None:
        events.append(event)
        if isinstance(event, kling.TaskFinished):
            finished.setdefault(event.task_id, asyncio.Event()).set()

    write = Journal.update_task

    async def after_the_end(self: Journal, key: str, state: JobState, task: Any, **kw: Any) -> Any:
        if state is JobState.SUBMITTED:  # the premise by construction: the task ended first
            ended = finished.setdefault(task.task_id, asyncio.Event())
            await asyncio.wait_for(ended.wait(), 10)
        return await write(self, key, state, task, **kw)

    monkeypatch.setattr(Journal, "update_task", after_the_end)
    requests = [
        kling.MultiImageToVideoRequest(images=[png_path], prompt=f"shot {i}") for i in range(6)
    ]
    async with (
        Simulator(concurrency=3, gen_seconds=0.05) as sim,
        make_client(sim, hook, limits=kling.Limits(concurrency=3, rps=200)) as client,
    ):
        results = [r async for r in kling.run_batch(client, requests, tmp_path / "out")]
    assert [r.ok for r in results] == [True] * 6
    ids = [e["task_id"] for e in by_kind(events, "task_finished")]
    assert sorted(ids) == sorted({r.task_id for r in results})  # each task once, none twice
