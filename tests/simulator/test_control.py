"""Control API over HTTP, callbacks to a local receiver, and the command line."""

from __future__ import annotations

import argparse
import ast
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import kling_async.simulator as simulator_pkg
from kling_async.simulator import Simulator
from kling_async.simulator._cli import add_arguments, banner, build_config, main

from .helpers import Api


async def _post(http: aiohttp.ClientSession, url: str, body: Any = None) -> tuple[int, Any]:
    async with http.post(url, json=body) as r:
        return r.status, await r.json()


async def test_stats_over_http(api: Api):
    await api.new_task(external_task_id="s1", prompt="p1")
    api.sim.faults.script("create", "1303")
    await api.create()
    async with api.http.get(api.sim.url + "/__sim/stats") as r:
        doc = await r.json()
    stats = doc["stats"]
    assert stats["requests"]["create"] == 2
    assert stats["accepted_creates"] == 1
    assert stats["creates_by_external_id"] == {"s1": 1}
    assert stats["creates_by_prompt"] == {"p1": 1}
    assert stats["rejected_concurrency"] == 1
    assert stats["errors_by_code"] == {"1303": 1}
    assert stats["peak_running"] == 1
    assert doc["settings"]["concurrency"] == 3
    assert doc["tasks"] == 1
    assert set(stats) == set(api.sim.stats.as_dict())


async def test_reset_over_http_keeps_state(api: Api):
    api.sim.control(gen_seconds=5.0)
    await api.new_task()
    status, doc = await _post(api.http, api.sim.url + "/__sim/reset")
    assert status == 200
    assert doc["stats"]["requests"] == {}
    assert doc["stats"]["accepted_creates"] == 0
    assert doc["stats"]["running"] == 1
    assert doc["stats"]["peak_running"] == 1
    assert doc["stats"]["tasks_by_status"]["submitted"] == 1


async def test_control_over_http(api: Api):
    url = api.sim.url + "/__sim/control"
    status, doc = await _post(
        api.http,
        url,
        {
            "concurrency": 7,
            "held_slots": 2,
            "rate_limit": 100,
            "advance": 10,
            "fail_rate": 0.5,
            "gen_seconds": 0.01,
            "callbacks": False,
            "duplicate_callbacks": True,
            "fault_rates": {"query": {"5000": 0.25}},
            "fault_scripts": {"create": ["5001", "reset"]},
        },
    )
    assert status == 200, doc
    settings = doc["settings"]
    assert (settings["concurrency"], settings["held_slots"], settings["rate_limit"]) == (7, 2, 100)
    assert settings["clock_offset"] == 10
    assert settings["faults"] == {
        "rates": {"query": {"5000": 0.25}},
        "scripts": {"create": ["5001", "reset"]},
    }
    assert (api.sim.concurrency, api.sim.held_slots) == (7, 2)
    status, doc = await _post(api.http, url, {"clear_faults": True, "rate_limit": None})
    assert doc["settings"]["faults"] == {"rates": {}, "scripts": {}}
    assert doc["settings"]["rate_limit"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"concurrency": -1},
        {"concurrency": "3"},
        {"nonsense": 1},
        {"fault_rates": {"create": {"boom": 0.1}}},
        {"fault_rates": {"moon": {"5000": 0.1}}},
        {"fault_scripts": {"create": "5000"}},
        {"fail_rate": 2},
        {"rate_limit": 0},
        {"clear_faults": "everything"},
        [1, 2],
    ],
)
async def test_bad_control_is_400_and_changes_nothing(api: Api, body: Any):
    status, doc = await _post(api.http, api.sim.url + "/__sim/control", body)
    assert status == 400 and "error" in doc
    assert api.sim.concurrency == 3


async def test_control_needs_no_auth_but_api_does(api: Api):
    async with api.http.get(api.sim.url + "/__sim/stats") as r:
        assert r.status == 200
    async with api.http.get(api.sim.url + "/v1/videos/multi-image2video") as r:
        assert r.status == 401
    assert api.sim.stats.requests == {"list": 1}


# -- callbacks --------------------------------------------------------------------------------


async def _until(predicate: Any, timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline
        await asyncio.sleep(0.01)


async def test_callbacks_follow_status_changes(api: Api, receiver: Any):
    url, received = receiver
    task_id = await api.new_task(callback_url=url, external_task_id="cb-1")
    await _until(lambda: len(received) == 3)
    statuses = sorted(b["task_status"] for b in received)
    assert statuses == ["processing", "submitted", "succeed"]
    final = next(b for b in received if b["task_status"] == "succeed")
    assert "code" not in final  # flat, no envelope
    assert final["task_id"] == task_id
    assert final["task_info"] == {"external_task_id": "cb-1"}
    assert final["task_result"]["videos"][0]["url"].startswith(api.sim.video_url)
    _, single = await api.query(task_id)
    assert set(final) == set(single["data"])
    await _until(lambda: api.sim.stats.callbacks_sent == 3)


async def test_duplicate_callbacks(http: aiohttp.ClientSession, receiver: Any):
    url, received = receiver
    async with Simulator(gen_seconds=0.02, duplicate_callbacks=True) as sim:
        await Api(sim, http).new_task(callback_url=url)
        await _until(lambda: len(received) == 6)
        assert sorted(b["task_status"] for b in received).count("succeed") == 2


async def test_callbacks_can_be_disabled(http: aiohttp.ClientSession, receiver: Any):
    url, received = receiver
    async with Simulator(gen_seconds=0.01, callbacks=False) as sim:
        api = Api(sim, http)
        await api.wait(await api.new_task(callback_url=url))
        await asyncio.sleep(0.05)
    assert received == []


async def test_failed_callbacks_are_ignored(api: Api):
    done = await api.wait(await api.new_task(callback_url="http://127.0.0.1:9/nowhere"))
    assert done["task_status"] == "succeed"
    await _until(lambda: api.sim.stats.callbacks_failed >= 1)


# -- command line -----------------------------------------------------------------------------


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_defaults():
    args = _parse()
    assert (args.host, args.port, args.video_port, args.concurrency) == ("127.0.0.1", 8080, 8081, 5)
    assert (args.gen_seconds, args.rate_limit, args.video_bytes, args.url_ttl) == (
        3.0,
        None,
        None,
        None,
    )
    config = build_config(args)
    assert config.retention_days == 30 and config.api_key and config.callbacks


def test_cli_options_build_the_config():
    args = _parse(
        "--port", "0", "--video-port", "0", "--concurrency", "9", "--gen-seconds", "0.5",
        "--gen-spread", "0.1", "--fail-rate", "0.2", "--seed", "3", "--access-key", "ak",
        "--secret-key", "s" * 32, "--api-key", "", "--rate-limit", "10", "--video-bytes", "1000",
        "--retention-days", "2", "--url-ttl", "60", "--fault-rate", "create:5000=0.1",
        "--fault-rate", "video:latency:0.5=0.2", "--fault-script", "create:5002,lost",
        "--duplicate-callbacks",
    )  # fmt: skip
    config = build_config(args)
    assert (config.port, config.concurrency, config.gen_seconds, config.seed) == (0, 9, 0.5, 3)
    assert (config.access_key, config.api_key, config.rate_limit) == ("ak", None, 10)
    assert (config.video_bytes, config.retention_days, config.url_ttl) == (1000, 2, 60)
    assert config.faults.rates["create"]["5000"] == 0.1
    assert config.faults.rates["video"]["latency:0.5"] == 0.2
    assert config.faults.scripts["create"] == ("5002", "lost")
    assert config.duplicate_callbacks


@pytest.mark.parametrize(
    "argv",
    [["--fault-rate", "create:5000"], ["--fault-rate", "video:lost=0.1"], ["--port", "x"]],
)
def test_cli_rejects_bad_flags(argv: list[str], capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        _parse(*argv)


async def test_banner_has_pasteable_exports():
    async with Simulator() as sim:
        text = banner(sim)
    assert f"export KLING_BASE_URL={sim.url} KLING_ACCESS_KEY={sim.access_key}" in text
    assert f"KLING_SECRET_KEY={sim.secret_key}" in text


async def test_cli_serves_until_sigterm(http: aiohttp.ClientSession):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kling_async.simulator", "--port", "0", "--video-port", "0",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        lines = [(await asyncio.wait_for(proc.stdout.readline(), 20)).decode() for _ in range(2)]
        base = lines[1].split()[1].partition("=")[2]
        async with http.get(base + "/__sim/stats") as r:
            assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0


def test_main_reports_bad_config(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exc:  # refused by argparse, naming the flag
        main(["--secret-key", "short", "--port", "0", "--video-port", "0"])
    assert exc.value.code == 2
    assert "--secret-key must be at least 32 bytes (got 5)" in capsys.readouterr().err
    rates = ["--fault-rate", "create:5000=0.7", "--fault-rate", "create:reset=0.7"]
    assert main([*rates, "--port", "0", "--video-port", "0"]) == 2  # checked as a whole
    assert "error: " in capsys.readouterr().err


def test_public_names_are_sorted():
    assert simulator_pkg.__all__ == sorted(simulator_pkg.__all__)
    for name in simulator_pkg.__all__:
        assert getattr(simulator_pkg, name).__doc__


def test_simulator_is_self_contained():
    """No import reaches kling_async outside kling_async/simulator (it must not share bugs)."""
    package = Path(simulator_pkg.__file__).parent
    for module in package.glob("*.py"):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level <= 1, f"{module.name} imports from a parent package"
                if node.level == 0 and node.module:
                    assert not node.module.startswith("kling_async"), module.name
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("kling_async"), module.name


async def test_a_stopped_simulator_cannot_restart():
    sim = Simulator()
    await sim.start()
    await sim.stop()
    with pytest.raises(RuntimeError):
        await sim.start()
