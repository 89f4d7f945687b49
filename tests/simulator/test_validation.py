"""Create-request validation: 1200 for shape/type problems, 1201 for illegal values."""

from __future__ import annotations

from typing import Any

import pytest

from kling_async.simulator._images import sniff_image

from .helpers import URL_IMAGE, Api, b64, body, jpeg_bytes, png_bytes

SPEC_EXAMPLE = {
    "model_name": "kling-v1-6",
    "image_list": [
        {"image": "https://p1-kling.klingai.com/kcdn/cdn-kcdn112452/kling-qa-test/dog.png"},
        {"image": "https://p1-kling.klingai.com/kcdn/cdn-kcdn112452/kling-qa-test/dog_cloth.png"},
    ],
    "prompt": "A white Bichon Frise wearing a red Northeast-style floral cotton jacket",
    "negative_prompt": "",
    "mode": "pro",
    "duration": "5",
    "aspect_ratio": "16:9",
    "callback_url": "",
    "external_task_id": "",
}


async def test_spec_example_body_is_accepted(api: Api):
    status, data = await api.create(SPEC_EXAMPLE)
    assert (status, data["code"]) == (200, 0)
    task = await api.query(data["data"]["task_id"])
    assert task[1]["data"]["task_info"]["external_task_id"] == ""


async def test_all_fields_accepted(api: Api):
    status, data = await api.create(
        body(
            model_name="kling-v1-6",
            negative_prompt="blurry",
            mode="std",
            duration="10",
            aspect_ratio="1:1",
            watermark_info={"enabled": True},
            callback_url="http://127.0.0.1:1/cb",
            external_task_id="job-1",
            image_list=[{"image": URL_IMAGE}] * 4,
        )
    )
    assert (status, data["code"]) == (200, 0), data


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"{not json", "JSON"),
        (b"[1, 2]", "object"),
        (b"\xff\xfe", "JSON"),
        (b"", "JSON"),
    ],
)
async def test_malformed_body_is_1200(api: Api, raw: bytes, needle: str):
    status, data = await api.create(raw=raw)
    assert (status, data["code"]) == (400, 1200)
    assert needle in data["message"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"prompt": "x"}, "image_list"),
        ({"image_list": [{"image": URL_IMAGE}]}, "prompt"),
        (body(prompt=5), "prompt"),
        (body(image_list="x"), "image_list"),
        (body(image_list=["x"]), "image_list[0]"),
        (body(image_list=[{}]), "image_list[0].image"),
        (body(image_list=[{"image": 3}]), "image_list[0].image"),
        (body(duration=5), "duration"),
        (body(mode=1), "mode"),
        (body(negative_prompt=["x"]), "negative_prompt"),
        (body(watermark_info=True), "watermark_info"),
        (body(watermark_info={}), "watermark_info.enabled"),
        (body(watermark_info={"enabled": "yes"}), "watermark_info.enabled"),
        (body(external_task_id=12), "external_task_id"),
        (body(callback_url=1), "callback_url"),
    ],
)
async def test_missing_or_wrong_type_is_1200(api: Api, payload: dict[str, Any], field: str):
    status, data = await api.create(payload)
    assert (status, data["code"]) == (400, 1200), data
    assert f"'{field}'" in data["message"]


@pytest.mark.parametrize(
    ("payload", "needles"),
    [
        (body(model_name="kling-v2"), ["model_name", "kling-v1-6", "kling-v2"]),
        (body(mode="turbo"), ["mode", "std", "turbo"]),
        (body(duration="7"), ["duration", "'7'"]),
        (body(aspect_ratio="4:3"), ["aspect_ratio", "4:3"]),
        (body(image_list=[]), ["image_list", "1 to 4", "got 0"]),
        (body(image_list=[{"image": URL_IMAGE}] * 5), ["image_list", "1 to 4", "got 5"]),
        (body(image_list=[{"image": URL_IMAGE, "x": 1}]), ["image_list[0]", "x"]),
        (body(image_list=[{"image": ""}]), ["image_list[0].image", "empty"]),
        (body(prompt="x" * 2501), ["prompt", "2500", "2501"]),
        (body(prompt="   "), ["prompt", "empty"]),
        (body(negative_prompt="x" * 2501), ["negative_prompt", "2500", "2501"]),
        (body(callback_url="ftp://host/x"), ["callback_url"]),
        (body(watermark_info={"enabled": True, "logo": "x"}), ["watermark_info", "logo"]),
        (body(surprise=1), ["unknown", "surprise"]),
    ],
)
async def test_illegal_value_is_1201(api: Api, payload: dict[str, Any], needles: list[str]):
    status, data = await api.create(payload)
    assert (status, data["code"]) == (400, 1201), data
    for needle in needles:
        assert needle in data["message"]


async def test_limits_are_inclusive(api: Api):
    status, data = await api.create(body(prompt="x" * 2500, negative_prompt="y" * 2500))
    assert (status, data["code"]) == (200, 0)


@pytest.mark.parametrize(
    ("image", "ok"),
    [
        (png_bytes(300, 300), True),
        (png_bytes(750, 300), True),  # exactly 2.5:1
        (png_bytes(300, 750), True),  # exactly 1:2.5
        (jpeg_bytes(640, 480), True),
        (png_bytes(299, 400), False),
        (png_bytes(400, 299), False),
        (png_bytes(751, 300), False),
        (png_bytes(300, 751), False),
        (jpeg_bytes(200, 480), False),
        (b"GIF89a" + b"\x00" * 100, False),
        (b"\x89PNG\r\n\x1a\n", False),
        (b"\xff\xd8\xff\xd9", False),
    ],
)
async def test_base64_image_checks(api: Api, image: bytes, ok: bool):
    status, data = await api.create(body(image_list=[{"image": b64(image)}]))
    if ok:
        assert (status, data["code"]) == (200, 0), data
    else:
        assert (status, data["code"]) == (400, 1201), data
        assert "image_list[0].image" in data["message"]


async def test_dimension_message_names_actual_size(api: Api):
    _, data = await api.create(body(image_list=[{"image": b64(png_bytes(299, 400))}]))
    assert "300" in data["message"] and "299x400" in data["message"]


async def test_data_uri_prefix_is_1201(api: Api):
    image = "data:image/png;base64," + b64(png_bytes(300, 300))
    status, data = await api.create(body(image_list=[{"image": image}]))
    assert (status, data["code"]) == (400, 1201)
    assert "data:" in data["message"]


async def test_invalid_base64_is_1201(api: Api):
    status, data = await api.create(body(image_list=[{"image": "not base64 at all!"}]))
    assert (status, data["code"]) == (400, 1201)
    assert "base64" in data["message"]


async def test_oversize_image_is_1201(api: Api):
    image = "A" * (10 * 1024 * 1024 * 4 // 3 + 8)
    status, data = await api.create(body(image_list=[{"image": image}]))
    assert (status, data["code"]) == (400, 1201)
    assert "10 MB" in data["message"] and "10485760" in data["message"]


async def test_second_image_is_checked_too(api: Api):
    good, bad = b64(png_bytes(300, 300)), b64(png_bytes(100, 100))
    status, data = await api.create(body(image_list=[{"image": good}, {"image": bad}]))
    assert (status, data["code"]) == (400, 1201)
    assert "image_list[1].image" in data["message"]


async def test_duplicate_external_task_id_is_1201(api: Api):
    assert (await api.create(external_task_id="dup"))[0] == 200
    status, data = await api.create(external_task_id="dup")
    assert (status, data["code"]) == (400, 1201)
    assert "external_task_id already exists" in data["message"]
    assert api.sim.stats.creates_by_external_id["dup"] == 1


def test_sniff_reads_png_and_jpeg_headers():
    assert tuple(sniff_image(png_bytes(321, 654))) == ("png", 321, 654)
    assert tuple(sniff_image(jpeg_bytes(1024, 768))) == ("jpeg", 1024, 768)
    with pytest.raises(ValueError):
        sniff_image(b"RIFF....WEBP")


async def test_body_over_the_size_limit_is_1201(http):
    from kling_async.simulator import Simulator

    async with Simulator(max_body_bytes=1000) as sim:
        status, data = await Api(sim, http).create(prompt="x" * 2000)
        assert (status, data["code"]) == (400, 1201)
        assert "1000 bytes" in data["message"]


async def test_big_base64_body_is_validated_off_the_loop(api: Api):
    image = b64(png_bytes(1200, 1200) + b"\x00" * 400_000)  # > 256 KiB of JSON
    status, data = await api.create(body(image_list=[{"image": image}] * 2))
    assert (status, data["code"]) == (200, 0), data
