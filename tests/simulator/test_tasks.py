"""Task lifecycle, concurrency accounting, single and list queries."""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
import pytest

from kling_async.simulator import Simulator, SimulatorConfig

from .helpers import PATH, Api


async def test_create_answers_the_documented_envelope(api: Api):
    status, data = await api.create()
    assert status == 200
    assert set(data) == {"code", "message", "request_id", "data"}
    assert data["code"] == 0
    uuid.UUID(data["request_id"])
    task = data["data"]
    assert set(task) == {"task_id", "task_status", "created_at", "updated_at"}
    assert task["task_status"] == "submitted"
    assert task["task_id"].isdigit() and len(task["task_id"]) >= 17
    assert task["created_at"] == task["updated_at"]
    assert abs(task["created_at"] - api.sim.clock.now_ms()) < 5000


async def test_task_ids_are_unique_and_increasing(api: Api):
    api.sim.concurrency = 50
    ids = [int(await api.new_task()) for _ in range(20)]
    assert ids == sorted(set(ids))


async def test_lifecycle_to_succeed(api: Api):
    task_id = await api.new_task(mode="pro", duration="5", watermark_info={"enabled": True})
    done = await api.wait(task_id)
    assert done["task_status"] == "succeed"
    assert done["task_status_msg"] == ""
    assert done["final_unit_deduction"] == "3.5"
    assert done["watermark_info"] == {"enabled": True}
    assert done["updated_at"] >= done["created_at"]
    (video,) = done["task_result"]["videos"]
    assert set(video) == {"id", "url", "watermark_url", "duration"}
    uuid.UUID(video["id"])
    assert video["duration"] == "5.1"
    assert video["url"].startswith(api.sim.video_url + "/videos/")
    assert video["url"] != video["watermark_url"]


async def test_processing_phase_is_observed(http: aiohttp.ClientSession):
    async with Simulator(gen_seconds=0.4, gen_spread=0.0, queue_fraction=0.25) as sim:
        api = Api(sim, http)
        task_id = await api.new_task()
        seen = await api.wait(task_id, "processing")
        assert seen["task_result"] == {}
        assert seen["final_unit_deduction"] == "0"


@pytest.mark.parametrize(
    ("mode", "duration", "units"),
    [("std", "5", "1"), ("pro", "5", "3.5"), ("std", "10", "2"), ("pro", "10", "7")],
)
async def test_final_unit_deduction(api: Api, mode: str, duration: str, units: str):
    api.sim.control(gen_seconds=0.01)
    done = await api.wait(await api.new_task(mode=mode, duration=duration))
    assert done["final_unit_deduction"] == units
    assert done["task_result"]["videos"][0]["duration"] == f"{duration}.1"
    assert "watermark_url" not in done["task_result"]["videos"][0]


async def test_failed_task(http: aiohttp.ClientSession):
    messages = ("Image pixel is invalid",)
    async with Simulator(gen_seconds=0.02, fail_rate=1.0, failure_messages=messages) as sim:
        api = Api(sim, http)
        done = await api.wait(await api.new_task())
        assert done["task_status"] == "failed"
        assert done["task_status_msg"] == "Image pixel is invalid"
        assert done["task_result"] == {}
        assert done["final_unit_deduction"] == "0"
        assert sim.stats.tasks_by_status["failed"] == 1


def _video_ids(result: dict[str, list[dict[str, str]]]) -> list[str]:
    return [v["id"] for v in result.get("videos", [])]


async def test_same_seed_same_outcomes(http: aiohttp.ClientSession):
    outcomes = []
    for _ in range(2):
        async with Simulator(gen_seconds=0.01, fail_rate=0.5, seed=7, concurrency=20) as sim:
            api = Api(sim, http)
            ids = [await api.new_task() for _ in range(12)]
            done = [await api.wait(i) for i in ids]
            outcomes.append(
                [
                    (d["task_status"], d["task_status_msg"], _video_ids(d["task_result"]))
                    for d in done
                ]
            )
    assert outcomes[0] == outcomes[1]
    statuses = {o[0] for o in outcomes[0]}
    assert statuses == {"succeed", "failed"}


async def test_query_by_external_id(api: Api):
    task_id = await api.new_task(external_task_id="my-job-1")
    status, data = await api.query("my-job-1")
    assert (status, data["data"]["task_id"]) == (200, task_id)
    assert data["data"]["task_info"] == {"external_task_id": "my-job-1"}


async def test_unknown_task_is_1203(api: Api):
    status, data = await api.query("123456")
    assert (status, data["code"]) == (404, 1203)


@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", PATH), ("DELETE", PATH + "/1"), ("POST", PATH + "/1"), ("PATCH", PATH)],
)
async def test_wrong_method_is_1202(api: Api, method: str, path: str):
    async with api.http.request(method, api.sim.url + path, headers=api.headers()) as r:
        data = await r.json()
    assert (r.status, data["code"]) == (404, 1202)


async def test_unknown_path_is_1203(api: Api):
    async with api.http.get(api.sim.url + "/v1/videos/other", headers=api.headers()) as r:
        assert (r.status, (await r.json())["code"]) == (404, 1203)


# -- concurrency ------------------------------------------------------------------------------


async def test_over_cap_is_1303_without_data(api: Api):
    for _ in range(3):
        await api.new_task()
    status, data = await api.create(prompt="fourth")
    assert status == 429
    assert data["code"] == 1303
    assert data["message"] == "parallel task over resource pack limit"
    assert "data" not in data
    stats = api.sim.stats
    assert (stats.rejected_concurrency, stats.peak_running, stats.accepted_creates) == (1, 3, 3)
    assert "fourth" not in stats.creates_by_prompt


async def test_slot_is_freed_when_task_ends_without_queries(api: Api):
    for _ in range(3):
        await api.new_task()
    assert api.sim.stats.running == 3
    await asyncio.sleep(0.15)  # nobody queries: timers must free the slots
    assert api.sim.stats.running == 0
    assert (await api.create())[0] == 200


async def test_failed_tasks_free_their_slot(http: aiohttp.ClientSession):
    async with Simulator(concurrency=1, gen_seconds=0.03, fail_rate=1.0) as sim:
        api = Api(sim, http)
        first = await api.new_task()
        assert (await api.create())[0] == 429
        assert (await api.wait(first))["task_status"] == "failed"
        assert (await api.create())[0] == 200


async def test_cap_change_and_held_slots(api: Api):
    sim = api.sim
    sim.control(gen_seconds=5.0)
    sim.concurrency = 1
    await api.new_task()
    assert (await api.create())[0] == 429
    sim.concurrency = 4
    await api.new_task()
    sim.held_slots = 2
    assert sim.stats.held_slots == 2
    assert (await api.create())[0] == 429
    sim.held_slots = 0
    await api.new_task()
    await api.new_task()
    assert (await api.create())[0] == 429
    assert sim.stats.peak_running == 4
    assert sim.stats.rejected_concurrency == 3


async def test_peak_running_tracks_maximum(http: aiohttp.ClientSession):
    async with Simulator(concurrency=10, gen_seconds=0.05, gen_spread=0.0) as sim:
        api = Api(sim, http)
        await asyncio.gather(*(api.new_task() for _ in range(6)))
        await asyncio.sleep(0.2)
        await api.new_task()
        assert sim.stats.peak_running == 6
        assert sim.stats.running == 1


async def test_many_tasks_are_cheap():
    config = SimulatorConfig(concurrency=100_000, gen_seconds=0.0)
    async with Simulator(config) as sim:
        from kling_async.simulator._validate import CreateRequest

        store = sim._core.store  # in-process bulk create: the HTTP path is tested elsewhere
        start = time.process_time()  # CPU, not wall time: a loaded machine must not fail it
        for i in range(10_000):
            store.create(CreateRequest(prompt=f"p{i}", image_count=1, external_task_id=f"e{i}"))
        await asyncio.sleep(0.05)
        assert time.process_time() - start < 5
        assert sim.stats.tasks_by_status["succeed"] == 10_000
        assert sim.stats.running == 0
        assert sim.task("e9999") is not None


# -- list -------------------------------------------------------------------------------------


async def test_list_newest_first_and_pagination(api: Api):
    api.sim.concurrency = 20
    ids = [await api.new_task() for _ in range(7)]
    status, data = await api.list()
    assert status == 200
    assert [t["task_id"] for t in data["data"]] == ids[::-1]
    _, page2 = await api.list(pageNum=2, pageSize=3)
    assert [t["task_id"] for t in page2["data"]] == ids[::-1][3:6]
    _, page3 = await api.list(pageNum=3, pageSize=3)
    assert [t["task_id"] for t in page3["data"]] == ids[:1]
    _, beyond = await api.list(pageNum=4, pageSize=3)
    assert beyond["data"] == []
    _, last = await api.list(pageNum=1000, pageSize=500)
    assert last["data"] == []


async def test_list_items_have_the_single_query_shape(api: Api):
    task_id = await api.new_task(external_task_id="x1")
    await api.wait(task_id)
    _, single = await api.query(task_id)
    _, listing = await api.list(pageSize=1)
    assert listing["data"][0]["task_id"] == single["data"]["task_id"]
    assert set(listing["data"][0]) == set(single["data"])
    assert listing["data"][0]["task_info"]["external_task_id"] == "x1"


async def test_list_default_page_size_is_30(api: Api):
    api.sim.concurrency = 40
    for _ in range(31):
        await api.new_task()
    _, data = await api.list()
    assert len(data["data"]) == 30
    _, data = await api.list(pageSize=500)
    assert len(data["data"]) == 31


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"pageNum": 0}, "pageNum"),
        ({"pageNum": 1001}, "pageNum"),
        ({"pageNum": "abc"}, "pageNum"),
        ({"pageSize": 0}, "pageSize"),
        ({"pageSize": 501}, "pageSize"),
        ({"pageSize": "1.5"}, "pageSize"),
        ({"pageSize": -3}, "pageSize"),
    ],
)
async def test_list_bad_params_are_1201(api: Api, params: dict[str, object], name: str):
    status, data = await api.list(**params)
    assert (status, data["code"]) == (400, 1201)
    assert name in data["message"]


async def test_list_edge_values_are_accepted(api: Api):
    for params in ({"pageNum": 1, "pageSize": 1}, {"pageNum": 1000, "pageSize": 500}):
        assert (await api.list(**params))[0] == 200
