"""Job identity, collision-free video names, the journal's file format and the folder lock
(units; the end-to-end scenarios are in test_ownership.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kling_async import (
    FolderBusyError,
    JournalError,
    MultiImageToVideoRequest,
    OutputFolderError,
)
from kling_async._folder import LOCK_NAME, FolderLock, check_folder
from kling_async._identity import content_id, generated_external_id, job_key
from kling_async._image_digests import ContentDigests
from kling_async._images import ImageInput
from kling_async._jobs import Identifier, Job, jobs_from_jsonl, jobs_from_requests
from kling_async._journal import Journal
from kling_async._journal_schema import APPLICATION_ID, SCHEMA_VERSION
from kling_async._names import video_name

URL = "https://example.com/ref.png"


async def keys(jobs: list[Job]) -> list[str]:
    identifier = Identifier()
    return [(await identifier.identify(job)).key for job in jobs]


def jsonl(tmp_path: Path, *lines: dict[str, Any] | str, name: str = "jobs.jsonl") -> Path:
    path = tmp_path / name
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")
    return path


# -- identity -----------------------------------------------------------------------------------


async def test_identity_is_the_wire_request_not_its_spelling(
    tmp_path: Path, png_path: Path
) -> None:
    """Defaults written out, wire names, ./ paths, key order: one job. Content: another."""
    img = png_path.name
    path = jsonl(
        tmp_path,
        {"images": [img], "prompt": "p"},
        {"prompt": "p", "images": [f"./{img}"], "mode": "std", "duration": 5, "watermark": False},
        {"image_list": [{"image": img}], "prompt": "p", "negative_prompt": ""},
        {"images": [img], "prompt": "p", "mode": "pro"},
        {"images": [img], "prompt": "p", "watermark": True},
        {"images": [img], "prompt": "p", "external_task_id": "mine"},
        {"images": [img], "prompt": "p", "callback_url": "https://cb.example/x"},
        {"images": [img, URL], "prompt": "p"},
    )
    a, b, c, *others = await keys(list(jobs_from_jsonl(path)))
    assert len({a, b, c}) == 3  # the same job three times: occurrences 0, 1, 2
    identifier = Identifier()
    firsts = [(await identifier.identify(j)).key for j in jobs_from_jsonl(path)]
    assert firsts[0] == a
    content = content_id(MultiImageToVideoRequest(images=[png_path], prompt="p"), ["x"])
    assert len(content) == 64
    assert len(set(others)) == len(others) and a not in others


async def test_images_count_by_their_bytes(tmp_path: Path, png_factory: Any) -> None:
    """A file and the same bytes as base64 or bytes are one job; new bytes under the same
    path (an edited image) are a new job."""
    path = png_factory(320, 320, "a.png")
    data = path.read_bytes()
    as_file = MultiImageToVideoRequest(images=[path], prompt="p")
    as_b64 = MultiImageToVideoRequest(images=[base64.b64encode(data).decode()], prompt="p")
    as_bytes = MultiImageToVideoRequest(images=[data], prompt="p")
    ids = [await keys(list(jobs_from_requests([r]))) for r in (as_file, as_b64, as_bytes)]
    assert ids[0] == ids[1] == ids[2]
    before = await keys(list(jobs_from_requests([as_file])))
    path.write_bytes(png_factory(330, 330, "b.png").read_bytes())  # same path, new picture
    after = await keys(
        list(jobs_from_requests([MultiImageToVideoRequest(images=[path], prompt="p")]))
    )
    assert before != after


def test_file_digests_are_cached_by_file(png_path: Path) -> None:
    digests = ContentDigests()
    image = ImageInput.parse(png_path)
    assert digests.cached(image) is None
    first = digests.digest(image)
    assert digests.cached(image) == first and len(digests) == 1
    assert digests.digest(ImageInput.parse(str(png_path))) == first and len(digests) == 1
    assert digests.cached(ImageInput.parse(URL)) == f"url:{URL}"
    big = png_path.read_bytes() + os.urandom(3_000_000)  # hashed in slices: same digest
    as_text = ImageInput.parse(base64.b64encode(big).decode())
    assert digests.digest(as_text) == digests.digest(ImageInput.parse(big))
    assert digests.digest(as_text) == "sha256:" + hashlib.sha256(big).hexdigest()


async def test_a_vanished_image_makes_the_job_invalid(tmp_path: Path, png_factory: Any) -> None:
    gone = png_factory(320, 320, "gone.png")
    request = MultiImageToVideoRequest(images=[gone], prompt="p")
    gone.unlink()
    (job,) = [await Identifier().identify(j) for j in jobs_from_requests([request])]
    assert job.request is None and job.error is not None and "gone.png" in str(job.error)
    assert job.key


def test_generated_ids_come_from_batch_and_identity_only() -> None:
    key = job_key("c" * 64, 0)
    assert generated_external_id("b" * 32, key) == f"ka-{'b' * 10}-{key[:24]}"
    assert job_key("c" * 64, 1) != key


# -- names: collision-free by construction --------------------------------------------------

ID = st.text(
    st.characters(blacklist_categories=("Cs",)) | st.sampled_from("aAsS-_. /wm0123456789"),
    min_size=1,
    max_size=40,
)


def _variants(ids: list[str]) -> list[str]:
    """The id set plus its nastiest neighbours: suffixes, case flips, sanitised look-alikes."""
    out = set(ids)
    for i in ids:
        out |= {i + "-wm", i + ".wm", i + "-1", i + ".1", i.upper(), i.lower(), i.replace("_", " ")}
    return sorted(out)


@settings(max_examples=300, deadline=None)
@given(ids=st.lists(ID, min_size=1, max_size=8))
def test_no_two_files_share_a_name_for_any_id_set(ids: list[str]) -> None:
    names: dict[str, tuple[str, int | None, bool]] = {}
    for ident in _variants(ids):
        for index in (None, 0, 1, 2):
            for wm in (False, True):
                name = video_name(ident, index, watermarked=wm)
                folded = name.lower()  # as a case-insensitive file system compares
                assert folded not in names, (name, names.get(folded), (ident, index, wm))
                names[folded] = (ident, index, wm)
                assert name.endswith(".mp4") and len(name) <= 120 and name.isascii()
                assert "/" not in name and "\\" not in name and not name.startswith((".", "-"))


def test_plain_ids_keep_readable_names() -> None:
    assert video_name("shot") == "shot.mp4"
    assert video_name("shot", watermarked=True) == "shot.wm.mp4"
    assert video_name("shot-wm") == "shot-wm.mp4"  # no longer shot's watermarked copy
    assert video_name("shot", 1) == "shot.2.mp4"
    assert video_name("Shot").startswith("Shot.") and video_name("Shot") != "shot.mp4"
    assert video_name("con").startswith("_con.")  # a Windows device name is never plain


# -- the journal's file format ------------------------------------------------------------------


def test_new_journal_is_stamped(tmp_path: Path) -> None:
    Journal(tmp_path / "j.sqlite3").close_sync()
    db = sqlite3.connect(tmp_path / "j.sqlite3")
    try:
        assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        db.close()


def _foreign(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE invoices (id INTEGER)")
    db.commit()
    db.close()


def _newer(path: Path) -> None:
    Journal(path).close_sync()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p.write_bytes(b"this is not a database at all" * 100), "not usable"),
        (lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000), "not usable"),
        (_foreign, "not a kling-async journal"),
        (_newer, "newer kling-async (schema 3"),
        (lambda p: p.mkdir(), "cannot open"),
    ],
    ids=["garbage", "corrupt-header", "foreign", "newer", "directory"],
)
@pytest.mark.parametrize("readonly", [False, True])
def test_unusable_journals_are_refused_by_name(
    tmp_path: Path, make: Any, words: str, readonly: bool
) -> None:
    path = tmp_path / "journal.sqlite3"
    make(path)
    with pytest.raises(JournalError) as info:
        Journal(path, readonly=readonly)
    assert str(path) in str(info.value)
    if not (readonly and words == "cannot open"):
        assert words in str(info.value)
    assert isinstance(info.value, OutputFolderError)


# -- the output folder --------------------------------------------------------------------------


def test_bad_folders_are_named(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(OutputFolderError, match="is a file, not a folder"):
        check_folder(a_file)
    (tmp_path / "out" / "videos").parent.mkdir()
    (tmp_path / "out" / "videos").write_text("x")
    with pytest.raises(OutputFolderError, match="videos is a file"):
        check_folder(tmp_path / "out")
    with pytest.raises(OutputFolderError, match="cannot create"):
        check_folder(a_file / "below")


def test_lock_is_exclusive_across_processes_and_batches(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from kling_async._folder import FolderLock
        lock = FolderLock.acquire(Path({str(out)!r}))
        print("locked", flush=True)
        sys.stdin.readline()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(FolderBusyError) as info:
            FolderLock.acquire(out)
        assert str(out) in str(info.value) and f"PID {proc.pid}" in str(info.value)
    finally:
        proc.kill()  # like kill -9: the kernel drops the lock
        proc.communicate(timeout=10)
    with FolderLock.acquire(out) as lock:
        assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())
        borrowed, release = FolderLock.for_batch(out, "batch one")
        assert borrowed is lock and not release
        with pytest.raises(FolderBusyError, match="this process"):
            FolderLock.for_batch(out, "batch two")
        borrowed.batch = None
    own, release = FolderLock.for_batch(out, "batch three")
    assert release
    own.release()
