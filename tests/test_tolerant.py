"""The tolerant reader (models/_tolerant.py, models/_read.py), table-driven over recorded shapes.

Each row is an answer's `data` as some server sent it (Kling's documented examples, shapes
like the live captures of the image2video, avatar and omni-video endpoints that share the task
shape, other projects' fixtures and mocks, and odd ones) with the Task it must read as, or the
field and value the ResponseValidationError must name.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kling_async import Event, ResponseValidationError, Task, TaskUnreadable, VideoSkipped
from kling_async.models import SECONDS_BELOW, epoch_seconds, read_page, read_task

MS = 1_722_769_557_708  # 2024-08-04 11:05:57.708 UTC, the docs' example
AT_MS = datetime(2024, 8, 4, 11, 5, 57, 708000, tzinfo=UTC)
S = 1_739_744_384  # 2025-02-16 22:19:44 UTC, seconds as a look-alike server sent it
AT_S = datetime(2025, 2, 16, 22, 19, 44, tzinfo=UTC)
URL = "https://cdn.example.com/kling/v.mp4"


def video(**kw: Any) -> dict[str, Any]:
    base = {"id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "url": URL, "duration": "5.1"}
    return {**base, **kw}


def answer(**kw: Any) -> dict[str, Any]:
    """A documented succeeded query answer, with overrides (None values are dropped)."""
    base: dict[str, Any] = {
        "task_id": "867283741759111202",
        "task_status": "succeed",
        "task_status_msg": "",
        "task_info": {"external_task_id": "job-1"},
        "task_result": {"videos": [video()]},
        "watermark_info": {"enabled": False},
        "final_unit_deduction": "1",
        "created_at": MS,
        "updated_at": MS + 90_000,
    }
    base.update(kw)
    return {k: v for k, v in base.items() if v is not DROP}


DROP: Any = object()

# name → (data, expected attributes of the Task read)
READABLE: dict[str, tuple[Any, dict[str, Any]]] = {
    # -- documented and live-capture-like ---------------------------------------------------
    "documented query answer": (
        answer(),
        {"status": "succeed", "external_task_id": "job-1", "final_unit_deduction": "1"},
    ),
    "documented create answer (subset)": (
        {"task_id": "8672", "task_status": "submitted", "created_at": MS, "updated_at": MS},
        {"status": "submitted", "external_task_id": None, "n_videos": 0, "created_at": AT_MS},
    ),
    "image2video capture: watermark copy": (
        answer(task_result={"videos": [video(watermark_url=URL + "?wm=1")]}),
        {"watermark_url": URL + "?wm=1", "duration": "5.1"},
    ),
    "failed capture: SUCCEED envelope, task_result {}": (
        answer(task_status="failed", task_status_msg="Image pixel is invalid", task_result={}),
        {"status": "failed", "task_status_msg": "Image pixel is invalid", "n_videos": 0},
    ),
    "processing capture: no task_result key": (
        answer(task_status="processing", task_result=DROP, final_unit_deduction=DROP),
        {"status": "processing", "n_videos": 0, "final_unit_deduction": None},
    ),
    "avatar capture: duration as a number 5.1": (
        answer(task_result={"videos": [video(duration=5.1)]}),
        {"duration": "5.1"},
    ),
    "omni-video capture: final_unit_deduction as a number": (
        answer(final_unit_deduction=1),
        {"final_unit_deduction": "1"},
    ),
    "duration 5 (int)": (answer(task_result={"videos": [video(duration=5)]}), {"duration": "5"}),
    "duration 10.0 (float, whole)": (
        answer(task_result={"videos": [video(duration=10.0)]}),
        {"duration": "10"},
    ),
    "duration null": (answer(task_result={"videos": [video(duration=None)]}), {"duration": None}),
    "final_unit_deduction 0.5": (answer(final_unit_deduction=0.5), {"final_unit_deduction": "0.5"}),
    "task_id as a number (snowflake)": (
        answer(task_id=867283741759111202),
        {"task_id": "867283741759111202"},
    ),
    "video id as a number": (answer(task_result={"videos": [video(id=42)]}), {"video_id": "42"}),
    "video without id": (answer(task_result={"videos": [{"url": URL}]}), {"video_id": ""}),
    "task_status_msg as a number": (
        answer(task_status="failed", task_status_msg=1301, task_result={}),
        {"task_status_msg": "1301"},
    ),
    "task_status upper case": (answer(task_status="SUCCEED"), {"status": "succeed"}),
    "task_status padded": (answer(task_status=" processing "), {"status": "processing"}),
    # -- the create answer echoing task_info, and other task_info forms ----------------------
    "task_info {}": (answer(task_info={}), {"external_task_id": None}),
    "task_info null": (answer(task_info=None), {"external_task_id": None}),
    "external_task_id null": (
        answer(task_info={"external_task_id": None}),
        {"external_task_id": None},
    ),
    "external_task_id empty string": (
        answer(task_info={"external_task_id": ""}),
        {"external_task_id": None},
    ),
    "external_task_id as a number": (
        answer(task_info={"external_task_id": 123}),
        {"external_task_id": "123"},
    ),
    # -- timestamps ---------------------------------------------------------------------------
    "timestamps in seconds": (
        answer(created_at=S, updated_at=S + 60),
        {"created_at": AT_S, "expires_at": AT_S + timedelta(days=30), "took": 60.0},
    ),
    "timestamps in seconds with a fraction": (
        answer(created_at=S + 0.5, updated_at=S + 1),
        {"created_at": AT_S + timedelta(seconds=0.5)},
    ),
    "timestamps as digit strings (ms)": (
        answer(created_at=str(MS), updated_at=str(MS)),
        {"created_at": AT_MS},
    ),
    "timestamps as digit strings (s)": (answer(created_at=str(S)), {"created_at": AT_S}),
    "timestamps missing": (
        answer(created_at=DROP, updated_at=DROP),
        {"created_at": None, "updated_at": None, "expires_at": None},
    ),
    "timestamps null": (answer(created_at=None, updated_at=None), {"expires_at": None}),
    "created_at 0 (not set)": (answer(created_at=0), {"created_at": None, "expires_at": None}),
    "only updated_at": (
        answer(created_at=DROP),
        {"created_at": None, "updated_at": AT_MS + timedelta(seconds=90), "expires_at": None},
    ),
    "ISO time without offset is UTC": (
        answer(created_at="2024-08-04T11:05:57.708"),
        {"created_at": AT_MS},
    ),
    "ISO time with Z": (answer(created_at="2024-08-04T11:05:57.708Z"), {"created_at": AT_MS}),
    "the docs' smallest ms value stays ms": (
        answer(created_at=int(SECONDS_BELOW)),
        {"created_at": datetime(1973, 3, 3, 9, 46, 40, tzinfo=UTC)},
    ),
    # -- results and videos -------------------------------------------------------------------
    "task_result null": (answer(task_result=None), {"n_videos": 0}),
    "videos null": (answer(task_result={"videos": None}), {"n_videos": 0}),
    "videos []": (answer(task_result={"videos": []}), {"n_videos": 0}),
    "a video without url is skipped": (
        answer(task_result={"videos": [video(), {"id": "v2", "duration": "5"}]}),
        {"n_videos": 1, "notes": 1},
    ),
    "a video with url null is skipped": (
        answer(task_result={"videos": [{"id": "v", "url": None}, video()]}),
        {"n_videos": 1, "notes": 1},
    ),
    "a video with url '' is skipped": (
        answer(task_result={"videos": [video(url="")]}),
        {"n_videos": 0, "notes": 1},
    ),
    "unknown fields everywhere are ignored": (
        answer(
            task_info={"external_task_id": "e", "parent_video": {"id": 1}},
            task_result={"videos": [video(resolution="1080p")], "images": []},
            model_name="kling-v1-6",
            extra=[1, {"x": None}],
        ),
        {"external_task_id": "e", "n_videos": 1},
    ),
}


def facts(task: Task, notes: list[Event]) -> dict[str, Any]:
    first = task.videos[0] if task.videos else None
    took = (
        (task.updated_at - task.created_at).total_seconds()
        if task.created_at and task.updated_at
        else None
    )
    return {
        "task_id": task.task_id,
        "status": task.status.value,
        "task_status_msg": task.task_status_msg,
        "external_task_id": task.external_task_id,
        "final_unit_deduction": task.final_unit_deduction,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "expires_at": task.expires_at,
        "took": took,
        "n_videos": len(task.videos),
        "video_id": first.id if first else None,
        "duration": first.duration if first else None,
        "watermark_url": first.watermark_url if first else None,
        "notes": len(notes),
    }


@pytest.mark.parametrize("name", list(READABLE))
def test_readable_shapes(name: str) -> None:
    data, expected = READABLE[name]
    events: list[Event] = []
    task = read_task(data, "query", hook=events.append)
    got = facts(task, events)
    assert {k: got[k] for k in expected} == expected
    assert all(isinstance(v.id, str) for v in task.videos)
    if task.created_at is not None:
        assert task.created_at.tzinfo is not None


# name → (data, field named, a part of the value shown; None: the field is missing)
UNREADABLE: dict[str, tuple[Any, str | None, str | None]] = {
    "unknown task_status": (answer(task_status="queued"), "task_status", "'queued'"),
    "task_status null": (answer(task_status=None), "task_status", "None"),
    "task_status a number": (answer(task_status=2), "task_status", "2"),
    "task_status missing": (answer(task_status=DROP), "task_status", None),
    "task_id missing": (answer(task_id=DROP), "task_id", None),
    "task_id empty": (answer(task_id=""), "task_id", "''"),
    "task_id '..'": (answer(task_id=".."), "task_id", "'..'"),
    "task_id an object": (answer(task_id={"id": 1}), "task_id", "{'id': 1}"),
    "task_id a bool": (answer(task_id=True), "task_id", "True"),
    "created_at text": (answer(created_at="yesterday"), "created_at", "'yesterday'"),
    "created_at a bool": (answer(created_at=True), "created_at", "True"),
    "created_at huge": (answer(created_at=1e300), "created_at", "1e+300"),
    "created_at huge int": (answer(created_at=10**400), "created_at", "1000"),
    "created_at -1e20": (answer(created_at=-1e20), "created_at", "-1e+20"),
    "created_at inf": (answer(created_at=float("inf")), "created_at", "inf"),
    "created_at NaN": (answer(created_at=float("nan")), "created_at", "nan"),
    "updated_at an object": (answer(updated_at={"ms": MS}), "updated_at", "{'ms'"),
    "task_result a list": (answer(task_result=[1]), "task_result", "[1]"),
    "videos a string": (answer(task_result={"videos": "none"}), "task_result.videos", "'none'"),
    "video a string": (answer(task_result={"videos": [URL]}), "task_result.videos[0]", "cdn"),
    "video url a number": (
        answer(task_result={"videos": [video(url=5)]}),
        "task_result.videos[0].url",
        "5",
    ),
    "duration a bool": (
        answer(task_result={"videos": [video(duration=True)]}),
        "task_result.videos[0].duration",
        "True",
    ),
    "duration infinite": (
        answer(task_result={"videos": [video(duration=float("inf"))]}),
        "task_result.videos[0].duration",
        "inf",
    ),
    "final_unit_deduction an object": (
        answer(final_unit_deduction={"units": 1}),
        "final_unit_deduction",
        "{'units': 1}",
    ),
    "task_info a string": (answer(task_info="job-1"), "task_info", "'job-1'"),
    "data an array": ([answer()], None, "[{"),
    "data a string": ("task", None, "'task'"),
    "data null": (None, None, "None"),
    "data empty": ({}, "task_id", None),
}


@pytest.mark.parametrize("name", list(UNREADABLE))
def test_unreadable_shapes_name_the_field_and_value(name: str) -> None:
    data, field, value = UNREADABLE[name]
    with pytest.raises(ResponseValidationError) as info:
        read_task(data, "query")
    error = info.value
    assert error.field == field
    text = str(error)
    assert text.startswith("query")
    if field is not None:
        assert field in text
    if value is None:
        assert "missing" in text
    else:
        assert error.value is not None and value in error.value
        assert value in text
    assert len(text) < 400


def test_long_values_are_shortened() -> None:
    with pytest.raises(ResponseValidationError) as info:
        read_task(answer(task_status="x" * 10_000), "list")
    assert info.value.value is not None and len(info.value.value) <= 80
    assert len(str(info.value)) < 400


def test_the_task_id_is_named_when_known() -> None:
    with pytest.raises(ResponseValidationError, match=r"^query: task 8672: cannot read"):
        read_task(answer(task_id=8672, task_status="queued"), "query")


def test_seconds_or_milliseconds_threshold() -> None:
    assert epoch_seconds(SECONDS_BELOW - 1) == SECONDS_BELOW - 1  # seconds (year 5138)
    assert epoch_seconds(SECONDS_BELOW) == SECONDS_BELOW / 1000  # milliseconds (1973)
    assert epoch_seconds(MS) == MS / 1000
    assert epoch_seconds(S) == S
    assert epoch_seconds(str(MS)) == MS / 1000
    assert epoch_seconds("2024-08-04") is None
    assert epoch_seconds(True) is None
    assert epoch_seconds(None) is None


def test_a_skipped_video_is_logged_and_emitted(caplog: pytest.LogCaptureFixture) -> None:
    events: list[Event] = []
    data = answer(task_result={"videos": [{"id": "v9", "duration": 5}, video()]})
    with caplog.at_level(logging.WARNING, logger="kling_async"):
        task = read_task(data, "query", hook=events.append)
    assert [v.url for v in task.videos] == [URL]
    assert events == [
        VideoSkipped(
            task_id="867283741759111202",
            source="query",
            message="videos[0] (id 'v9') has no url: skipped",
            index=0,
            video_id="v9",
        )
    ]
    assert "has no url" in caplog.text and "v9" in caplog.text


def test_a_skipped_video_read_without_a_context_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="kling_async"):
        task = Task.model_validate(answer(task_result={"videos": [{"id": "v9"}]}))
    assert task.videos == []
    assert "has no url" in caplog.text


def test_a_list_page_keeps_the_readable_items(caplog: pytest.LogCaptureFixture) -> None:
    events: list[Event] = []
    items = [answer(task_id="1"), answer(task_id="2", task_status="queued"), "junk", answer()]
    with caplog.at_level(logging.WARNING, logger="kling_async"):
        page = read_page(items, "list", hook=events.append)
    assert [t.task_id for t in page] == ["1", "867283741759111202"]
    assert page.items == 4
    assert [e.field for e in page.unreadable] == ["task_status", None]
    assert [(e.kind, e.task_id, e.index) for e in events if isinstance(e, TaskUnreadable)] == [
        ("task_unreadable", "2", 1),
        ("task_unreadable", None, 2),
    ]
    assert isinstance(events[0], TaskUnreadable) and events[0].value == "'queued'"
    assert caplog.text.count("unreadable answer") == 2


def test_the_journal_round_trip_keeps_an_unknown_expiry() -> None:
    task = read_task(answer(created_at=DROP, updated_at=DROP), "query")
    again = Task.model_validate(task.model_dump(mode="json"))
    assert again == task and again.expires_at is None


async def test_videos_of_unknown_expiry_are_downloaded_first(tmp_path: Any) -> None:
    from kling_async._batch_downloads import BatchCounts, DownloadStage, Fetch

    stage = DownloadStage(None, tmp_path, BatchCounts())  # type: ignore[arg-type]
    soon = read_task(answer(task_id="soon", created_at=S), "query")
    late = read_task(answer(task_id="late", created_at=S + 86_400), "query")
    unknown = read_task(answer(task_id="unknown", created_at=DROP), "query")
    for line, task in enumerate((late, soon, unknown)):
        stage.queue(Fetch(f"job-{line}", f"ext-{line}", task, watermark=False))
    order = [(await stage.next()).task.task_id for _ in range(3)]
    assert order == ["unknown", "soon", "late"]
