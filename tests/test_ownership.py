"""Issue 10, end to end through the CLI: whatever a user does between or during runs, no job is
created (paid for) twice, none is skipped, and none gets another job's video."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import CLI, SimThread, job_line, make_client, simulators
from ownership_helpers import FAST, World, by_prompt, line

from kling_async import BadRequestError, FolderBusyError, MultiImageToVideoRequest, cli, run_batch
from kling_async.simulator._core import WATERMARK_SUFFIX

pytestmark = pytest.mark.slow


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A simulator (0.1 s generation) and a jobs file / output folder under tmp_path."""
    with SimThread(concurrency=4) as st:
        yield World(st, tmp_path)


def test_edits_between_runs_keep_each_job_its_task(world: World) -> None:
    """Insert, delete, move, edit, duplicate, re-add: each job keeps its task wherever its
    line goes; only a job never seen before is created; removed jobs stay listed."""
    base = [line(f"job {i}") for i in range(6)]
    world.write(base)
    assert world.run().returncode == 0
    first = by_prompt(world.check(), world)
    assert world.creates() == 6

    world.write([line("new at the top"), *base])  # insert at line 1
    done = world.run()
    assert done.returncode == 0, done.stderr
    rows = world.check()
    assert world.creates() == 7
    assert rows[0]["line"] == 1 and world.prompts[rows[0]["job_id"]] == "new at the top"
    now = by_prompt(rows, world)
    assert {p: now[p] for p in first} == first  # every old job kept its task

    moved = [base[5], base[4], base[3], base[1], base[0], line("new at the top")]
    world.write(moved)  # job 2 deleted, the rest reversed
    done = world.run()
    assert done.returncode == 0, done.stderr
    rows = world.check()
    assert world.creates() == 7
    gone = [row for row in rows if not row["in_jobs_file"]]
    assert [world.prompts[row["job_id"]] for row in gone] == ["job 2"]
    assert gone[0]["state"] == "downloaded" and gone[0]["task_id"] == first["job 2"]
    assert (world.out / gone[0]["files"][0]["path"]).exists()  # paid for: kept on disk
    assert by_prompt(rows, world)["job 0"] == first["job 0"]
    status = world.cli("status", str(world.out))
    assert "(1 no longer in the jobs file)" in status.stdout

    edited = [line("job 5, edited"), *moved[1:], base[4]]  # edit line 1; duplicate job 4
    world.write(edited)
    done = world.run()
    assert done.returncode == 0, done.stderr
    rows = world.check()
    assert world.creates() == 9  # the edited job and the second copy of job 4
    copies = [r for r in rows if r["in_jobs_file"] and world.prompts[r["job_id"]] == "job 4"]
    assert len(copies) == 2 and copies[0]["task_id"] != copies[1]["task_id"]
    assert first["job 4"] in {c["task_id"] for c in copies}

    world.write([*edited[:-1], base[2]])  # one copy of job 4 dropped, job 2 back
    done = world.run()
    assert done.returncode == 0, done.stderr
    rows = world.check()
    assert world.creates() == 9  # job 2 was never forgotten: it gets its own task back
    assert by_prompt(rows, world)["job 2"] == first["job 2"]
    assert world.stats()["creates_by_external_id"] == dict.fromkeys(
        world.stats()["creates_by_external_id"], 1
    )


def test_watermark_flag_is_not_part_of_a_job(world: World) -> None:
    """`--watermark` on a rerun re-creates nothing; jobs created with it get their copy."""
    world.write([line("a"), line("b")])
    assert world.run().returncode == 0
    world.write([line("a"), line("b"), line("c")])
    done = world.run("--watermark")
    assert done.returncode == 0, done.stderr
    rows = {world.prompts.get(r["job_id"], "c"): r for r in world.check()}
    assert world.creates() == 3
    assert [len(rows[p]["files"]) for p in "abc"] == [1, 1, 2]


def test_reused_external_id_is_never_taken_silently(world: World, tmp_path: Path) -> None:
    """An id already on the account (made by another folder) with other content: rejected,
    naming the line, the id and Kling's 1201; adopted only with --adopt-existing."""
    world.write([line("waves on a beach", external_task_id="beach-waves-001")])
    assert world.run().returncode == 0
    other = world.write(
        [line("a cat", external_task_id="beach-waves-001"), line("a dog")],
        tmp_path / "other.jsonl",
    )
    fresh = tmp_path / "fresh"
    done = world.run(out=fresh, jobs=other)
    assert done.returncode == 1
    assert "line 1 (beach-waves-001): rejected" in done.stdout
    assert "1201" in done.stdout and "--adopt-existing" in done.stdout
    assert world.stats()["creates_by_external_id"]["beach-waves-001"] == 1
    rows = world.check(fresh, other)
    assert rows[0]["state"] == "rejected" and rows[0]["task_id"] is None
    assert rows[1]["state"] == "downloaded"
    assert world.run(out=fresh, jobs=other).returncode == 1  # still rejected, nothing sent
    assert world.creates() == 2

    done = world.run("--adopt-existing", out=fresh, jobs=other)
    assert done.returncode == 0, done.stderr
    rows = world.check(fresh, other, adopted=frozenset({"beach-waves-001"}))
    adopted = [row for row in rows if row["line"] == 1]
    assert adopted[0]["task_id"] == world.task("beach-waves-001").task_id
    assert world.creates() == 2


async def test_client_submit_adopts_only_its_own_keys() -> None:
    """After a 1303, `Client.submit` no longer takes a task made elsewhere under the caller's
    id; under a key it made up itself, a task found is its own earlier attempt's."""
    async with simulators() as start:
        sim = await start(concurrency=3)
        async with make_client(sim) as client:
            await client.submit(
                MultiImageToVideoRequest(images=[URL], prompt="theirs"), external_task_id="taken"
            )
            sim.faults.script("create", "1303")
            mine = MultiImageToVideoRequest(images=[URL], prompt="mine")
            with pytest.raises(BadRequestError):
                await client.submit(mine, external_task_id="taken")
            sim.faults.script("create", "1303")
            task = await client.submit(mine)
            assert task.external_task_id and task.external_task_id.startswith("ka-")
        assert sim.stats.as_dict()["accepted_creates"] == 2


URL = "https://example.com/ref.png"


def test_ids_that_look_alike_get_their_own_files(world: World) -> None:
    """Suffixes, case, characters that sanitise alike: plain and watermarked copies of all of
    them are separate files, each its own task's video."""
    ids = ["shot", "shot-wm", "Shot", "SHOT", "sh ot", "sh_ot", "shot.wm", "shot.2", "视频", "动画"]
    world.write([line(f"clip {i}", external_task_id=i, watermark=True) for i in ids])
    done = world.run()
    assert done.returncode == 0, done.stderr
    rows = world.check()
    names = [record["path"].lower() for row in rows for record in row["files"]]
    assert len(names) == 2 * len(ids) == len(set(names))


def test_watermarked_copies_only_for_jobs_that_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server that hands out a watermark_url for every task: only the job that asked for a
    watermark gets (and downloads) the copy."""
    with SimThread(concurrency=4) as st:
        core = st.sim._core
        render, resolve = core.task_json, core.resolve_video

        def always_marked(task: Any) -> dict[str, Any]:
            data = render(task)
            for video in data["task_result"].get("videos", []):
                video["watermark_url"] = core.video_link(task.video_id + WATERMARK_SUFFIX)
            return data

        def serve_marked(name: str) -> Any:
            return resolve(name) or resolve(name.removesuffix(WATERMARK_SUFFIX))

        monkeypatch.setattr(core, "task_json", always_marked)
        monkeypatch.setattr(core, "resolve_video", serve_marked)
        for key, value in st.env().items():
            monkeypatch.setenv(key, value)
        jobs = World(st, tmp_path).write([job_line(1), job_line(2), job_line(3, watermark=True)])
        out = tmp_path / "out"
        assert cli.main(["run", str(jobs), "--out", str(out), *FAST]) == 0
        stats = st.stats()
    files = sorted(p.name for p in (out / "videos").iterdir())
    assert len(files) == 4 and sum(name.endswith(".wm.mp4") for name in files) == 1
    assert stats["requests"]["video"] == 4
    assert "downloaded" in capsys.readouterr().out


def test_three_runs_on_one_folder_one_writer(tmp_path: Path) -> None:
    """Three `run`s at once on one --out: one works, the others exit 2 at once naming the
    folder and the PID that holds it; `status` reads meanwhile."""
    with SimThread(concurrency=4, gen_seconds=1.5) as st:
        world = World(st, tmp_path)
        world.write([line(f"job {i}") for i in range(6)])
        cmd = [*CLI, "run", str(world.jobs), "--out", str(world.out), *FAST]
        procs = [
            subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=world.env
            )
            for _ in range(3)
        ]
        ended: list[tuple[subprocess.Popen[str], str]] = []
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            ended.append((proc, err))
            if proc.returncode == 2 and world.out.exists():
                status = world.cli("status", str(world.out))
                assert status.returncode in (0, 1) or "no batch journal" in status.stderr
        winners = [p for p, _ in ended if p.returncode == 0]
        assert len(winners) == 1, [(p.returncode, e[-300:]) for p, e in ended]
        for proc, err in ended:
            if proc is winners[0]:
                continue
            assert proc.returncode == 2
            assert f"{world.out} is in use by another kling-async process" in err
            assert f"(PID {winners[0].pid})" in err
        world.check()
        assert world.creates() == 6


async def test_python_api_takes_the_same_lock(tmp_path: Path) -> None:
    async with simulators() as start:
        sim = await start(concurrency=2)
        async with make_client(sim) as client:
            requests = [MultiImageToVideoRequest(images=[URL], prompt="x")]
            running = run_batch(client, requests, tmp_path).__aiter__()
            first = await running.__anext__()  # the batch holds the folder now
            with pytest.raises(FolderBusyError, match="one batch per folder"):
                async for _ in run_batch(client, requests, tmp_path):
                    pass
            assert first.ok
            await running.aclose()


def test_download_exit_code_means_every_video_on_disk(world: World) -> None:
    world.write([line("ok 1"), "{oops", line("ok 2")])
    assert world.run().returncode == 1  # line 2 is not a job
    done = world.cli("download", str(world.out), *FAST[-1:])
    assert done.returncode == 1, done.stderr  # its video is not on disk: not 0
    world.write([line("ok 1"), line("ok 2")])
    assert world.run().returncode == 0  # the bad line removed: nothing is missing now
    assert world.cli("download", str(world.out), "--no-progress").returncode == 0
    rows = world.check()
    assert len(rows) == 2  # the rejected, never-billed line is gone from the manifest


def test_removed_jobs_task_is_still_followed_and_downloaded(tmp_path: Path) -> None:
    """A line removed while its task runs (already paid for): followed, downloaded, listed."""
    with SimThread(concurrency=4, gen_seconds=1.0) as st:
        removed_while_running(World(st, tmp_path))


def removed_while_running(world: World) -> None:
    world.write([line("keep"), line("drop")])
    cmd = [*CLI, "run", str(world.jobs), "--out", str(world.out), *FAST]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=world.env)
    deadline = time.monotonic() + 30
    while world.creates() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.communicate(timeout=10)
    world.write([line("keep")])
    done = world.run()
    assert done.returncode == 0, done.stderr
    rows = world.check()
    assert world.creates() == 2
    (gone,) = [row for row in rows if not row["in_jobs_file"]]
    assert gone["state"] == "downloaded" and gone["files"]
    assert world.stats()["tasks_by_status"]["succeed"] == 2
