"""Wire models: request validation and wire form, task parsing (kling_async.models)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydantic
import pytest

from kling_async import InvalidRequestError, MultiImageToVideoRequest, Task, TaskStatus
from kling_async.models import RETENTION, Envelope


@pytest.fixture
def png_b64(png_path: Path) -> str:
    """The base64 of `png_path`, read outside the event loop."""
    return base64.b64encode(png_path.read_bytes()).decode()


URL = "https://cdn.example.com/dog.png"
URL2 = "http://cdn.example.com/cloth.jpg"
CREATED_MS = 1_722_769_557_708


def req(**overrides: Any) -> MultiImageToVideoRequest:
    data: dict[str, Any] = {"images": [URL], "prompt": "a dog"}
    data.update(overrides)
    return MultiImageToVideoRequest(**data)


# --- accepted input ------------------------------------------------------------------------


def test_defaults() -> None:
    r = req()
    assert (r.model_name, r.mode, r.duration, r.aspect_ratio) == ("kling-v1-6", "std", "5", "16:9")
    assert r.watermark is False
    assert r.negative_prompt is r.callback_url is r.external_task_id is None
    assert [i.kind for i in r.images] == ["url"]


@pytest.mark.parametrize(
    ("field", "value", "stored"),
    [
        ("mode", "pro", "pro"),
        ("mode", "std", "std"),
        ("duration", "10", "10"),
        ("duration", 5, "5"),
        ("duration", 10, "10"),
        ("aspect_ratio", "9:16", "9:16"),
        ("aspect_ratio", "1:1", "1:1"),
        ("model_name", "kling-v1-6", "kling-v1-6"),
        ("prompt", "x" * 2500, "x" * 2500),
        ("negative_prompt", "n" * 2500, "n" * 2500),
        ("negative_prompt", "", None),
        ("callback_url", "", None),
        ("external_task_id", "", None),
        ("callback_url", "https://hooks.example.com/kling?x=1", None),
        ("external_task_id", "job-1", "job-1"),
        ("external_task_id", "e" * 256, "e" * 256),
        ("watermark", True, True),
    ],
)
def test_accepted_values(field: str, value: Any, stored: Any) -> None:
    r = req(**{field: value})
    assert getattr(r, field) == (value if stored is None and value else stored)


def test_image_kinds(png_path: Path, png_factory: Callable[..., Path]) -> None:
    data = png_path.read_bytes()
    b64 = base64.b64encode(data).decode()
    r = req(images=[str(png_path), png_factory(750, 300), data, f"data:image/png;base64,{b64}"])
    assert [i.kind for i in r.images] == ["path", "path", "bytes", "base64"]
    assert r.images[1].info is not None
    assert (r.images[1].info.width, r.images[1].info.height) == (750, 300)
    r = req(images=[URL, URL2, b64, png_path])
    assert [i.kind for i in r.images] == ["url", "url", "base64", "path"]


def test_wire_form_accepted() -> None:
    wire = {
        "model_name": "kling-v1-6",
        "image_list": [{"image": URL}, {"image": URL2}],
        "prompt": "A white Bichon Frise",
        "negative_prompt": "",
        "mode": "pro",
        "duration": "5",
        "aspect_ratio": "16:9",
        "watermark_info": {"enabled": True},
        "callback_url": "",
        "external_task_id": "",
    }
    r = MultiImageToVideoRequest(**wire)
    assert [i.describe() for i in r.images] == [URL, URL2]
    assert r.watermark is True
    assert r.mode == "pro"
    assert r.negative_prompt is r.callback_url is r.external_task_id is None
    assert MultiImageToVideoRequest.model_validate(wire) == r


def test_request_is_frozen() -> None:
    r = req()
    with pytest.raises(pydantic.ValidationError):
        r.prompt = "other"  # type: ignore[misc]


def test_with_external_id() -> None:
    r = req()
    keyed = r.with_external_id("k-1")
    assert keyed.external_task_id == "k-1"
    assert r.external_task_id is None
    assert keyed.images == r.images


def test_with_external_id_validates() -> None:
    with pytest.raises(InvalidRequestError) as info:
        req().with_external_id("x" * 257)
    assert info.value.field == "external_task_id"
    assert req(external_task_id="a").with_external_id("").external_task_id is None


# --- rejected input ------------------------------------------------------------------------

LONG = "p" * 2501


@pytest.mark.parametrize(
    ("overrides", "field", "shown"),
    [
        ({"images": []}, "images", "0"),
        ({"images": [URL] * 5}, "images", "5"),
        ({"images": URL}, "images", "str"),
        ({"images": [123]}, "images[0]", "int"),
        ({"images": [URL, "ftp://example.com/a.png"]}, "images[1]", "ftp"),
        ({"images": [URL, "http://"]}, "images[1]", "http://"),
        ({"images": ["/no/such/file.png"]}, "images[0]", "/no/such/file.png"),
        ({"prompt": LONG}, "prompt", "ppppp"),
        ({"prompt": ""}, "prompt", "''"),
        ({"prompt": "   \n"}, "prompt", "'   \\n'"),
        ({"negative_prompt": LONG}, "negative_prompt", "ppppp"),
        ({"mode": "fast"}, "mode", "'fast'"),
        ({"duration": "7"}, "duration", "'7'"),
        ({"duration": 7}, "duration", "7"),
        ({"duration": 5.0}, "duration", "5.0"),
        ({"duration": True}, "duration", "True"),
        ({"aspect_ratio": "4:3"}, "aspect_ratio", "'4:3'"),
        ({"model_name": "kling-v2"}, "model_name", "'kling-v2'"),
        ({"callback_url": "ftp://hooks.example.com"}, "callback_url", "ftp://hooks.example.com"),
        ({"callback_url": "hooks.example.com/x"}, "callback_url", "hooks.example.com/x"),
        ({"callback_url": "http://"}, "callback_url", "http://"),
        ({"external_task_id": "e" * 257}, "external_task_id", "eeee"),
        ({"external_task_id": "a/b"}, "external_task_id", "a/b"),
        ({"external_task_id": ".."}, "external_task_id", "'..'"),
        ({"watermark": "maybe"}, "watermark", "'maybe'"),
        ({"seed": 42}, "seed", "42"),
    ],
)
def test_rejected(overrides: dict[str, Any], field: str, shown: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        req(**overrides)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.field == field
    assert field in str(err)
    assert shown in str(err)


def test_missing_required() -> None:
    with pytest.raises(InvalidRequestError) as info:
        MultiImageToVideoRequest(images=[URL])
    assert info.value.field == "prompt"
    with pytest.raises(InvalidRequestError) as info:
        MultiImageToVideoRequest(prompt="x")
    assert info.value.field == "images"


def test_several_problems_all_listed() -> None:
    with pytest.raises(InvalidRequestError) as info:
        req(mode="fast", duration="7")
    assert info.value.field == "mode"
    assert "mode" in str(info.value)
    assert "duration" in str(info.value)


@pytest.mark.parametrize(
    ("size", "rule"),
    [((299, 400), "300"), ((400, 299), "300"), ((1000, 399), "aspect"), ((399, 1000), "aspect")],
)
def test_image_rules(
    png_factory: Callable[..., Path],
    size: tuple[int, int],
    rule: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Relative to the cwd: the message shortens long paths, and tmp_path's length varies.
    monkeypatch.chdir(png_factory(*size).parent)
    path = Path(png_factory(*size).name)
    with pytest.raises(InvalidRequestError) as info:
        req(images=[URL, path])
    assert info.value.field == "images[1]"
    assert rule in str(info.value)
    assert path.name in str(info.value)


def test_image_aspect_limits_inclusive(png_factory: Callable[..., Path]) -> None:
    r = req(images=[png_factory(750, 300), png_factory(300, 750)])
    assert len(r.images) == 2


def test_image_not_png_or_jpeg(tmp_path: Path) -> None:
    gif = tmp_path / "a.gif"
    gif.write_bytes(b"GIF89a" + b"\0" * 100)
    with pytest.raises(InvalidRequestError) as info:
        req(images=[gif])
    assert info.value.field == "images[0]"
    assert "GIF" in str(info.value)


# --- wire form -----------------------------------------------------------------------------


async def test_to_wire_minimal() -> None:
    assert await req().to_wire() == {
        "model_name": "kling-v1-6",
        "image_list": [{"image": URL}],
        "prompt": "a dog",
        "mode": "std",
        "duration": "5",
        "aspect_ratio": "16:9",
    }


async def test_to_wire_full(png_path: Path, png_b64: str) -> None:
    r = req(
        images=[URL, png_path],
        negative_prompt="blur",
        mode="pro",
        duration=10,
        aspect_ratio="1:1",
        watermark=True,
        callback_url="https://hooks.example.com/k",
        external_task_id="job-7",
    )
    body = await r.to_wire()
    assert body == {
        "model_name": "kling-v1-6",
        "image_list": [
            {"image": URL},
            {"image": png_b64},
        ],
        "prompt": "a dog",
        "negative_prompt": "blur",
        "mode": "pro",
        "duration": "10",
        "aspect_ratio": "1:1",
        "watermark_info": {"enabled": True},
        "callback_url": "https://hooks.example.com/k",
        "external_task_id": "job-7",
    }
    assert not body["image_list"][1]["image"].startswith("data:")


async def test_to_wire_no_empty_optionals() -> None:
    body = await req(negative_prompt="", callback_url="", external_task_id="").to_wire()
    for key in ("negative_prompt", "callback_url", "external_task_id", "watermark_info"):
        assert key not in body
    assert "watermark_info" not in await req(watermark=False).to_wire()


async def test_to_wire_strips_data_uri(png_b64: str) -> None:
    b64 = png_b64
    body = await req(images=[f"data:image/png;base64,{b64}"]).to_wire()
    assert body["image_list"] == [{"image": b64}]


def test_fingerprint_fields_stable() -> None:
    a = req(external_task_id="one", callback_url="http://a.example.com").fingerprint_fields()
    b = req(external_task_id="two").fingerprint_fields()
    assert a == b
    assert a["images"] == [URL]
    assert req(mode="pro").fingerprint_fields() != a


# --- Task parsing --------------------------------------------------------------------------


def task_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "task_id": "867283741759111202",
        "task_status": "succeed",
        "task_status_msg": "",
        "task_info": {"external_task_id": "job-1"},
        "task_result": {
            "videos": [
                {
                    "id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
                    "url": "https://cdn.example.com/v.mp4",
                    "watermark_url": "https://cdn.example.com/v-wm.mp4",
                    "duration": "5.1",
                }
            ]
        },
        "watermark_info": {"enabled": True},
        "final_unit_deduction": "1",
        "created_at": CREATED_MS,
        "updated_at": CREATED_MS + 90_000,
    }
    data.update(overrides)
    return data


def test_task_full() -> None:
    task = Task.model_validate(task_data())
    assert task.task_id == "867283741759111202"
    assert task.status is TaskStatus.SUCCEED
    assert task.is_terminal
    assert task.external_task_id == "job-1"
    assert task.final_unit_deduction == "1"
    assert task.created_at == datetime(2024, 8, 4, 11, 5, 57, 708000, tzinfo=UTC)
    assert task.created_at.tzinfo is not None
    assert task.created_at.utcoffset() == timedelta(0)
    assert task.updated_at - task.created_at == timedelta(seconds=90)
    assert task.expires_at == task.created_at + timedelta(days=30)
    assert timedelta(days=30) == RETENTION
    (video,) = task.videos
    assert video.url == "https://cdn.example.com/v.mp4"
    assert video.watermark_url == "https://cdn.example.com/v-wm.mp4"
    assert video.duration == "5.1"


def test_task_create_answer_subset() -> None:
    task = Task.model_validate(
        {
            "task_id": "t",
            "task_status": "submitted",
            "created_at": CREATED_MS,
            "updated_at": CREATED_MS,
        }
    )
    assert task.videos == []
    assert task.external_task_id is None
    assert not task.is_terminal
    assert task.task_status_msg is None


@pytest.mark.parametrize("result", [{}, None, "missing"])
def test_task_result_empty(result: Any) -> None:
    data = task_data(task_status="failed", task_status_msg="Image pixel is invalid")
    if result == "missing":
        del data["task_result"]
    else:
        data["task_result"] = result
    task = Task.model_validate(data)
    assert task.videos == []
    assert task.task_status is TaskStatus.FAILED
    assert task.task_status_msg == "Image pixel is invalid"


def test_task_tolerates_unknown_fields() -> None:
    data = task_data(new_top_level=1, task_info={"external_task_id": "e", "extra": [1]})
    data["task_result"]["videos"][0]["resolution"] = "1080p"
    data["task_result"]["images"] = []
    task = Task.model_validate(data)
    assert task.external_task_id == "e"
    assert not hasattr(task, "new_top_level")


def test_task_id_int_becomes_str() -> None:
    assert Task.model_validate(task_data(task_id=867283741759111202)).task_id == (
        "867283741759111202"
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"task_status": "queued"},
        {"task_status": None},
        {"created_at": "yesterday"},
        {"task_id": None},
        {"task_result": {"videos": [{"id": "v", "url": 5}]}},
    ],
)
def test_task_invalid(overrides: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        Task.model_validate(task_data(**overrides))


def test_task_missing_fields() -> None:
    data = task_data()
    del data["task_status"]
    with pytest.raises(pydantic.ValidationError):
        Task.model_validate(data)


def test_task_status_terminal() -> None:
    assert [s.is_terminal for s in TaskStatus] == [False, False, True, True]
    assert TaskStatus("processing") == "processing"


def test_envelope() -> None:
    env = Envelope.model_validate({"code": 1303, "message": "over", "request_id": "r"})
    assert (env.code, env.message, env.request_id, env.data) == (1303, "over", "r", None)


def test_first_field_named_when_an_image_error_comes_first() -> None:
    with pytest.raises(InvalidRequestError) as info:
        req(images=[], mode="fast")
    assert info.value.field == "images"
    assert "mode" in str(info.value)


def test_from_job_resolves_relative_paths(png_path: Path) -> None:
    job = {"image_list": [{"image": png_path.name}, {"image": URL}], "prompt": "p", "duration": 10}
    r = MultiImageToVideoRequest.from_job(job, base_dir=png_path.parent)
    assert [i.kind for i in r.images] == ["path", "url"]
    assert r.duration == "10"
    with pytest.raises(InvalidRequestError) as info:
        MultiImageToVideoRequest.from_job(
            {"images": ["missing.png"], "prompt": "p"}, base_dir=png_path.parent
        )
    assert info.value.field == "images[0]"
