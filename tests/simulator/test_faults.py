"""Fault injection: every fault kind, scripts before probabilities, the rate limit (1302)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from kling_async.simulator import FaultConfig, FaultInjector, Simulator, parse_fault

from .helpers import PATH, Api


@pytest.fixture
async def fsim() -> AsyncIterator[Simulator]:
    """A simulator whose stalls end after 0.3 s."""
    faults = FaultConfig(stall_max_seconds=0.3)
    async with Simulator(gen_seconds=0.02, concurrency=10, faults=faults) as simulator:
        yield simulator


@pytest.fixture
def fapi(fsim: Simulator, http: aiohttp.ClientSession) -> Api:
    """Signed requests against ``fsim``."""
    return Api(fsim, http)


async def _video_url(api: Api) -> str:
    done = await api.wait(await api.new_task())
    return str(done["task_result"]["videos"][0]["url"])


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        ("5000", 500),
        ("5001", 503),
        ("5002", 504),
        ("1302", 429),
        ("1303", 429),
        ("1100", 429),
        ("1101", 429),
        ("1102", 429),
        ("1304", 429),
    ],
)
async def test_error_code_faults(fapi: Api, fault: str, status: int):
    fapi.sim.faults.script("create", fault)
    got, data = await fapi.create()
    assert (got, data["code"]) == (status, int(fault))
    assert ("data" in data) is (fault != "1303")
    assert fapi.sim.stats.accepted_creates == 0
    assert fapi.sim.stats.errors_by_code[int(fault)] == 1
    assert fapi.sim.stats.faults_injected[fault] == 1
    assert (await fapi.create())[0] == 200  # the script is consumed


@pytest.mark.parametrize("kind", ["query", "list"])
async def test_5xx_on_query_and_list(fapi: Api, kind: str):
    task_id = await fapi.new_task()
    fapi.sim.faults.script(kind, "5002")
    status, data = await (fapi.query(task_id) if kind == "query" else fapi.list())
    assert (status, data["code"]) == (504, 5002)


async def test_reset_on_create(fapi: Api):
    fapi.sim.faults.script("create", "reset")
    with pytest.raises(aiohttp.ClientConnectionError):
        await fapi.create(external_task_id="r1")
    assert fapi.sim.task("r1") is None
    assert (await fapi.create(external_task_id="r1"))[0] == 200


async def test_reset_on_query_twice_beats_the_aiohttp_retry(fapi: Api):
    task_id = await fapi.new_task()
    # aiohttp silently retries an idempotent request once after a disconnect.
    fapi.sim.faults.script("query", "reset", "reset")
    with pytest.raises(aiohttp.ClientConnectionError):
        await fapi.query(task_id)
    assert fapi.sim.stats.requests["query"] == 2


async def test_lost_create_creates_and_bills(fapi: Api):
    fapi.sim.faults.script("create", "lost")
    with pytest.raises(aiohttp.ClientConnectionError):
        await fapi.create(external_task_id="lost-1", prompt="lost prompt")
    status, data = await fapi.query("lost-1")
    assert status == 200
    assert data["data"]["task_info"]["external_task_id"] == "lost-1"
    assert fapi.sim.stats.accepted_creates == 1
    assert fapi.sim.stats.creates_by_prompt["lost prompt"] == 1
    status, data = await fapi.create(external_task_id="lost-1")
    assert (status, data["code"]) == (400, 1201)


async def test_latency(fapi: Api):
    fapi.sim.faults.script("list", "latency:0.2")
    loop = asyncio.get_running_loop()
    start = loop.time()
    status, _ = await fapi.list()
    assert status == 200
    assert loop.time() - start >= 0.2


async def test_stall_until_client_gives_up(fapi: Api):
    fapi.sim.faults.script("create", "stall")
    with pytest.raises(asyncio.TimeoutError):
        async with asyncio.timeout(0.1):
            await fapi.create()


async def test_stall_is_bounded(fapi: Api):
    fapi.sim.faults.script("create", "stall")
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(aiohttp.ClientConnectionError):
        await fapi.create()
    assert 0.25 <= loop.time() - start < 2


async def test_stop_ends_a_stall(http: aiohttp.ClientSession):
    sim = await Simulator().start()
    sim.faults.script("list", "stall")
    request = asyncio.ensure_future(Api(sim, http).list())
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await sim.stop()
    assert loop.time() - start < 2
    with pytest.raises(aiohttp.ClientConnectionError):
        await request


async def test_garbage_and_bad_envelope(fapi: Api):
    fapi.sim.faults.script("query", "garbage", "bad_envelope")
    url = fapi.sim.url + PATH + "/1"
    async with fapi.http.get(url, headers=fapi.headers()) as r:
        assert r.status == 200
        assert r.content_type == "text/html"
        with pytest.raises(aiohttp.ContentTypeError):
            await r.json()
    async with fapi.http.get(url, headers=fapi.headers()) as r:
        data = await r.json()
        assert r.status == 200 and "code" not in data


async def test_403_and_404_on_api(fapi: Api):
    fapi.sim.faults.script("list", "403", "404")
    assert (await fapi.list())[0] == 403
    status, data = await fapi.list()
    assert (status, data["code"]) == (404, 1203)


@pytest.mark.parametrize(("fault", "status"), [("403", 403), ("404", 404), ("5001", 503)])
async def test_video_status_faults(fapi: Api, fault: str, status: int):
    url = await _video_url(fapi)
    fapi.sim.faults.script("video", fault)
    async with fapi.http.get(url) as r:
        assert r.status == status
    async with fapi.http.get(url) as r:
        assert r.status == 200


async def test_video_truncate(http: aiohttp.ClientSession):
    async with Simulator(gen_seconds=0.01, video_bytes=1_000_000) as sim:
        url = await _video_url(Api(sim, http))
        sim.faults.script("video", "truncate")
        received = 0
        with pytest.raises(aiohttp.ClientPayloadError):
            async with http.get(url) as r:
                assert r.headers["Content-Length"] == "1000000"
                async for chunk in r.content.iter_chunked(65536):
                    received += len(chunk)
        assert 0 < received < 1_000_000
        assert sim.stats.video_bytes_served == 500_000


async def test_video_reset_latency_and_garbage(fapi: Api):
    url = await _video_url(fapi)
    fapi.sim.faults.script("video", "reset", "reset")
    with pytest.raises(aiohttp.ClientConnectionError):
        async with fapi.http.get(url) as r:
            await r.read()
    fapi.sim.faults.script("video", "latency:0.1", "garbage")
    async with fapi.http.get(url) as r:
        assert r.status == 200 and r.content_type == "video/mp4"
    async with fapi.http.get(url) as r:
        assert r.status == 200 and r.content_type == "text/html"


async def test_probabilities_and_script_precedence(fapi: Api):
    faults = fapi.sim.faults
    faults.set_rate("list", "5000", 1.0)
    assert (await fapi.list())[0] == 500
    faults.script("list", "none", "5001")
    assert (await fapi.list())[0] == 200  # scripted "none" wins over the rate
    assert (await fapi.list())[0] == 503
    assert (await fapi.list())[0] == 500
    faults.set_rate("list", "5000", 0.0)
    assert (await fapi.list())[0] == 200


def test_probabilities_are_seeded_and_roughly_right():
    picks = []
    for _ in range(2):
        injector = FaultInjector(FaultConfig(rates={"query": {"5000": 0.3}}, seed=1))
        picks.append([injector.pick("query") for _ in range(1000)])
    assert picks[0] == picks[1]
    hits = sum(p is not None for p in picks[0])
    assert 220 < hits < 380


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("lost", "query"),
        ("truncate", "create"),
        ("1302", "video"),
        ("bad_envelope", "video"),
        ("latency:x", "create"),
        ("latency:-1", "create"),
        ("explode", "create"),
        ("5000", "nowhere"),
    ],
)
def test_invalid_faults_are_refused(spec: str, kind: str):
    with pytest.raises(ValueError):
        parse_fault(spec, kind)


def test_rates_over_one_are_refused():
    injector = FaultInjector()
    injector.set_rate("create", "5000", 0.7)
    with pytest.raises(ValueError, match="more than 1"):
        injector.set_rate("create", "5001", 0.5)
    assert injector.as_dict() == {"rates": {"create": {"5000": 0.7}}, "scripts": {}}


async def test_rate_limit_1302(http: aiohttp.ClientSession):
    async with Simulator(rate_limit=5) as sim:
        api = Api(sim, http)
        statuses = [await api.list() for _ in range(6)]
        assert [s for s, _ in statuses[:5]] == [200] * 5
        assert (statuses[5][0], statuses[5][1]["code"]) == (429, 1302)
        assert sim.stats.rejected_rate == 1
        sim.rate_limit = None
        assert (await api.list())[0] == 200


async def test_rate_limit_is_off_by_default(api: Api):
    for _ in range(30):
        assert (await api.list())[0] == 200
