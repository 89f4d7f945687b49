"""Issue 15 through the CLI: throttling, cut transfers, dead or malformed base URLs, outages,
short-lived video links and a clock off the server's. Each runs `kling-async` in a subprocess
against the built-in simulator (on its own loop in a thread), as a user would."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from batch_helpers import (
    SimThread,
    assert_videos_complete,
    clean_env,
    collect,
    free_port,
    job_line,
    make_client,
    make_requests,
    run_cli,
    write_jobs,
)

from kling_async import RetryPolicy, run_batch
from kling_async.simulator import FaultConfig, VideoContent

DAY = 86_400.0

FAST = ["--poll-interval", "0.05", "--no-progress"]


def jobs(tmp_path: Path, n: int) -> Path:
    return write_jobs(tmp_path / "jobs.jsonl", [job_line(i) for i in range(n)])


def run(st: SimThread, tmp_path: Path, n: int, *flags: str, timeout: float = 60) -> Any:
    out = tmp_path / "out"
    return run_cli(
        ["run", str(jobs(tmp_path, n)), "--out", str(out), *FAST, *flags],
        clean_env(**st.env()),
        timeout=timeout,
    )


def all_downloaded(st: SimThread, tmp_path: Path, n: int, video_bytes: int = 40_000) -> None:
    stats = st.stats()
    assert stats["accepted_creates"] == n
    content = VideoContent(video_bytes)
    assert assert_videos_complete(tmp_path / "out", content.sha256, expect=n) == n


def startup_cost(tmp_path: Path, n: int, env: dict[str, str]) -> float:
    """Seconds that start-up and reading n jobs take on this machine now (several when it is
    loaded, e.g. by parallel tests): the same command as a dry run, which asks nothing of the API.
    """
    started = time.monotonic()
    args = ["run", str(jobs(tmp_path, n)), "--out", str(tmp_path / "dry"), *FAST, "--dry-run"]
    assert run_cli(args, env).returncode == 0
    return time.monotonic() - started


def test_one_request_per_second_every_job_downloaded(tmp_path: Path) -> None:
    with SimThread(concurrency=5, rate_limit=1, gen_seconds=0.2) as st:
        proc = run(st, tmp_path, 30, "--concurrency", "5", timeout=240)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        all_downloaded(st, tmp_path, 30)


def test_sixty_percent_truncated_transfers_all_saved(tmp_path: Path) -> None:
    faults = FaultConfig(rates={"video": {"truncate": 0.6}}, seed=3)
    with SimThread(concurrency=5, video_bytes=1_000_000, faults=faults) as st:
        proc = run(st, tmp_path, 30, "--concurrency", "5", timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        all_downloaded(st, tmp_path, 30, 1_000_000)


def test_nothing_listening_gives_up_with_one_message(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = clean_env(
        KLING_BASE_URL=url,
        KLING_ACCESS_KEY="ak-test",
        KLING_SECRET_KEY="0123456789abcdef0123456789abcdef",
    )
    args = ["run", str(jobs(tmp_path, 200)), "--out", str(tmp_path / "out"), *FAST]
    startup = startup_cost(tmp_path, 200, env)
    started = time.monotonic()
    proc = run_cli(args, env, timeout=60)
    took = time.monotonic() - started
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert took - startup < 15, (took, startup)  # gives up about 10 s after the first request
    text = proc.stdout + proc.stderr
    assert text.count("giving up: nothing answers at " + url) == 1, text
    assert text.count("\n") < 20, text  # one message, not one line per job


def test_an_api_that_hangs_from_the_start_gives_up_too(tmp_path: Path) -> None:
    # Connections are accepted and never answered: no request fails, each just hangs.
    with SimThread(outages=((0, 60),), outage_mode="hang") as st:
        startup = startup_cost(tmp_path, 20, clean_env(**st.env()))
        started = time.monotonic()
        proc = run(st, tmp_path, 20, timeout=60)
        took = time.monotonic() - started
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert took - startup < 15, (took, startup)
        text = proc.stdout + proc.stderr
        assert text.count("giving up: nothing answers at") == 1, text
        assert "requests hang" in text


def test_base_url_without_scheme_is_a_usage_error(tmp_path: Path) -> None:
    args = ["run", str(jobs(tmp_path, 1)), "--out", str(tmp_path / "out")]
    proc = run_cli([*args, "--base-url", "127.0.0.1:8080"], clean_env(), timeout=20)
    assert proc.returncode == 2
    assert "--base-url" in proc.stderr and "http://127.0.0.1:8080" in proc.stderr
    assert not (tmp_path / "out").exists()


def _outage_after(st: SimThread, creates: int, seconds: float, mode: str) -> threading.Thread:
    """Start an outage of `seconds` once `creates` creates were accepted (from a thread)."""

    def cut() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if st.stats()["accepted_creates"] >= creates:
                st.call(st.sim.outage, seconds, mode=mode)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=cut)
    watcher.start()
    return watcher


def test_an_outage_mid_run_is_waited_out(tmp_path: Path) -> None:
    with SimThread(concurrency=5, gen_seconds=0.3) as st:
        watcher = _outage_after(st, 5, 20, "refuse")
        proc = run(st, tmp_path, 20, "--concurrency", "5", timeout=120)
        watcher.join()
        assert proc.returncode == 0, proc.stdout + proc.stderr
        all_downloaded(st, tmp_path, 20)
        assert "waiting for the API" not in proc.stdout  # results only on stdout


def test_a_hang_mid_run_is_noticed_and_waited_out(tmp_path: Path) -> None:
    # The API answered, then accepts connections and answers nothing: found in seconds, not at
    # the 60 s read timeout; the run resumes when the outage ends.
    with SimThread(concurrency=5, gen_seconds=0.3) as st:
        watcher = _outage_after(st, 5, 12, "hang")
        proc = run(st, tmp_path, 20, "--concurrency", "5", timeout=120)
        watcher.join()
        assert proc.returncode == 0, proc.stdout + proc.stderr
        all_downloaded(st, tmp_path, 20)
        assert st.stats()["outage_drops"] > 0


def test_a_hang_longer_than_the_outage_limit_is_given_up_once(tmp_path: Path) -> None:
    with SimThread(concurrency=5, gen_seconds=0.3) as st:
        watcher = _outage_after(st, 5, 60, "hang")
        started = time.monotonic()
        proc = run(st, tmp_path, 20, "--concurrency", "5", "--outage-limit", "3", timeout=60)
        took = time.monotonic() - started
        watcher.join()
        st.call(st.sim.outage, 0)
        text = proc.stdout + proc.stderr
        assert proc.returncode == 1, text
        assert took < 40, took  # hang noticed after ~5 s, given up 3 s later; not the 60 s timeout
        assert text.count("giving up:") == 1, text
        assert "requests hang" in text and "outage limit 3 s" in text


def test_links_that_expire_half_a_second_after_each_query(tmp_path: Path) -> None:
    with SimThread(concurrency=5, url_ttl=0.5, video_bytes=200_000) as st:
        proc = run(st, tmp_path, 20, "--download-concurrency", "1", timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        all_downloaded(st, tmp_path, 20, 200_000)
        assert not list((tmp_path / "out" / "videos").glob("*.part"))


def staged(st: SimThread, out: Path, n: int) -> None:
    """Tasks that succeeded but whose videos could not be fetched yet (the CDN failed)."""
    st.call(st.sim.faults.set_rates, "video", {"5000": 1.0})

    async def stage() -> None:
        quick = RetryPolicy(attempts=1, wait_initial=0.01)
        async with make_client(st.sim, retry=quick) as client:
            results = await collect(run_batch(client, make_requests(n), out))
        assert {r.state for r in results} == {"succeeded"}

    st.run(stage())
    st.call(st.sim.faults.clear)


def test_local_clock_behind_the_server_video_past_expiry_is_expired(tmp_path: Path) -> None:
    # The server is 60 s ahead: by its clock the videos are 30 s past Kling's 30 days, by ours
    # 30 s short of them. Judged by the server's time: `expired`, and no .part left.
    out = tmp_path / "out"
    with SimThread(clock_offset=60) as st:
        staged(st, out, 3)
        st.call(st.sim.advance, 30 * DAY + 30)
        proc = run_cli(["download", str(out), "--no-progress"], clean_env(**st.env()), timeout=60)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert proc.stdout.count(": expired") == 3, proc.stdout
        assert "unavailable" not in proc.stdout
        assert not list((out / "videos").glob("*.part"))


def test_local_clock_ahead_of_the_server_video_before_expiry_is_downloaded(
    tmp_path: Path,
) -> None:
    # The server is 60 s behind: by our clock the videos are 30 s past their 30 days, by the
    # server's 30 s short of them. Judged by the server's time: still fetched.
    out = tmp_path / "out"
    with SimThread(clock_offset=-60) as st:
        staged(st, out, 3)
        st.call(st.sim.advance, 30 * DAY - 30)
        proc = run_cli(["download", str(out), "--no-progress"], clean_env(**st.env()), timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        content = VideoContent(40_000)
        assert assert_videos_complete(out, content.sha256, expect=3) == 3
