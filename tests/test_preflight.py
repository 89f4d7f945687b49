"""`kling_async.preflight`: every bad line named, duplicate ids, and what a batch would send."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import make_png

import kling_async
from kling_async import InvalidRequestError, MultiImageToVideoRequest, PriceTable, preflight
from kling_async._image_cache import ProbeCache
from kling_async._prices import Kind

URL = "https://example.com/ref.png"


def line(*images: str, **fields: Any) -> str:
    return json.dumps({"images": list(images), "prompt": "a job", **fields})


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(text + "\n" for text in lines), encoding="utf-8")
    return path


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """a.png (320x320), b.png (640x400), small.png, wide.png, notes.txt under tmp_path."""
    (tmp_path / "a.png").write_bytes(make_png(320, 320))
    (tmp_path / "b.png").write_bytes(make_png(640, 400))
    (tmp_path / "small.png").write_bytes(make_png(200, 200))
    (tmp_path / "wide.png").write_bytes(make_png(1000, 300))
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


BAD_LINES = {  # line number → (job text, field, rule fragment)
    2: ('{"images": ["a.png"], "prompt": ', "line", "not valid JSON"),
    3: ("[1, 2]", "line", "expected a JSON object"),
    4: (line("a.png", colour="red"), "colour", "unknown field"),
    5: (line("missing.png"), "images[0]", "existing file"),
    6: (line("small.png"), "images[0]", "≥ 300 px"),
    7: (line("a.png", "wide.png"), "images[1]", "aspect 1:2.5–2.5:1"),
    8: (line("notes.txt"), "images[0]", "JPEG or PNG"),
    9: (line("a.png", mode="ultra"), "mode", "'std' or 'pro'"),
    10: (line("a.png", duration="7"), "duration", "'5' or '10'"),
    11: (line("a.png", prompt="x" * 2501), "prompt", "at most 2500 characters"),
    12: (line(), "images", "1–4 items"),
    13: (json.dumps({"images": ["a.png"]}), "prompt", "Field required"),
    14: (line("a.png", callback_url="ftp://x"), "callback_url", "http(s) URL"),
}


def test_every_bad_line_is_named_with_field_rule_and_value(images: Path) -> None:
    lines = [line("a.png")] + [BAD_LINES[n][0] for n in sorted(BAD_LINES)]
    lines += ["", "# a comment", line("b.png", mode="pro")]  # blank and comment are skipped
    report = preflight(write(images / "jobs.jsonl", lines))
    assert report.bad_lines == tuple(sorted(BAD_LINES))
    assert not report.ok
    assert (report.jobs, report.valid) == (len(BAD_LINES) + 2, 2)
    for problem in report.problems:
        _, field, rule = BAD_LINES[problem.line]
        assert problem.field == field, problem
        assert rule in problem.rule or rule in problem.message, problem
        assert problem.value and str(problem).startswith(f"line {problem.line}: ")
    by_line = {p.line: p for p in report.problems}
    assert by_line[6].value == "(200, 200)"
    assert by_line[9].value == "'ultra'"
    assert by_line[13].value == "None"  # a missing field shows no value, not the whole job
    assert len(by_line[11].value) <= 80  # long values are shortened
    assert "wide.png" in by_line[7].message and "3.33" in by_line[7].message


def test_duplicate_ids_reject_every_later_line(images: Path) -> None:
    lines = [
        line("a.png", external_task_id="shot-1"),
        line("a.png", external_task_id="shot-2"),
        line("b.png", external_task_id="shot-1", mode="pro"),
        line("a.png"),
        line("a.png", external_task_id="shot-1"),
    ]
    report = preflight(write(images / "jobs.jsonl", lines))
    assert dict(report.duplicate_ids) == {"shot-1": (1, 3, 5)}
    assert report.bad_lines == (3, 5)
    dup = report.problems[0]
    assert (dup.field, dup.rule, dup.value) == (
        "external_task_id",
        "unique within the batch",
        "'shot-1'",
    )
    assert "line 1" in dup.message
    # Only jobs a batch would submit are priced: line 3 (pro) is not.
    assert [(k.kind.mode, k.jobs) for k in report.kinds] == [("std", 3)]


def test_summary_counts_kinds_units_and_uploads(images: Path) -> None:
    a, b = (images / "a.png").stat().st_size, (images / "b.png").stat().st_size
    lines = [
        line("a.png", "b.png"),  # std 5
        line("a.png", URL, mode="pro"),  # pro 5
        line(str(images / "a.png"), mode="pro", duration="10"),  # same file, absolute path
        line("./b.png", URL, duration="10"),  # std 10, same file, other spelling
        line("b.png", "https://example.com/other.png", mode="pro", duration="10"),
    ]
    report = preflight(write(images / "jobs.jsonl", lines))
    assert report.ok and report.valid == 5
    assert [(str(k.kind), k.jobs, k.units) for k in report.kinds] == [
        ("kling-v1-6 std 5 s", 1, Decimal(1)),
        ("kling-v1-6 std 10 s", 1, Decimal(2)),
        ("kling-v1-6 pro 5 s", 1, Decimal("3.5")),
        ("kling-v1-6 pro 10 s", 2, Decimal(14)),
    ]
    assert report.units == Decimal("20.5")
    assert (report.images, report.image_bytes) == (2, a + b)  # each file once
    assert report.uploads == 6  # but every job sends its own copy
    b64 = {n: 4 * -(-n // 3) for n in (a, b)}
    assert report.upload_bytes == 3 * b64[a] + 3 * b64[b]
    assert report.urls == 2
    assert report.probes == 2  # a.png and b.png opened once each, whatever the spelling


def test_prices_override_the_estimate(images: Path) -> None:
    path = write(images / "jobs.jsonl", [line("a.png", mode="pro")] * 3 + [line("a.png")])
    assert preflight(path).units == Decimal("11.5")
    assert preflight(path, prices={"pro-5": 2}).units == Decimal(7)
    table = PriceTable({"std-5": "0.5", "pro-5": 1})
    report = preflight(path, prices=table)
    assert report.units == Decimal("3.5") and report.prices == table


def test_inline_images_count_by_content(images: Path) -> None:
    import base64

    png = make_png(320, 320)
    inline = base64.b64encode(png).decode()
    other = base64.b64encode(make_png(330, 330)).decode()
    lines = [line(inline), line(inline), line("data:image/png;base64," + other)]
    report = preflight(write(images / "jobs.jsonl", lines))
    assert report.ok and report.images == 2 and report.uploads == 3
    assert report.upload_bytes == 2 * len(inline) + len(other)
    assert report.probes == 0  # inline images are checked by the parser, no file to open


def test_python_requests_are_checked_for_ids_and_counted(png_path: Path) -> None:
    requests = [
        MultiImageToVideoRequest(images=[png_path, URL], prompt="p1", external_task_id="x"),
        MultiImageToVideoRequest(images=[png_path], prompt="p2", mode="pro"),
        MultiImageToVideoRequest(images=[URL], prompt="p3", external_task_id="x"),
    ]
    report = preflight(iter(requests))
    assert report.source == "<requests>" and report.jobs == 3
    assert report.bad_lines == (3,)
    assert report.images == 1 and report.uploads == 2 and report.urls == 1
    assert report.units == Decimal("4.5")


def test_a_missing_job_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        preflight(tmp_path / "nope.jsonl")


def test_preflight_writes_nothing(images: Path) -> None:
    path = write(images / "jobs.jsonl", [line("a.png"), line("missing.png")])
    before = sorted((p.name, p.stat().st_mtime_ns) for p in images.iterdir())
    preflight(path)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in images.iterdir()) == before


def test_report_is_frozen_and_exported(images: Path) -> None:
    report = preflight(write(images / "jobs.jsonl", [line("a.png")]))
    with pytest.raises(AttributeError):
        report.jobs = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        report.duplicate_ids["x"] = (1,)  # type: ignore[index]
    assert {"preflight", "PreflightReport", "PriceTable"} <= set(kling_async.__all__)


# -- the probe cache ----------------------------------------------------------------------------


def _outcome(parse: Any, value: str, index: int, base_dir: Path) -> Any:
    try:
        image = parse(value, index, base_dir)
    except InvalidRequestError as exc:
        return str(exc), exc.field, exc.limit, exc.value
    return image.kind, image.info, image.describe()


def test_probe_cache_answers_like_image_input_parse(images: Path) -> None:
    def plain(value: str, index: int, base_dir: Path) -> Any:
        return kling_async.ImageInput.parse(value, index=index, base_dir=base_dir)

    cache = ProbeCache()
    values = ["a.png", "small.png", "missing.png", URL, "notes.txt", "wide.png"]
    values += ["ftp://x/y.png", "data:image/png;base64,AAAA", ".", "x" * 5000]
    for _ in range(3):  # the second and third rounds come from the cache
        for value in values:
            for index in (0, 3):
                assert _outcome(cache.parse, value, index, images) == _outcome(
                    plain, value, index, images
                ), (value, index)
    # a.png, small.png, notes.txt, wide.png; the bad ones once per index (messages name it)
    assert cache.probes == 1 + 3 * 2
    # the same file under other spellings is not opened again
    for other in ("./a.png", str(images / "a.png")):
        assert _outcome(cache.parse, other, 1, images)[:2] == _outcome(plain, other, 1, images)[:2]
    assert cache.probes == 7


def test_probe_cache_reprobes_a_changed_file(images: Path) -> None:
    cache = ProbeCache()
    first = cache.parse("a.png", 0, images)
    assert cache.parse("a.png", 1, images).info == first.info and cache.probes == 1
    (images / "a.png").write_bytes(make_png(400, 300))
    os.utime(images / "a.png", ns=(1, 1))  # a different mtime even on a coarse clock
    changed = cache.parse("a.png", 0, images)
    assert cache.probes == 2 and changed.info is not None
    assert (changed.info.width, changed.info.height) == (400, 300)
    (images / "a.png").write_bytes(make_png(100, 100))
    with pytest.raises(InvalidRequestError, match="≥ 300 px"):
        cache.parse("a.png", 0, images)


def test_kind_of_a_summary_row_is_a_price_key(images: Path) -> None:
    report = preflight(write(images / "jobs.jsonl", [line("a.png", mode="pro", duration="10")]))
    (row,) = report.kinds
    assert row.kind == Kind("kling-v1-6", "pro", "10") and row.kind.key == "pro-10"
