"""Saved state: a simulator restarted on the same state file has the account's tasks."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import aiohttp
import pytest

from kling_async.simulator import Simulator

from .helpers import Api

FAST = {"concurrency": 3, "gen_seconds": 0.05, "gen_spread": 0.0}


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def test_restart_keeps_tasks_and_carries_them_on_by_wall_time(
    tmp_path: Path, http: aiohttp.ClientSession
):
    state = tmp_path / "state.jsonl"
    async with Simulator(**FAST, state_path=state) as first:
        api = Api(first, http)
        done_id = await api.new_task(
            external_task_id="done-1", mode="pro", watermark_info={"enabled": True}
        )
        done = await api.wait(done_id)
        assert done["final_unit_deduction"] == "3.5"  # its price is part of what is kept
        first.control(gen_seconds=2.0, fail_rate=1.0)  # the next one is slow and will fail
        running_id = await api.new_task(external_task_id="running-1")
        running = first.task(running_id)
    assert running is not None and running["task_status"] in ("submitted", "processing")

    # Another configuration on purpose: saved tasks keep their own plan, not the new settings.
    async with Simulator(concurrency=3, gen_seconds=60, state_path=state) as second:
        api = Api(second, http)
        again = second.task("done-1")
        assert again is not None
        # Same id, created_at, video id, links to the same origin; updated_at is the planned end
        # (the first run stamped it when its timer fired, a little later on a busy machine).
        assert {**again, "updated_at": 0} == {**done, "updated_at": 0}
        assert again["created_at"] <= again["updated_at"] <= done["updated_at"]
        async with http.get(done["task_result"]["videos"][0]["url"]) as resp:  # an old link
            assert resp.status == 200
            served = await resp.read()
        assert hashlib.sha256(served).hexdigest() == second.video_sha256(
            done["task_result"]["videos"][0]["id"]
        )
        now = second.task("running-1")
        assert now is not None and now["task_status"] in ("submitted", "processing")
        assert now["created_at"] == running["created_at"] and now["task_id"] == running_id
        stats = second.stats
        assert stats.running == 1  # it still holds a slot of the account
        assert dict(stats.creates_by_external_id) == {"done-1": 1, "running-1": 1}
        finished = await api.wait(running_id, timeout=10)  # ~2 s after its create, not 60
        assert finished["task_status"] == "failed" and finished["task_status_msg"]
        assert second.stats.running == 0
        status, data = await api.create(external_task_id="running-1")  # still one account
        assert status == 400 and data["code"] == 1201
        newer = await api.new_task()
        assert int(newer) > int(running_id)
    tasks = [r["task"] for r in _records(state) if "task" in r]
    assert [t["seq"] for t in tasks] == [1, 2, 3]  # type: ignore[index]


async def test_a_record_cut_short_by_a_kill_is_dropped(tmp_path: Path, http: aiohttp.ClientSession):
    state = tmp_path / "state.jsonl"
    async with Simulator(**FAST, state_path=state) as first:
        kept = await Api(first, http).new_task()
    with state.open("a", encoding="utf-8") as fh:
        fh.write('{"task": {"seq": 2, "task_id": "9')  # the process died mid-write
    async with Simulator(**FAST, state_path=state) as second:
        assert second.task(kept) is not None
        added = await Api(second, http).new_task()
    async with Simulator(**FAST, state_path=state) as third:
        assert third.task(kept) is not None and third.task(added) is not None
    assert all(line.endswith("}") for line in state.read_text().splitlines())


async def test_a_foreign_file_is_refused_and_left_alone(tmp_path: Path):
    state = tmp_path / "notes.jsonl"
    state.write_text('{"hello": 1}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="not a simulator state file"):
        await Simulator(**FAST, state_path=state).start()
    assert state.read_text() == '{"hello": 1}\n'


async def test_a_taken_video_port_falls_back_to_a_free_one(tmp_path: Path):
    state = tmp_path / "state.jsonl"
    async with Simulator(**FAST, state_path=state) as first:
        port = int(first.video_url.rsplit(":", 1)[1])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        async with Simulator(**FAST, state_path=state) as second:
            assert not second.video_url.endswith(f":{port}")
    ports = [r["video_port"] for r in _records(state) if "video_port" in r]
    assert ports[0] == port and ports[-1] != port
