"""The simulator's clock in `Date` headers, short-lived video links, and API outages."""

from __future__ import annotations

import argparse
import asyncio
import time
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from kling_async.simulator import Simulator, add_arguments
from kling_async.simulator._cli import build_config

from .helpers import PATH, Api, make_token


def _served_at(response: aiohttp.ClientResponse) -> float:
    return parsedate_to_datetime(response.headers["Date"]).timestamp()


async def _video(api: Api, **fields: object) -> dict[str, str]:
    task_id = await api.new_task(**fields)
    task = await api.wait(task_id, "succeed")
    return dict(task["task_result"]["videos"][0])


async def until(condition: object, timeout: float = 5.0) -> None:
    """Poll `condition()` until true (fails after `timeout` seconds)."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- Date ---------------------------------------------------------------------------------------


class RealTimeApi(Api):
    """Signs its JWTs by this machine's clock (the simulator checks them by real time)."""

    def headers(self) -> dict[str, str]:
        token = make_token(self.sim.access_key, self.sim.secret_key)
        return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("offset", [-60.0, 0.0, 3600.0])
async def test_answers_are_dated_by_the_simulator_clock(
    http: aiohttp.ClientSession, offset: float
) -> None:
    async with Simulator(gen_seconds=0.01, clock_offset=offset, auth_uses_sim_clock=False) as sim:
        api = RealTimeApi(sim, http)
        video = await _video(api)
        async with http.get(f"{sim.url}{PATH}/nope", headers=api.headers()) as error:
            assert error.status == 404  # an error answer is dated too
            dated = [_served_at(error)]
        async with http.get(video["url"]) as served:
            assert served.status == 200
            dated.append(_served_at(served))
        async with http.get(f"{sim.video_url}/videos/unknown.mp4") as missing:
            assert missing.status == 404
            dated.append(_served_at(missing))
        for served_at in dated:
            assert served_at == pytest.approx(time.time() + offset, abs=2.0)
        assert sim.control()["settings"]["clock_offset"] == offset
        sim.advance(86_400)
        async with http.get(video["url"]) as gone:
            assert _served_at(gone) == pytest.approx(time.time() + offset + 86_400, abs=2.0)


async def test_task_times_follow_the_offset(api: Api) -> None:
    async with Simulator(gen_seconds=0.01, clock_offset=120.0) as sim:
        ahead = Api(sim, api.http)
        task = await ahead.wait(await ahead.new_task(), "succeed")
        assert task["created_at"] / 1000 == pytest.approx(time.time() + 120.0, abs=2.0)


# -- video links valid for url_ttl after each query ------------------------------------------


async def test_sub_second_links_count_from_each_query(http: aiohttp.ClientSession) -> None:
    async with Simulator(gen_seconds=0.01, url_ttl=0.5) as sim:
        api = Api(sim, http)
        video = await _video(api, external_task_id="short")
        exp = int(parse_qs(urlsplit(video["url"]).query)["exp"][0])
        # Milliseconds, half a second after the query (not truncated to a whole second).
        assert exp - sim.clock.now_ms() == pytest.approx(500, abs=100)
        async with http.get(video["url"]) as fresh:
            assert fresh.status == 200
        sim.advance(0.6)
        async with http.get(video["url"]) as stale:
            assert stale.status == 403
        _, again = await api.query("short")
        url = again["data"]["task_result"]["videos"][0]["url"]
        async with http.get(url) as renewed:
            assert renewed.status == 200  # a new query hands out a link good for 0.5 s more
        # The list hands out fresh links too.
        _, page = await api.list(pageNum=1, pageSize=10)
        listed = page["data"][0]["task_result"]["videos"][0]["url"]
        sim.advance(0.3)
        async with http.get(listed) as from_list:
            assert from_list.status == 200


# -- outages ----------------------------------------------------------------------------------


async def test_a_refusing_outage_closes_the_port_then_reopens_it(
    http: aiohttp.ClientSession,
) -> None:
    async with Simulator(gen_seconds=0.01) as sim:
        api = Api(sim, http)
        video = await _video(api)
        url = sim.url
        sim.outage(30)
        await sim.switched()
        assert sim.down and sim.control()["settings"]["outage"] == "refuse"
        with pytest.raises(aiohttp.ClientConnectionError):
            await api.list(pageNum=1, pageSize=1)  # pooled connection dropped, or refused
        async with aiohttp.ClientSession() as new:
            with pytest.raises(aiohttp.ClientConnectorError):
                async with new.get(url + PATH):
                    pass
        async with http.get(video["url"]) as served:
            assert served.status == 200  # the video origin is not down
        sim.outage(0)
        await sim.switched()
        assert not sim.down and sim.url == url
        status, _ = await api.list(pageNum=1, pageSize=1)
        assert status == 200
        assert sim.control()["settings"]["outages"] == 1


async def test_a_hanging_outage_answers_nothing_until_it_ends(
    http: aiohttp.ClientSession,
) -> None:
    async with Simulator(gen_seconds=0.01) as sim:
        api = Api(sim, http)
        sim.outage(30, mode="hang")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await api.list(pageNum=1, pageSize=1)
        # A create (aiohttp itself sends an idempotent GET once more when it is dropped).
        pending = asyncio.ensure_future(api.create())
        await until(lambda: sim.stats.outage_drops >= 2)
        sim.outage(0)
        with pytest.raises(aiohttp.ClientConnectionError):
            await pending  # dropped at the end of the outage, never answered
        assert sim.stats.accepted_creates == 0
        status, _ = await api.list(pageNum=1, pageSize=1)
        assert status == 200


async def test_an_outage_ends_by_itself(http: aiohttp.ClientSession) -> None:
    async with Simulator(gen_seconds=0.01) as sim:
        api = Api(sim, http)
        sim.outage(0.3)
        await until(lambda: not sim.down)
        await sim.switched()
        status, _ = await api.list(pageNum=1, pageSize=1)
        assert status == 200


async def test_outages_from_the_configuration(http: aiohttp.ClientSession) -> None:
    async with Simulator(gen_seconds=0.01, outages=((0.2, 0.3),)) as sim:
        assert not sim.down
        await until(lambda: sim.down)
        await until(lambda: not sim.down)
        await sim.switched()
        status, _ = await Api(sim, http).list(pageNum=1, pageSize=1)
        assert status == 200 and sim.control()["settings"]["outages"] == 1


async def test_outage_through_the_control_route(http: aiohttp.ClientSession) -> None:
    async with Simulator(gen_seconds=0.01) as sim:
        bad = {"outage": {"seconds": 1, "mode": "sideways"}}
        async with http.post(sim.url + "/__sim/control", json=bad) as refused:
            assert refused.status == 400
            assert "outage mode must be one of refuse, hang" in (await refused.json())["error"]
        async with http.post(sim.url + "/__sim/control", json={"outage": -1}) as refused:
            assert refused.status == 400
        hang = {"outage": {"seconds": 0.3, "mode": "hang"}}
        async with http.post(sim.url + "/__sim/control", json=hang) as accepted:
            assert accepted.status == 200
            assert (await accepted.json())["settings"]["outage"] == "hang"
        await until(lambda: not sim.down)


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="outages must be"):
        Simulator(outages=((1.0, 0.0),))
    with pytest.raises(ValueError, match="outage mode must be one of"):
        Simulator(outage_mode="maybe")


def test_command_line_flags() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--clock-offset", "-60", "--outage", "5:20", "--outage", "60:1.5", "--outage-mode", "hang"]
    )
    config = build_config(args)
    assert config.clock_offset == -60.0
    assert config.outages == ((5.0, 20.0), (60.0, 1.5))
    assert config.outage_mode == "hang"
    for bad in ("5", "x:1", "1:0", "-1:5"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--outage", bad])
