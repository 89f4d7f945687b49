"""An output folder written by release 0.1 (journal schema 1: rows keyed by line) keeps working:
nothing is created again, every recorded file keeps its path, half-done work is finished.

The schema-1 folder is built here by hand, exactly as 0.1 wrote it: its SQL, its fingerprints
(sha256 of the line's JSON with sorted keys), its ids (`ka-<batch10>-<line>-<fp12>`) and its
file names (`<id>.mp4`, `<id>-wm.mp4`, `<sanitised>-<hash8>.mp4` for unsafe ids).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import VIDEO_BYTES, SimThread, make_client
from ownership_helpers import World, line

from kling_async import MultiImageToVideoRequest
from kling_async._journal_schema import SCHEMA_VERSION
from kling_async._names import safe_filename
from kling_async.simulator import VideoContent

pytestmark = pytest.mark.slow

V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    line INTEGER PRIMARY KEY,
    external_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    task_id TEXT,
    task TEXT,
    expires_at REAL,
    error TEXT,
    files TEXT,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_external_id ON jobs(external_id);
"""
BATCH = "0123456789abcdef0123456789abcdef"
PART = 10_000


def v1_fingerprint(text: str) -> str:
    try:
        obj = json.loads(text)
    except ValueError:
        return hashlib.sha256(text.strip().encode()).hexdigest()
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def v1_name(ext: str, watermarked: bool = False) -> str:
    stem = ext
    if safe_filename(stem, suffix="") != stem:
        digest = hashlib.sha256(stem.encode()).hexdigest()[:8]
        stem = f"{safe_filename(stem, suffix='', max_len=100)}-{digest}"
    return safe_filename(stem + ("-wm" if watermarked else ""))


#: line text → (state in the 0.1 journal, what exists at Kling / on disk)
V1_LINES = [
    (line("done plain"), "downloaded"),
    (line("done marked", watermark=True), "downloaded"),
    (line("half fetched", external_task_id="Clip #3"), "succeeded"),  # an unsafe id
    (line("created, answer lost"), "submitting-created"),
    (line("never created"), "submitting"),
    ("{oops", "rejected"),
    (line("twice"), "downloaded"),
    (line("twice"), "downloaded"),  # 0.1 made two jobs of identical lines too
]


async def build_v1(world: World) -> dict[int, str]:
    """Create the tasks and files 0.1 would have, and its journal; returns line → id."""
    out, videos = world.out, world.out / "videos"
    videos.mkdir(parents=True)
    db = sqlite3.connect(out / "journal.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(V1_SCHEMA)
    db.execute("INSERT INTO meta VALUES ('batch_id', ?)", (BATCH,))
    ids: dict[int, str] = {}
    content = VideoContent(VIDEO_BYTES)
    async with make_client(world.st.sim) as client:
        for n, (text, state) in enumerate(V1_LINES, start=1):
            fp = v1_fingerprint(text)
            ext = f"ka-{BATCH[:10]}-{n}-{fp[:12]}"
            if text.startswith('{"'):
                ext = json.loads(text).get("external_task_id") or ext
            ids[n] = ext
            task = files = error = None
            if state in ("downloaded", "succeeded", "submitting-created"):
                request = MultiImageToVideoRequest.from_job(json.loads(text))
                task = await client.submit(request, external_task_id=ext)
                if state != "submitting-created":
                    task = await client.wait(task, timeout=20)
            if state == "downloaded":
                assert task is not None
                files = []
                marks = (False, True) if task.videos[0].watermark_url else (False,)
                for wm in marks:
                    (path,) = await client.download(task, videos, name=ext, watermarked=wm)
                    assert path.name == v1_name(ext, wm)
                    data = path.read_bytes()
                    sha = hashlib.sha256(data).hexdigest()
                    files.append({"path": f"videos/{path.name}", "bytes": len(data), "sha256": sha})
            if state == "succeeded":
                assert task is not None
                part = videos / f"{v1_name(ext)}.part"
                part.write_bytes(b"".join(content.iter_range(task.videos[0].id, 0, PART - 1)))
            if state == "rejected":
                error = {
                    "type": "InvalidRequestError",
                    "message": "not valid JSON",
                    "field": "line",
                }
            db.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    n,
                    ext,
                    fp,
                    state.split("-")[0],
                    task.task_id if task and state != "submitting-created" else None,
                    json.dumps(task.model_dump(mode="json"))
                    if task and state != "submitting-created"
                    else None,
                    task.expires_at.timestamp() if task and state != "submitting-created" else None,
                    json.dumps(error) if error else None,
                    json.dumps(files) if files else None,
                    time.time(),
                ),
            )
    db.close()
    return ids


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with SimThread(concurrency=4) as st:
        yield World(st, tmp_path)


def version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def test_a_release_0_1_folder_keeps_working(world: World) -> None:
    ids = asyncio.run(build_v1(world))
    before = {p.name: p.stat().st_mtime_ns for p in (world.out / "videos").glob("*.mp4")}
    creates = world.creates()
    assert creates == 6  # 1, 2, 3, 4, 7 and 8 exist at Kling

    status = world.cli("status", str(world.out))  # read-only: the file stays schema 1
    assert status.returncode == 0 and "downloaded      4" in status.stdout
    assert version(world.out / "journal.sqlite3") == 0

    texts = [text for text, _ in V1_LINES]
    world.write([line("new job"), *reversed([t for t in texts if t != "{oops"])])
    served = world.stats()["video_bytes_served"]
    done = world.run()
    assert done.returncode == 0, done.stderr
    rows = world.check()
    stats = world.stats()
    assert world.creates() == creates + 2  # the new job and the one 0.1 never created
    assert stats["creates_by_external_id"][ids[5]] == 1  # sent under 0.1's own id
    assert all(n == 1 for n in stats["creates_by_external_id"].values())
    by_ext = {row["external_task_id"]: row for row in rows}
    assert set(ids[n] for n in (1, 2, 3, 4, 5, 7, 8)) <= set(by_ext)  # 0.1's ids kept
    assert ids[6] not in by_ext  # the rejected line is gone from the file and the journal
    for n in (1, 2, 7, 8):  # recorded files keep their paths and are not fetched again
        for record in by_ext[ids[n]]["files"]:
            name = Path(record["path"]).name
            assert (
                name in before and (world.out / record["path"]).stat().st_mtime_ns == before[name]
            )
    assert len(by_ext[ids[2]]["files"]) == 2  # it asked for a watermark in 0.1
    assert all(row["in_jobs_file"] and row["state"] == "downloaded" for row in rows)
    # Only the missing videos were fetched, the half-done one from where 0.1 stopped.
    assert stats["video_bytes_served"] - served == 3 * VIDEO_BYTES + (VIDEO_BYTES - PART)
    assert version(world.out / "journal.sqlite3") == SCHEMA_VERSION
    db = sqlite3.connect(world.out / "journal.sqlite3")
    try:
        keys = [k for (k,) in db.execute("SELECT key FROM jobs")]
    finally:
        db.close()
    assert not [k for k in keys if k.startswith("v1:")]  # every old row found its job

    served = world.stats()["video_bytes_served"]
    again = world.run()
    assert again.returncode == 0 and world.creates() == creates + 2
    assert world.stats()["video_bytes_served"] == served
    world.check()


def test_an_unmatched_0_1_row_is_still_followed(world: World) -> None:
    """`download` on a 0.1 folder (no jobs file read): finishes what 0.1 left, creates none."""
    asyncio.run(build_v1(world))
    done = world.cli("download", str(world.out), "--no-progress")
    assert done.returncode == 1  # line 5 was never created, line 6 never valid
    assert "not submitted: not created yet" in done.stdout
    rows: Any = {row["external_task_id"]: row for row in world.check(jobs=_v1_file(world))}
    assert world.creates() == 6
    assert sum(row["state"] == "downloaded" for row in rows.values()) == 6


def _v1_file(world: World) -> Path:
    return world.write([text for text, _ in V1_LINES], world.root / "v1.jsonl")
