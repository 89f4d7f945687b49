"""TaskTracker: status sweeps with the list endpoint, stragglers, pacing (kling_async._poll)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from kling_async import (
    AccountError,
    AuthenticationError,
    BadRequestError,
    Event,
    PollPolicy,
    ResponseValidationError,
    ServerError,
    Task,
    TaskStatus,
    TaskSubmitted,
    TaskUnreadable,
)
from kling_async._poll import TaskTracker
from kling_async.models import TaskInfo

BASE_MS = 1_722_769_557_000


def mk(tid: str, status: str = "submitted", *, created: int = 0, took: float = 0) -> Task:
    """A task created `created` seconds after BASE_MS, updated `took` seconds later."""
    ms = BASE_MS + created * 1000
    return Task.model_validate(
        {
            "task_id": tid,
            "task_status": status,
            "created_at": ms,
            "updated_at": ms + int(took * 1000),
        }
    )


def wire(task: Task) -> dict[str, Any]:
    """The task as the query and list endpoints send it (epoch milliseconds)."""
    assert task.created_at is not None and task.updated_at is not None
    return {
        "task_id": task.task_id,
        "task_status": task.task_status.value,
        "task_status_msg": task.task_status_msg,
        "created_at": int(task.created_at.timestamp() * 1000),
        "updated_at": int(task.updated_at.timestamp() * 1000),
    }


class FakeApi:
    """The server's view: tasks newest first; records list and get calls."""

    def __init__(self, *tasks: Task) -> None:
        self.tasks: dict[str, Task] = {t.task_id: t for t in tasks}
        self.hidden: dict[str, Task] = {}  # found by a single query, not by the list
        self.odd: dict[str, dict[str, Any]] = {}  # fields a single query's answer overrides
        self.lists: list[tuple[int, int]] = []
        self.gets: list[str] = []
        self.fail: BaseException | None = None

    def set(self, task: Task) -> None:
        self.tasks[task.task_id] = task

    def finish(self, tid: str, status: str = "succeed", took: float = 60) -> None:
        old = self.tasks[tid]
        created = int((old.created_at.timestamp() * 1000 - BASE_MS) / 1000)
        self.set(mk(tid, status, created=created, took=took))

    async def list_page(self, page: int, size: int) -> list[Any]:
        self.lists.append((page, size))
        if self.fail is not None:
            raise self.fail
        ordered = sorted(self.tasks.values(), key=lambda t: t.created_at, reverse=True)
        return [wire(t) for t in ordered[(page - 1) * size : page * size]]

    async def get_one(self, tid: str) -> dict[str, Any]:
        self.gets.append(tid)
        if self.fail is not None:
            raise self.fail
        found = self.tasks.get(tid) or self.hidden.get(tid)
        if found is None:
            raise BadRequestError("task not found", status=404, code=1203)
        return {**wire(found), **self.odd.get(tid, {})}


class Pace:
    """Fake sleep + monotonic clock; `on_sleep` may change the server between sweeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []
        self.on_sleep: Callable[[int], None] = lambda n: None

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        self.on_sleep(len(self.waits))
        await asyncio.sleep(0)

    def monotonic(self) -> float:
        return self.now


POLICY = PollPolicy(interval=1.0, interval_max=8.0, backoff=2.0, min_interval=0.05)


def tracker(api: FakeApi, pace: Pace, **kw: Any) -> TaskTracker:
    kw.setdefault("policy", POLICY)
    return TaskTracker(
        list_page=api.list_page,
        get_one=api.get_one,
        sleep=pace.sleep,
        monotonic=pace.monotonic,
        **kw,
    )


async def test_two_tasks_use_single_gets() -> None:
    api = FakeApi(mk("a"), mk("b"), mk("c"))
    tr = tracker(api, Pace())
    tr._tracked.clear()
    for t in ("a", "b"):
        tr.track(api.tasks[t])
    api.finish("a")
    assert await tr.sweep() == 1
    assert api.lists == []
    assert sorted(api.gets) == ["a", "b"]
    assert len(tr) == 1
    assert (tr.get_calls, tr.list_calls) == (2, 0)
    await tr.aclose()


async def test_many_tasks_use_the_list_and_stop_when_all_found() -> None:
    api = FakeApi(*(mk(f"t{i}", created=i) for i in range(6)))  # t5 is the newest
    tr = tracker(api, Pace(), page_size=2)
    for tid in ("t5", "t4", "t3"):
        tr.track(api.tasks[tid])
    api.finish("t3")
    api.finish("t5", "failed")
    assert await tr.sweep() == 2
    assert api.lists == [(1, 2), (2, 2)]  # all three seen by page 2
    assert api.gets == []
    assert len(tr) == 1
    await tr.aclose()


async def test_short_page_stops_paging_and_stragglers_fetched_singly() -> None:
    api = FakeApi(mk("a", created=3), mk("b", created=2), mk("c", created=1))
    tr = tracker(api, Pace(), page_size=2)
    for tid in ("a", "b", "c"):
        tr.track(api.tasks[tid])
    api.finish("a")
    api.tasks.pop("c")  # the list does not show it any more, a single query does
    api.hidden["c"] = mk("c", "succeed", created=1, took=30)
    assert await tr.sweep() == 2
    assert api.lists == [(1, 2), (2, 2)]  # page 2 is empty, hence short
    assert api.gets == ["c"]
    assert len(tr) == 1
    await tr.aclose()


async def test_paging_stops_past_the_oldest_tracked_task() -> None:
    api = FakeApi(*(mk(f"t{i}", created=i) for i in range(10)))  # t9 is the newest
    tr = tracker(api, Pace(), page_size=2, max_pages=5)
    for tid in ("t9", "t8", "t7"):
        tr.track(api.tasks[tid])
    api.hidden["t7"] = api.tasks.pop("t7")
    await tr.sweep()
    # page 1: t9 t8; page 2: t6 t5, older than t7 (the oldest tracked): stop, query t7 alone
    assert api.lists == [(1, 2), (2, 2)]
    assert api.gets == ["t7"]
    await tr.aclose()


async def test_max_pages() -> None:
    api = FakeApi(*(mk(f"t{i}", created=100 - i) for i in range(20)))  # t0 is the newest
    tr = tracker(api, Pace(), page_size=2, max_pages=3)
    api.hidden["old"] = mk("old", created=0)
    for t in (api.tasks["t0"], api.tasks["t1"], api.hidden["old"]):
        tr.track(t)
    await tr.sweep()
    assert api.lists == [(1, 2), (2, 2), (3, 2)]
    assert api.gets == ["old"]
    await tr.aclose()


async def test_futures_resolve_on_terminal_and_callbacks_run() -> None:
    api = FakeApi(mk("a", created=1), mk("b", created=2), mk("c", created=3))
    pace = Pace()
    events: list[Event] = []
    tr = tracker(api, pace, event_hook=events.append)
    seen: list[tuple[str, TaskStatus]] = []

    def script(n: int) -> None:
        if n == 1:
            api.set(mk("a", "processing", created=1))
        if n == 2:
            api.finish("a")
        if n == 4:
            api.finish("b", "failed")
            api.finish("c")

    pace.on_sleep = script
    futures = [tr.track(api.tasks[t]) for t in ("a", "b", "c")]
    for fut in futures:
        fut.add_done_callback(lambda f: seen.append((f.result().task_id, f.result().status)))
    done = await asyncio.wait_for(asyncio.gather(*futures), 2)
    assert [t.status for t in done] == [TaskStatus.SUCCEED, TaskStatus.FAILED, TaskStatus.SUCCEED]
    assert sorted(seen) == [("a", TaskStatus.SUCCEED), ("b", TaskStatus.FAILED), ("c", "succeed")]
    assert len(tr) == 0
    kinds = [(e.kind, getattr(e, "task_id", None)) for e in events]
    assert ("task_status", "a") in kinds
    assert kinds.count(("task_finished", "a")) == 1
    waits, sweeps = len(pace.waits), tr.sweeps
    for _ in range(5):
        await asyncio.sleep(0)
    assert (len(pace.waits), tr.sweeps) == (waits, sweeps)  # nothing left: the sweeper stops
    await tr.aclose()


async def test_interval_backs_off_and_resets() -> None:
    api = FakeApi(mk("a"))
    pace = Pace()
    tr = tracker(api, pace)

    def script(n: int) -> None:
        if n == 5:
            api.set(mk("a", "processing"))
        if n == 8:
            api.finish("a")

    pace.on_sleep = script
    await asyncio.wait_for(tr.track(api.tasks["a"]), 2)
    # unchanged sweeps back off ×2 up to 8 s; a change resets to 1 s
    assert pace.waits == [1.0, 2.0, 4.0, 8.0, 8.0, 1.0, 2.0, 4.0]


async def test_track_terminal_task_resolves_at_once() -> None:
    api = FakeApi()
    pace = Pace()
    tr = tracker(api, pace)
    done = mk("z", "succeed")
    fut = tr.track(done)
    assert fut.done()
    assert fut.result() is done
    assert len(tr) == 0
    await asyncio.sleep(0)
    assert (tr.sweeps, pace.waits) == (0, [])  # no sweeper started


async def test_track_twice_shares_the_future() -> None:
    api = FakeApi(mk("a"))
    pace = Pace()
    tr = tracker(api, pace)
    one = tr.track(api.tasks["a"])
    two = tr.track(api.tasks["a"])
    assert one is two
    assert len(tr) == 1
    pace.on_sleep = lambda n: api.finish("a")
    await asyncio.wait_for(one, 2)


async def test_unknown_straggler_fails_its_future() -> None:
    api = FakeApi(mk("a"), mk("b"))
    tr = tracker(api, Pace())
    lost = tr.track(mk("ghost"))  # Kling answers 1203 for it
    kept = tr.track(api.tasks["a"])
    assert await tr.sweep() == 1
    with pytest.raises(BadRequestError) as info:
        await lost
    assert info.value.code == 1203
    assert not kept.done()
    assert len(tr) == 1
    await tr.aclose()


async def test_other_bad_request_is_not_a_lost_task() -> None:
    api = FakeApi(mk("a"))
    tr = tracker(api, Pace())
    fut = tr.track(api.tasks["a"])

    async def get_one(tid: str) -> Task:
        raise BadRequestError("bad", status=400, code=1200)

    tr._get_one = get_one
    with pytest.raises(BadRequestError):
        await tr.sweep()
    assert not fut.done()
    await tr.aclose()


@pytest.mark.parametrize(
    "error",
    [
        AuthenticationError("bad key", status=401, code=1002),
        AccountError("arrears", status=429, code=1101),
    ],
)
async def test_fatal_error_fails_all_futures(error: Exception) -> None:
    api = FakeApi(*(mk(f"t{i}", created=i) for i in range(3)))
    api.fail = error
    tr = tracker(api, Pace())
    futures = [tr.track(t) for t in list(api.tasks.values())]
    results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 2)
    assert all(r is error for r in results)
    assert len(tr) == 0


async def test_transient_error_keeps_sweeping() -> None:
    api = FakeApi(mk("a"))
    api.fail = ServerError("down", status=500, code=5000)
    pace = Pace()

    def script(n: int) -> None:
        if n == 3:
            api.fail = None
            api.finish("a")

    pace.on_sleep = script
    tr = tracker(api, pace)
    assert (await asyncio.wait_for(tr.track(api.tasks["a"]), 2)).status is TaskStatus.SUCCEED
    assert pace.waits[:3] == [1.0, 2.0, 4.0]  # failed sweeps count as "nothing changed"


async def test_hint_wakes_the_sweeper() -> None:
    api = FakeApi(mk("a"))
    tr = TaskTracker(
        list_page=api.list_page,
        get_one=api.get_one,
        policy=PollPolicy(interval=60.0, interval_max=60.0),
    )  # real sleep: without the hint nothing would happen for a minute
    fut = tr.track(api.tasks["a"])
    await asyncio.sleep(0.01)
    assert api.gets == []
    api.finish("a")
    tr.hint()
    assert (await asyncio.wait_for(fut, 1)).status is TaskStatus.SUCCEED
    assert api.gets == ["a"]


async def test_hint_before_pause_skips_it() -> None:
    api = FakeApi(mk("a"))
    pace = Pace()
    tr = tracker(api, pace)
    tr.hint()
    api.finish("a")
    await asyncio.wait_for(tr.track(api.tasks["a"]), 1)
    assert pace.waits == []


async def test_observe_from_outside() -> None:
    api = FakeApi(mk("a"))
    tr = TaskTracker(list_page=api.list_page, get_one=api.get_one, policy=PollPolicy(interval=60.0))
    fut = tr.track(api.tasks["a"])
    tr.observe(mk("unknown", "succeed"))  # not tracked: ignored
    tr.observe(mk("a", "succeed", took=42))
    assert fut.result().status is TaskStatus.SUCCEED
    assert list(tr.pacer.durations) == [42.0]
    await tr.aclose()


async def test_aclose_cancels_waiters() -> None:
    api = FakeApi(mk("a"))
    tr = TaskTracker(list_page=api.list_page, get_one=api.get_one, policy=PollPolicy())
    fut = tr.track(api.tasks["a"])
    await tr.aclose()
    assert fut.cancelled()
    assert len(tr) == 0


async def test_next_delay_follows_the_pacer() -> None:
    """Backs off while nothing is learnt; then the lost-time rule over the unclaimed tasks."""
    api = FakeApi()
    pace = Pace()
    policy = PollPolicy(interval=1.0, interval_max=30.0, min_interval=0.05, due_fraction=0.02)
    tr = tracker(api, pace, policy=policy)
    pace.now = 1000.0
    tr.pacer.begin(1000.0)
    tr.pacer.interval = 4.0
    # no history: the current back-off interval, counted from the sweeper's start
    tr._tracked["x"] = _entry(mk("x"), since=1000.0)
    assert tr._next_delay() == 4.0
    pace.now = 1003.0
    assert tr._next_delay() == pytest.approx(1.0)
    # learnt: tasks take 100–200 s; seen running by a sweep at 1000
    tr.pacer.durations.extend([100.0, 125.0, 150.0, 175.0, 200.0])
    tr.pacer.swept(1000.0, changed=0)
    assert tr._next_delay() == 30.0  # nothing can end for ~100 s: capped by interval_max
    pace.now = 1099.0  # the window opens at 1100: a few seconds into it, the budget (3 s) is met
    assert 1.0 < tr._next_delay() < 30.0
    # a task that callbacks announced finished is not waited for; alone, it is confirmed now
    tr._tracked["x"].claimed = True
    assert tr._next_delay() == 0.05
    tr._tracked.clear()


def _entry(task: Task, since: float) -> Any:
    from kling_async._followed import Followed

    return Followed(task, since)


async def test_list_page_sized_to_what_is_tracked() -> None:
    api = FakeApi(*(mk(f"t{i}", created=i) for i in range(12)))
    tr = tracker(api, Pace(), page_size=500)
    for tid in ("t11", "t10", "t9"):
        tr.track(api.tasks[tid])
    await tr.sweep()
    assert api.lists == [(1, 30)]  # a small page finds the newest tasks
    for i in range(9):
        tr.track(api.tasks[f"t{i}"])
    await tr.sweep()
    assert api.lists[-1] == (1, 34)  # twice the 12 tracked, + 10
    await tr.aclose()


async def test_malformed_list_items_fall_back_to_single_queries() -> None:
    api = FakeApi(mk("a", created=3), mk("b", created=2), mk("c", created=1))
    tr = tracker(api, Pace())
    for t in list(api.tasks.values()):
        tr.track(t)
    real_list = api.list_page

    async def odd_list(page: int, size: int) -> list[Any]:
        items = await real_list(page, size)
        items[0] = dict(items[0], task_status="queued")  # 'a' is unreadable in the list
        return [*items, "junk", {"task_id": None}]

    tr._list_page = odd_list
    api.finish("a")
    api.finish("b")
    assert await tr.sweep() == 2
    assert api.gets == ["a"]
    assert len(tr) == 1
    await tr.aclose()


@pytest.mark.parametrize(
    "kwargs", [{"interval": 0}, {"timeout": -1}, {"backoff": 0.5}, {"due_fraction": 0}]
)
def test_poll_policy_validated(kwargs: dict[str, float]) -> None:
    from kling_async import ConfigurationError

    with pytest.raises(ConfigurationError):
        PollPolicy(**kwargs)


def test_event_hook_failure_is_contained(caplog: pytest.LogCaptureFixture) -> None:
    from kling_async._events import emit

    def broken(event: Event) -> None:
        raise RuntimeError("user bug")

    with caplog.at_level(logging.DEBUG, logger="kling_async"):
        emit(broken, TaskSubmitted("t", "e"))  # must not raise
        emit(None, TaskSubmitted("t", "e"))
    assert "event hook raised" in caplog.text
    assert "task_submitted {'task_id': 't', 'external_task_id': 'e'}" in caplog.text


# -- answers that cannot be read --------------------------------------------------------------


async def test_unreadable_answers_fail_the_result_but_keep_following() -> None:
    api = FakeApi(mk("a"))
    events: list[Event] = []
    tr = tracker(api, Pace(), event_hook=events.append)
    task = api.tasks["a"]
    done, ended = tr.track(task), tr.ended(task)
    api.odd["a"] = {"task_status": "queued"}
    for _ in range(POLICY.unreadable_limit - 1):
        await tr.sweep()
        assert not done.done()
    await tr.sweep()
    error = done.exception()
    assert isinstance(error, ResponseValidationError)
    assert (error.field, error.value) == ("task_status", "'queued'")
    assert not ended.done() and len(tr) == 1  # still followed: its slot stays held
    later = tr.track(task)
    assert later is not done and not later.done()  # a new waiter waits afresh
    del api.odd["a"]
    api.finish("a")
    await tr.sweep()
    assert later.result().status is TaskStatus.SUCCEED
    assert ended.done() and len(tr) == 0
    bad = [e for e in events if isinstance(e, TaskUnreadable)]
    assert len(bad) == POLICY.unreadable_limit
    assert bad[0].task_id == "a" and bad[0].field == "task_status"
    await tr.aclose()


async def test_a_readable_answer_resets_the_count() -> None:
    api = FakeApi(mk("a"))
    tr = tracker(api, Pace())
    done = tr.track(api.tasks["a"])
    for odd in (True, True, False, True, True):
        api.odd["a"] = {"created_at": "yesterday"} if odd else {}
        await tr.sweep()
    assert not done.done()  # never three in a row
    await tr.aclose()


async def test_an_unreadable_answer_that_says_finished_frees_the_slot() -> None:
    api = FakeApi(mk("a"))
    tr = tracker(api, Pace())
    task = api.tasks["a"]
    done, ended = tr.track(task), tr.ended(task)
    api.finish("a")
    api.odd["a"] = {"created_at": "yesterday"}
    await tr.sweep()
    assert ended.done() and not done.done()  # Kling counts it no more; the caller waits on
    for _ in range(POLICY.unreadable_limit - 1):
        await tr.sweep()
    assert isinstance(done.exception(), ResponseValidationError)
    assert len(tr) == 0  # over at Kling: nothing left to follow
    await tr.aclose()


async def test_an_unreadable_task_is_given_up_at_its_deadline() -> None:
    api = FakeApi(mk("a"))
    pace = Pace()
    tr = tracker(api, pace, policy=PollPolicy(interval=1, timeout=100, unreadable_limit=1))
    task = api.tasks["a"]
    done, ended = tr.track(task), tr.ended(task)
    api.odd["a"] = {"task_status": 7}
    await tr.sweep()
    assert isinstance(done.exception(), ResponseValidationError)
    pace.now = 99.0
    await tr.sweep()
    assert not ended.done()
    pace.now = 100.0
    await tr.sweep()
    assert ended.done() and len(tr) == 0
    assert not tr.track(task).done() and len(tr) == 1  # a later wait() follows it afresh
    await tr.aclose()


async def test_a_readable_task_has_no_deadline() -> None:
    api = FakeApi(mk("a"))
    pace = Pace()
    tr = tracker(api, pace, policy=PollPolicy(interval=1, timeout=10))
    ended = tr.ended(api.tasks["a"])
    pace.now = 1000.0
    await tr.sweep()
    assert not ended.done() and len(tr) == 1
    await tr.aclose()


async def test_unreadable_list_items_are_reported() -> None:
    api = FakeApi(mk("a", created=3), mk("b", created=2), mk("c", created=1))
    events: list[Event] = []
    tr = tracker(api, Pace(), event_hook=events.append)
    for t in list(api.tasks.values()):
        tr.track(t)
    real_list = api.list_page

    async def odd_list(page: int, size: int) -> list[Any]:
        items = await real_list(page, size)
        return [dict(i, created_at="soon") if i["task_id"] == "b" else i for i in items]

    tr._list_page = odd_list
    api.finish("a")
    api.finish("b")
    assert await tr.sweep() == 2  # b's single query answers readably
    assert api.gets == ["b"]
    (bad,) = [e.data for e in events if e.kind == "task_unreadable"]
    assert (bad["task_id"], bad["source"], bad["field"]) == ("b", "list", "created_at")
    await tr.aclose()


async def test_an_answer_without_task_info_keeps_the_external_id() -> None:
    api = FakeApi(mk("a"))
    tr = tracker(api, Pace())
    mine = api.tasks["a"].model_copy(update={"task_info": TaskInfo(external_task_id="mine")})
    done = tr.track(mine)
    api.finish("a")  # the query's answer carries no task_info
    await tr.sweep()
    assert done.result().external_task_id == "mine"


async def test_seconds_and_missing_timestamps_in_sweeps() -> None:
    seconds = {"created_at": BASE_MS // 1000}
    api = FakeApi(*(mk(f"t{i}", created=i) for i in range(10)))
    tr = tracker(api, Pace(), page_size=2, max_pages=5)
    real_list = api.list_page

    async def in_seconds(page: int, size: int) -> list[Any]:
        items = await real_list(page, size)
        return [dict(i, created_at=i["created_at"] // 1000) for i in items]

    tr._list_page = in_seconds
    for tid in ("t9", "t8", "t7"):
        tr.track(api.tasks[tid])
    api.hidden["t7"] = api.tasks.pop("t7")
    await tr.sweep()
    assert api.lists == [(1, 2), (2, 2)]  # seconds read as seconds: still stops past t7
    # A task with no creation time: paging cannot tell when it is past it, so it goes on.
    no_time = Task.model_validate({"task_id": "u", "task_status": "submitted", **seconds})
    no_time = no_time.model_copy(update={"created_at": None, "updated_at": None})
    tr.track(no_time)
    api.hidden["u"] = mk("u", "succeed")
    api.lists.clear()
    await tr.sweep()
    assert len(api.lists) == 5
    await tr.aclose()


# -- callbacks' claims ----------------------------------------------------------------------------


async def test_a_claimed_end_frees_the_slot_and_a_sweep_confirms_it() -> None:
    api = FakeApi(mk("a"), mk("b"))
    pace = Pace()
    tr = tracker(api, pace, policy=PollPolicy(interval=60.0, interval_max=60.0))
    done_a = tr.track(api.tasks["a"])
    tr.track(api.tasks["b"])
    ended_a = tr.ended(api.tasks["a"])
    tr.claim("a", "succeed")
    assert ended_a.done()  # the slot is free at once
    assert not done_a.done()  # the caller waits for a query to confirm
    tr.claim("a", "succeed")  # a repeat changes nothing
    api.finish("a")
    api.finish("b")
    tr.claim("b", "processing")  # a running state: nothing to do
    assert not tr.ended(api.tasks["b"]).done()
    await tr.sweep()
    assert done_a.result().task_status is TaskStatus.SUCCEED
    assert sorted(tr.pacer._announced) == [False, True]  # a callback announced a, not b
    await tr.aclose()


async def test_a_claim_the_sweep_contradicts_holds_the_slot_again() -> None:
    api = FakeApi(mk("a"), mk("b"), mk("c"))
    pace = Pace()
    retaken: list[tuple[str, asyncio.Future[None]]] = []
    tr = tracker(api, pace, retake=lambda task, ended: retaken.append((task.task_id, ended)))
    for tid in "abc":
        tr.track(api.tasks[tid])
    first = tr.ended(api.tasks["a"])
    tr.claim("a", "failed")  # forged: a is still running
    assert first.done()
    await tr.sweep()
    assert [tid for tid, _ in retaken] == ["a"]
    fresh = retaken[0][1]
    assert fresh is tr.ended(api.tasks["a"]) and not fresh.done()
    api.finish("a")
    await tr.sweep()
    assert fresh.done()
    await tr.aclose()


async def test_claims_without_status_or_about_unknown_tasks_wake_the_sweeper() -> None:
    api = FakeApi(mk("a"))
    pace = Pace()
    tr = tracker(api, pace, policy=PollPolicy(interval=60.0, interval_max=60.0))
    fut = tr.track(api.tasks["a"])
    api.finish("a")
    tr.claim("someone-elses", "succeed")
    await asyncio.wait_for(fut, 1)  # swept at once, without sleeping 60 s
    assert pace.waits == []
    await tr.aclose()


async def test_the_sweeper_confirms_at_once_when_only_claimed_tasks_are_left() -> None:
    api = FakeApi(mk("a"))
    pace = Pace()
    tr = tracker(api, pace, policy=PollPolicy(interval=60.0, interval_max=60.0))
    fut = tr.track(api.tasks["a"])
    await asyncio.sleep(0)  # the sweeper starts its first 60 s pause
    api.finish("a")
    tr.claim("a", "succeed")
    await asyncio.wait_for(fut, 1)
    assert pace.waits[-1] == 0.05  # re-planned: min_interval, not the rest of 60 s
    await tr.aclose()


async def test_a_claim_about_a_task_a_caller_waits_on_is_confirmed_at_once() -> None:
    api = FakeApi(mk("a"), mk("b"))
    tr = TaskTracker(  # a real sleep: the sweeper truly waits its 60 s unless woken
        list_page=api.list_page,
        get_one=api.get_one,
        policy=PollPolicy(interval=60.0, interval_max=60.0),
    )
    waited = tr.track(api.tasks["a"], urgent=True)  # as Client.wait() does
    batch = tr.track(api.tasks["b"])  # as the batch does: claims are confirmed in batches
    await asyncio.sleep(0.01)
    api.finish("a")
    api.finish("b")
    tr.claim("b", "succeed")
    await asyncio.sleep(0.05)
    assert not batch.done()  # a is still running: b waits for the next sweep
    tr.claim("a", "succeed")
    await asyncio.wait_for(asyncio.gather(waited, batch), 1)  # one sweep at once confirms both
    assert tr.sweeps == 1
    await tr.aclose()
