"""Every example runs as is: as a subprocess with --simulate, the web backends over real HTTP."""

from __future__ import annotations

import ast
import asyncio
import importlib.metadata
import os
import re
import signal
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kling_async.simulator import Simulator

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
IMAGES = sorted((EXAMPLES / "images").glob("*.png"))
#: Signs of an unclean exit that do not change the return code.
NOISE = ("Traceback", "Unclosed", "Task was destroyed", "Exception ignored", "Warning")

pytestmark = pytest.mark.slow


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus any real Kling account, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def run_example(name: str, *args: str, cwd: Path, timeout: float = 30) -> str:
    """Run examples/<name> with --simulate; assert a clean exit; return its stdout."""
    done = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name), "--simulate", *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert not any(sign in done.stderr for sign in NOISE), done.stderr
    return done.stdout


def test_python_m_kling_async_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kling_async", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0 and "usage: kling-async" in done.stdout


def test_quickstart(tmp_path: Path) -> None:
    out = run_example("quickstart.py", "--out", str(tmp_path / "videos"), cwd=tmp_path)
    [video] = (tmp_path / "videos").glob("*.mp4")
    assert f"saved {video}" in out and video.stat().st_size > 0


def test_batch(tmp_path: Path) -> None:
    args = ("--jobs", "30", "--concurrency", "6", "--out", str(tmp_path / "out"))
    out = run_example("batch.py", *args, cwd=tmp_path)
    assert "30/30 submitted, 30 finished, 30 saved" in out  # the event-hook progress line
    assert "done: 30 videos" in out
    assert len(list((tmp_path / "out" / "videos").glob("*.mp4"))) == 30
    again = run_example("batch.py", *args, cwd=tmp_path)  # resumes: nothing submitted twice
    assert "0/30 submitted" in again and "done: 30 videos" in again


def test_callbacks_wake_wait_long_before_the_poll(tmp_path: Path) -> None:
    out = run_example("callbacks.py", cwd=tmp_path)
    match = re.search(r"succeed after ([\d.]+) s \((\d+) callbacks\)", out)
    assert match, out
    assert float(match[1]) < 10  # the first poll was due after 30 s
    assert int(match[2]) >= 1
    assert "confirmed: succeed" in out


# -- the web backends ---------------------------------------------------------------------------

WEB_APPS = ["aiohttp_app.py", "fastapi_app.py"]


@asynccontextmanager
async def serve(name: str, *args: str, env: dict[str, str], cwd: Path) -> AsyncIterator[str]:
    """Start the example on 127.0.0.1 (a free port); yield its base URL; stop it with Ctrl-C."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "error",
        str(EXAMPLES / name),
        "--port",
        "0",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith("listening on http://127.0.0.1:"), line
        yield line.split()[-1]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C does: a graceful shutdown
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 15)
        except TimeoutError:
            proc.kill()
            await proc.communicate()
            raise
    stderr = err.decode()
    assert proc.returncode == 0, stderr
    assert not any(sign in stderr for sign in NOISE), stderr  # the shared client was closed


def form(prompt: str, images: list[Path]) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for image in images:
        data.add_field("images", image.read_bytes(), filename=image.name, content_type="image/png")
    data.add_field("prompt", prompt)
    return data


async def post(http: aiohttp.ClientSession, url: str, data: aiohttp.FormData) -> tuple[int, Any]:
    async with http.post(f"{url}/videos", data=data) as resp:
        return resp.status, await resp.json()


async def until_done(http: aiohttp.ClientSession, url: str, task_id: str) -> dict[str, Any]:
    while True:
        async with http.get(f"{url}/videos/{task_id}") as resp:
            assert resp.status == 200
            view: dict[str, Any] = await resp.json()
        if view["status"] in ("succeed", "failed"):
            return view
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("name", WEB_APPS)
async def test_web_backend_queues_under_the_accounts_concurrency(name: str, tmp_path: Path) -> None:
    cap = 2
    async with Simulator(concurrency=cap, gen_seconds=0.3, gen_spread=0.0) as sim:
        # The app runs as for a real account; the account happens to be our simulator.
        env = clean_env(
            KLING_ACCESS_KEY=sim.access_key, KLING_SECRET_KEY=sim.secret_key, KLING_BASE_URL=sim.url
        )
        async with (
            serve(name, "--concurrency", str(cap), env=env, cwd=tmp_path) as url,
            aiohttp.ClientSession() as http,
        ):
            answers = await asyncio.wait_for(
                asyncio.gather(
                    *(post(http, url, form(f"clip {i}", IMAGES[: 1 + i % 3])) for i in range(8))
                ),
                30,
            )
            assert [status for status, _ in answers] == [202] * 8
            ids = [body["task_id"] for _, body in answers]
            assert len(set(ids)) == 8
            views = await asyncio.wait_for(
                asyncio.gather(*(until_done(http, url, i) for i in ids)), 30
            )
            assert all(v["status"] == "succeed" and v["videos"] for v in views)
        assert sim.stats.accepted_creates == 8
        assert sim.stats.peak_running == cap  # full, never over
        assert sim.stats.rejected_concurrency == 0  # queued in the client, never refused


@pytest.mark.parametrize("name", WEB_APPS)
async def test_web_backend_runs_with_simulate(name: str, tmp_path: Path) -> None:
    async with (
        serve(name, "--simulate", env=clean_env(), cwd=tmp_path) as url,
        aiohttp.ClientSession() as http,
    ):
        status, body = await post(http, url, form("a quick one", IMAGES[:2]))
        assert status == 202 and body["status"] == "submitted"
        async with http.get(f"{url}/videos/{body['task_id']}") as resp:
            assert resp.status == 200
            assert (await resp.json())["task_id"] == body["task_id"]
        status, _ = await post(http, url, form("no images", []))
        assert status in (400, 422)
        async with http.get(f"{url}/videos/no-such-task") as resp:
            assert resp.status == 404


# -- what each example needs installed ----------------------------------------------------------

INSTALL = re.compile(r'^\s*pip install -e (?:\.|"\.\[(\w+)\]")(?:\s|$)', re.M)


def _dist(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9_.-]+", requirement)
    assert name is not None, requirement
    return re.sub(r"[-_.]+", "-", name[0]).lower()


def _third_party_imports(tree: ast.Module) -> set[str]:
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    tops = {name.split(".")[0] for name in names}
    return {t for t in tops if t not in sys.stdlib_module_names and t != "kling_async"}


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_each_example_says_what_to_install_and_that_is_enough(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = INSTALL.findall(ast.get_docstring(tree) or "")
    assert len(found) == 1, f"{path.name}: its docstring must name one `pip install -e …`"
    extra = found[0]
    project = tomllib.loads((EXAMPLES.parent / "pyproject.toml").read_text())["project"]
    provided = {_dist(r) for r in project["dependencies"]}
    if extra:
        provided |= {_dist(r) for r in project["optional-dependencies"][extra]}
    owners = importlib.metadata.packages_distributions()
    for module in _third_party_imports(tree):
        dists = {_dist(d) for d in owners.get(module, [module])}
        assert dists & provided, f"{path.name} imports {module}, not in `pip install -e .{extra}`"
    # The README's table of examples says the same.
    install = f'`pip install -e ".[{extra}]"`' if extra else "`pip install -e .`"
    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith(f"| `examples/{path.name}`"))
    assert install in row, row


def test_fastapi_example_without_its_extra_says_which_to_install(tmp_path: Path) -> None:
    # As after the README's first command alone: uvicorn (and FastAPI) are not installed.
    hide = (
        "import runpy, sys; sys.modules['uvicorn'] = None; "
        "runpy.run_path(sys.argv[1], run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", hide, str(EXAMPLES / "fastapi_app.py"), "--simulate"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert 'pip install -e ".[examples]"' in done.stderr and "uvicorn" in done.stderr
