"""`kling-async download` hours after a run: stored video links are never taken for long-lived.

Through the CLI in subprocesses against the built-in simulator: the tasks are asked again
(in list pages, not one query each) before any video request, so no stale link is ever sent;
a job whose file is on disk already costs no request at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from batch_helpers import (
    SimThread,
    assert_videos_complete,
    clean_env,
    job_line,
    journal_rows,
    run_cli,
    video_ids,
    write_jobs,
)

from kling_async._names import video_name
from kling_async.simulator import VideoContent

HOUR = 3600.0
FAST = ["--poll-interval", "0.05", "--no-progress"]
N = 6


def unfetched(st: SimThread, tmp_path: Path) -> Path:
    """A folder whose tasks all succeeded but no video came (every video request got 404)."""
    st.call(st.sim.faults.set_rates, "video", {"404": 1.0})
    out = tmp_path / "out"
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job_line(i) for i in range(N)])
    proc = run_cli(["run", str(jobs), "--out", str(out), *FAST], clean_env(**st.env()), 120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert {r.state for r in journal_rows(out)} == {"succeeded"}
    st.call(st.sim.faults.clear)
    return out


def download(st: SimThread, out: Path, command: str = "download") -> Any:
    """`kling-async download OUT`, or `run` of the same jobs file again (a rerun)."""
    args = ["download", str(out)] if command == "download" else ["run", *rerun(out)]
    return run_cli([*args, "--no-progress"], clean_env(**st.env()), 60)


def rerun(out: Path) -> list[str]:
    return [str(out.parent / "jobs.jsonl"), "--out", str(out), "--poll-interval", "0.05"]


@pytest.mark.parametrize("command", ["download", "run"])
def test_hours_later_fresh_links_are_asked_for_before_any_video_request(
    tmp_path: Path, command: str
) -> None:
    # Links live one hour; the download starts three hours later: every stored link is dead.
    with SimThread(concurrency=N, url_ttl=HOUR) as st:
        out = unfetched(st, tmp_path)
        st.call(st.sim.advance, 3 * HOUR)
        st.call(st.sim.reset_stats)
        proc = download(st, out, command)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert assert_videos_complete(out, VideoContent(40_000).sha256, expect=N) == N
        stats = st.stats()
        requests = stats["requests"]
        assert requests["video"] == N  # one each: no dead link was ever tried (it would 403)
        # The six asked again in one list page, not six queries (sent twice if the token was
        # refused: the simulator's clock moved three hours, this machine's did not).
        assert requests["list"] == 1 + stats["errors_by_code"].get(1004, 0)
        assert requests.get("query", 0) == 0
        assert requests.get("create", 0) == 0


def test_download_with_the_files_on_disk_already_sends_no_request(tmp_path: Path) -> None:
    # The files reached the disk but the journal never heard (a crash in between): they are
    # hashed and recorded, and Kling is not asked anything — not even about the tasks.
    content = VideoContent(40_000)
    with SimThread(concurrency=N, url_ttl=HOUR) as st:
        out = unfetched(st, tmp_path)
        for row in journal_rows(out):
            (vid,) = video_ids(row)
            data = b"".join(content.iter_range(vid, 0, content.size(vid) - 1))
            (out / "videos" / video_name(row.external_id)).write_bytes(data)
        st.call(st.sim.advance, 3 * HOUR)
        st.call(st.sim.reset_stats)
        proc = download(st, out)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert assert_videos_complete(out, content.sha256, expect=N) == N
        assert sum(st.stats()["requests"].values()) == 0
