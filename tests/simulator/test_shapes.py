"""Answer-shape switches: what each one puts on the wire (plain HTTP, no client code)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from kling_async.simulator import Simulator
from kling_async.simulator._cli import add_arguments, build_config

from .helpers import Api


@pytest.fixture
async def shaped(http: aiohttp.ClientSession) -> AsyncIterator[Api]:
    """A fast simulator whose switches a test sets with `api.sim.control(shapes=...)`."""
    async with Simulator(concurrency=10, gen_seconds=0.05, gen_spread=0.0) as sim:
        yield Api(sim, http)


async def finished(api: Api, ident: str) -> dict[str, Any]:
    """The task's query answer once every task of the simulator has ended."""
    by_status = api.sim.stats.tasks_by_status
    for _ in range(500):
        if by_status["submitted"] + by_status["processing"] == 0:
            break
        await asyncio.sleep(0.01)
    status, body = await api.query(ident)
    assert status == 200, body
    return dict(body["data"])


async def test_documented_shape_by_default(shaped: Api) -> None:
    status, created = await shaped.create(external_task_id="d-1")
    assert status == 200 and isinstance(created["data"]["task_id"], str)
    assert "task_info" not in created["data"]
    data = await finished(shaped, "d-1")
    assert data["task_info"] == {"external_task_id": "d-1"}
    assert data["task_result"]["videos"][0]["duration"] == "5.1"
    assert data["created_at"] > 10**12 and data["final_unit_deduction"] == "1"


async def test_numbers_for_strings(shaped: Api) -> None:
    shaped.sim.control(shapes={"numbers_for_strings": True})
    _, created = await shaped.create(external_task_id="n-1")
    assert isinstance(created["data"]["task_id"], int)
    data = await finished(shaped, "n-1")
    assert isinstance(data["task_id"], int)
    assert data["task_result"]["videos"][0]["duration"] == 5
    assert data["final_unit_deduction"] == 1


async def test_seconds_and_missing_timestamps(shaped: Api) -> None:
    shaped.sim.control(shapes={"seconds_timestamps": True})
    _, created = await shaped.create(external_task_id="s-1")
    assert created["data"]["created_at"] < 10**11
    _, one = await shaped.query("s-1")
    assert one["data"]["updated_at"] < 10**11
    shaped.sim.control(shapes={"missing_timestamps": True})
    _, listed = await shaped.list()
    assert all("created_at" not in t and "updated_at" not in t for t in listed["data"])


async def test_echo_task_info(shaped: Api) -> None:
    shaped.sim.control(shapes={"echo_task_info": True})
    _, created = await shaped.create(external_task_id="e-1")
    assert created["data"]["task_info"] == {"external_task_id": None}
    _, one = await shaped.query("e-1")
    assert one["data"]["task_info"] == {}


async def test_videos_null_and_video_without_url(shaped: Api) -> None:
    shaped.sim.control(shapes={"videos_null": True, "video_without_url": True})
    await shaped.create(external_task_id="v-1")
    _, running = await shaped.query("v-1")
    assert running["data"]["task_result"] == {"videos": None}
    data = await finished(shaped, "v-1")
    with_url, without = data["task_result"]["videos"]
    assert with_url["url"] and "url" not in without and without["id"].startswith("no-url-")
    shaped.sim.control(shapes={"video_without_url": False}, fail_rate=1.0)
    await shaped.create(external_task_id="v-2")
    failed = await finished(shaped, "v-2")
    assert failed["task_status"] == "failed" and failed["task_result"] is None


async def test_errors_under_200(shaped: Api) -> None:
    shaped.sim.control(shapes={"errors_under_200": True}, concurrency=0)
    status, body = await shaped.create()
    assert (status, body["code"]) == (200, 1303) and "data" not in body
    status, body = await shaped.query("nope")
    assert (status, body["code"]) == (200, 1203)


async def test_unreadable_tasks(shaped: Api) -> None:
    shaped.sim.control(shapes={"unreadable": {"u-1": "task_status", "u-2": "created_at"}})
    await shaped.create(external_task_id="u-1")
    await shaped.create(external_task_id="u-2")
    await shaped.create(external_task_id="ok")
    _, listed = await shaped.list()
    by_ext = {t["task_info"]["external_task_id"]: t for t in listed["data"]}
    assert by_ext["u-1"]["task_status"] == "in_queue"
    assert by_ext["u-2"]["created_at"] == "not a time"
    assert by_ext["ok"]["task_status"] in ("submitted", "processing", "succeed")
    shaped.sim.control(shapes={"unreadable": {"u-3": "videos"}})
    await shaped.create(external_task_id="u-3")
    _, one = await shaped.query("u-3")
    assert one["data"]["task_result"] == {"videos": "none"}


async def test_callbacks_in_the_newer_shape(
    http: aiohttp.ClientSession, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = receiver
    shapes = {"callback_id_status": True, "numbers_for_strings": True}
    async with Simulator(gen_seconds=0.02, shapes=shapes) as sim:
        await Api(sim, http).create(callback_url=url)
        for _ in range(300):
            if sim.stats.callbacks_sent == 3:
                break
            await asyncio.sleep(0.01)
    assert len(received) == 3
    assert {b["status"] for b in received} == {"submitted", "processing", "succeed"}
    assert all(isinstance(b["id"], int) and "task_id" not in b for b in received)


def test_shapes_from_the_command_line() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--shape", "seconds_timestamps", "--shape", "echo_task_info"])
    config = build_config(args)
    assert dict(config.shapes) == {"seconds_timestamps": True, "echo_task_info": True}
    with pytest.raises(SystemExit):
        parser.parse_args(["--shape", "nonsense"])


async def test_shapes_over_http(shaped: Api) -> None:
    url = shaped.sim.url + "/__sim/control"
    async with shaped.http.post(url, json={"shapes": {"errors_under_200": True}}) as r:
        assert r.status == 200
        assert (await r.json())["settings"]["shapes"] == {"errors_under_200": True}
    async with shaped.http.post(url, json={"shapes": {"errors_under_200": "yes"}}) as r:
        assert r.status == 400
        assert "errors_under_200" in (await r.json())["error"]
    async with shaped.http.get(shaped.sim.url + "/__sim/stats") as r:
        assert (await r.json())["settings"]["shapes"] == {"errors_under_200": True}
