"""`_requery`: when a stored task answer is stale, and asking many tasks again for little."""

from __future__ import annotations

from datetime import UTC, datetime

from batch_helpers import make_client, make_requests
from fault_helpers import StartSim, start_sim  # noqa: F401  (fixture)

from kling_async._requery import FRESH, Requery, stale
from kling_async._server_time import ServerClock
from kling_async.models import Task


def task(updated: float | None) -> Task:
    stamp = None if updated is None else int(updated * 1000)
    return Task.model_validate({"task_id": "t1", "task_status": "succeed", "updated_at": stamp})


def clock_at(server_now: float | None) -> ServerClock:
    clock = ServerClock(wall=lambda: 1_790_000_000.0)
    if server_now is not None:  # one answer whose Date says `server_now`
        date = datetime.fromtimestamp(server_now, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
        clock.observe(date, 1_790_000_000.0, 1_790_000_000.0)
    return clock


def test_an_answer_this_process_had_is_fresh_for_a_while() -> None:
    clock = clock_at(None)  # unknown offset does not matter: we know when we had it
    assert not stale(task(None), 100.0, clock, 100.0 + FRESH)
    assert stale(task(None), 100.0, clock, 100.0 + FRESH + 1)


def test_a_stored_answer_is_judged_by_the_tasks_last_change_in_server_time() -> None:
    now = 1_800_000_000.0
    assert not stale(task(now - 60), None, clock_at(now), 0.0)
    assert stale(task(now - FRESH - 5), None, clock_at(now), 0.0)
    assert stale(task(now - 60), None, clock_at(None), 0.0)  # server's clock not known yet
    assert stale(task(None), None, clock_at(now), 0.0)  # no updated_at: age unknown


async def test_many_stale_tasks_are_asked_in_one_list_page(start_sim: StartSim) -> None:  # noqa: F811
    sim = await start_sim(concurrency=8, gen_seconds=0.05)
    async with make_client(sim, concurrency=8) as client:
        created = [await client.submit(r) for r in make_requests(8)]
        tasks = [await client.wait(t) for t in created]
        sim.reset_stats()
        requery = Requery(client)
        first = await requery.fresh(tasks[0], tasks[1:])
        assert first.task_id == tasks[0].task_id and first.videos
        for other in tasks[1:]:  # answered by the same round: no request
            assert (await requery.fresh(other)).task_id == other.task_id
        assert sim.stats.requests == {"list": 1}
        # Two or fewer wanted: single queries are cheaper than a page.
        await requery.fresh(tasks[0], tasks[1:2])
        assert sim.stats.requests == {"list": 1, "query": 1}
        assert (requery.list_calls, requery.get_calls) == (1, 1)
