"""The package as a user installs it: what the wheel holds, and typing after `pip install -e .`."""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

import kling_async

ROOT = Path(__file__).resolve().parent.parent
USER_FILE = Path(__file__).with_name("typing_user.py")

pytestmark = pytest.mark.slow


def _pip(python: Path | str, *args: str, timeout: float = 300) -> None:
    done = subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", "-q", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _bin(env: Path, name: str) -> Path:
    return env / ("Scripts" if os.name == "nt" else "bin") / name


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    _pip(sys.executable, "wheel", "--no-deps", "-w", str(out), str(ROOT))
    (path,) = out.glob("kling_async-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_ships_types_simulator_assets_and_licence(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert "kling_async/py.typed" in names
    assert "kling_async/simulator/assets/sample.mp4" in names
    info = f"kling_async-{kling_async.__version__}.dist-info"
    assert f"{info}/licenses/LICENSE" in names
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "examples/"))]
    sample = ROOT / "kling_async/simulator/assets/sample.mp4"
    assert wheel.read("kling_async/simulator/assets/sample.mp4") == sample.read_bytes()


def test_metadata_licence_and_urls_agree(wheel: zipfile.ZipFile) -> None:
    info = f"kling_async-{kling_async.__version__}.dist-info"
    meta = email.message_from_bytes(wheel.read(f"{info}/METADATA"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    # One licence, said three ways that must agree: the SPDX field, the classifier, the file.
    assert project["license"] == meta["License-Expression"] == "MIT"
    assert "License :: OSI Approved :: MIT License" in meta.get_all("Classifier", [])
    licence = wheel.read(f"{info}/licenses/LICENSE").decode()
    assert licence.startswith("MIT License") and licence == (ROOT / "LICENSE").read_text()
    urls = meta.get_all("Project-URL", [])
    assert urls and all(", https://" in url for url in urls)
    assert meta["Version"] == kling_async.__version__


@pytest.mark.exhaustive  # ~30 s of venv, pip and mypy: CI runs it (`pytest -m exhaustive`)
def test_editable_install_is_seen_by_mypy_in_a_users_project(tmp_path: Path) -> None:
    """After `pip install -e .` in a fresh venv, a user's file type-checks with mypy --strict."""
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = _bin(env, "python")
    _pip(python, "install", "-e", str(ROOT))  # the README's install, nothing more
    _pip(python, "install", "mypy")  # what the user brings for their own checks
    project = tmp_path / "project"  # the user's folder: none of our config applies there
    project.mkdir()
    shutil.copy(USER_FILE, project / "app.py")
    # A deliberate mistake proves the types come from kling_async, not from a silent Any.
    (project / "wrong.py").write_text(
        "import kling_async as kling\n\nlimit: str = kling.Limits().concurrency\n",
        encoding="utf-8",
    )

    def mypy(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(python), "-m", "mypy", "--strict", "--no-incremental", name],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    good = mypy("app.py")
    assert good.returncode == 0, good.stdout
    bad = mypy("wrong.py")
    assert bad.returncode == 1, bad.stdout
    assert 'Incompatible types in assignment (expression has type "int"' in bad.stdout
    assert "import-not-found" not in bad.stdout
