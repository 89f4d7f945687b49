"""final_unit_deduction from a configurable price table: config, control switch, CLI flag."""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import pytest

from kling_async.simulator import Simulator, SimulatorConfig
from kling_async.simulator._cli import add_arguments, build_config

from .helpers import Api


async def _deduction(api: Api, **fields: Any) -> str:
    done = await api.wait(await api.new_task(**fields))
    assert done["task_status"] == "succeed"
    return str(done["final_unit_deduction"])


async def test_config_prices_merge_over_the_defaults(http: aiohttp.ClientSession) -> None:
    config = SimulatorConfig(gen_seconds=0.01, prices={"pro-10": 9, "std-5": "0.50"})
    assert dict(config.prices) == {"std-5": "0.5", "std-10": "2", "pro-5": "3.5", "pro-10": "9"}
    async with Simulator(config) as sim:
        api = Api(sim, http)
        assert await _deduction(api, mode="pro", duration="10") == "9"
        assert await _deduction(api) == "0.5"
        assert await _deduction(api, mode="pro") == "3.5"


async def test_control_switch_prices_tasks_created_afterwards(api: Api) -> None:
    api.sim.control(gen_seconds=0.3)
    early = await api.new_task(mode="pro")
    settings = api.sim.control(prices={"pro-5": 5}, gen_seconds=0.01)["settings"]
    assert settings["prices"]["pro-5"] == "5"
    late = await api.new_task(mode="pro")
    assert (await api.wait(early))["final_unit_deduction"] == "3.5"  # priced when created
    assert (await api.wait(late))["final_unit_deduction"] == "5"


async def test_control_over_http(api: Api) -> None:
    url = api.sim.url + "/__sim/control"
    async with api.http.post(url, json={"prices": {"std-10": 2.5}}) as r:
        assert r.status == 200
        assert (await r.json())["settings"]["prices"]["std-10"] == "2.5"


@pytest.mark.parametrize(
    "prices",
    [{"ultra-5": 1}, {"std-5": -1}, {"std-5": "many"}, {"std-5": True}, [1], {"std-5": None}],
)
async def test_bad_prices_are_400_and_change_nothing(api: Api, prices: Any) -> None:
    url = api.sim.url + "/__sim/control"
    async with api.http.post(url, json={"prices": prices, "concurrency": 9}) as r:
        assert r.status == 400 and "prices" in (await r.json())["error"]
    assert api.sim.control()["settings"]["prices"]["std-5"] == "1"
    assert api.sim.concurrency == 3
    with pytest.raises(ValueError):
        SimulatorConfig(prices=prices)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_price_flags() -> None:
    config = build_config(_parse("--price", "pro-10=9", "--price", "std-5=0.25"))
    assert config.prices["pro-10"] == "9" and config.prices["std-5"] == "0.25"
    assert build_config(_parse()).prices["pro-5"] == "3.5"


@pytest.mark.parametrize("flag", ["pro-10", "pro-12=3", "std-5=x"])
def test_cli_rejects_bad_price_flags(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parse("--price", flag)
    assert f"bad --price {flag!r}" in capsys.readouterr().err
