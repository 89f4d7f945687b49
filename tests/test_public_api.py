"""The public facade: `__all__`, docstrings, no environment reads at import, import layering."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import kling_async

PACKAGE = Path(kling_async.__file__).parent

#: Imports flow one way: a module may import only from an earlier layer. `models` and
#: `simulator` are subpackages counted as one unit each; a module missing here fails the test
#: until it is given its place.
LAYERS: list[set[str]] = [
    {"_types", "_errors", "_shared_lua", "_rate_sample"},
    {
        "_config",
        "_events",
        "_encoding",
        "_names",
        "_prices",
        "_probe",
        "_folder",
        "_sink",
        "_saver",
    },
    {"_adaptive", "_health", "_server_time", "_lost_time", "_journal_writer", "_envelope"},
    {"_gate", "_stats"},
    {"_imagefile"},
    {"_images", "_budget"},
    {"models", "_image_cache", "_image_digests"},
    {"_auth", "_retry", "_limits", "_pacing", "_body", "_identity", "_journal_schema", "_records"},
    {"_request_rate", "_http_outcomes"},
    {"_http", "_download_stream", "_followed", "_shared_link", "_journal_rows"},
    {"_sweep"},
    {"_create", "_poll", "_download_retry", "_shared_slots", "_shared_rate", "_shared_status"},
    {"_queries", "_slots", "_shared_gate", "_shared_tracker", "_shared_tokens"},
    {"_coordinator", "_client_tasks"},
    {"_client"},
    {"_journal", "_jobs", "_callbacks"},
    {"_labels", "_journal_units", "_journal_legacy"},
    {"_results", "_preflight", "_journal_run", "_requery"},
    {"_batch_downloads", "_batch_submit", "_batch_status"},
    {"_batch_feed"},
    {"_batch_resume"},
    {"_batch_create"},
    {"_batch_follow"},
    {"_batch"},
    {"_progress", "_summary"},
    {"_dry_run"},
    {"__init__"},
    {"simulator"},
    {"_cli_parser"},
    {"cli"},
    {"__main__"},
]
LAYER_OF = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _unit(path: Path) -> str:
    """The layering unit of a source file: its module name, or its subpackage's name."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import that can run (lazy ones in functions included), minus TYPE_CHECKING blocks."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _targets(path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The kling_async units an import statement pulls in ("__init__" for the package itself)."""
    rel = path.relative_to(PACKAGE)
    if isinstance(node, ast.Import):
        dotted = [a.name.split(".") for a in node.names]
        return [p[1] if len(p) > 1 else "__init__" for p in dotted if p[0] == "kling_async"]
    if node.level == 0:
        parts = (node.module or "").split(".")
        if parts[0] != "kling_async":
            return []
        base: list[str] = []
        rest = parts[1:]
    else:
        base = list(rel.parts[:-1])[: len(rel.parts) - node.level]
        if node.level > len(rel.parts):
            raise AssertionError(f"{rel}: relative import above the package")
        rest = node.module.split(".") if node.module else []
    full = base + rest
    if full:
        return [full[0]]
    # `from . import x, y` at the package root: each name is a module, or the facade itself
    names = [a.name for a in node.names]
    return [
        n if (PACKAGE / f"{n}.py").exists() or (PACKAGE / n).is_dir() else "__init__" for n in names
    ]


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_import_direction() -> None:
    problems = []
    for path in _sources():
        unit = _unit(path)
        if unit not in LAYER_OF:
            problems.append(f"{path.relative_to(PACKAGE)}: new module, give it a layer in LAYERS")
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in _runtime_imports(tree):
            for target in _targets(path, node):
                if target == unit:
                    continue  # inside one subpackage
                if unit == "simulator":
                    problems.append(
                        f"{path.relative_to(PACKAGE)}:{node.lineno}: the simulator imports "
                        f"kling_async.{target}; it must stand alone"
                    )
                    continue
                if target not in LAYER_OF:
                    if (PACKAGE / f"{target}.py").exists() or (PACKAGE / target).is_dir():
                        problems.append(f"{target}: new module, give it a layer in LAYERS")
                    continue
                if LAYER_OF[target] >= LAYER_OF[unit]:
                    problems.append(
                        f"{path.relative_to(PACKAGE)}:{node.lineno}: {unit} (layer "
                        f"{LAYER_OF[unit]}) imports {target} (layer {LAYER_OF[target]})"
                    )
    assert not problems, "\n".join(problems)


def test_layer_checker_sees_runtime_imports_only() -> None:
    tree = ast.parse(
        textwrap.dedent(
            """
            from typing import TYPE_CHECKING
            import kling_async._http
            from kling_async.models import Task
            from ._client import Client
            from . import cli
            if TYPE_CHECKING:
                from ._batch import Batch
            def lazy():
                from .simulator import Simulator
            """
        )
    )
    top = [t for node in _runtime_imports(tree) for t in _targets(PACKAGE / "_x.py", node)]
    assert top == ["_http", "models", "_client", "cli", "simulator"]  # no _batch
    inner = ast.parse("from ._task import Task\nfrom .._errors import KlingError\n")
    path = PACKAGE / "models" / "_x.py"
    assert [t for n in _runtime_imports(inner) for t in _targets(path, n)] == [
        "models",
        "_errors",
    ]


def test_architecture_names_every_module_in_its_layer() -> None:
    """ARCHITECTURE.md's module table is the module map: every unit, in its layer, no other."""
    text = (PACKAGE.parent / "ARCHITECTURE.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| `([\w]+)(?:\.py|/)` \|", text, flags=re.M)
    assert {name: int(layer) for layer, name in rows} == LAYER_OF
    units = {_unit(p) for p in PACKAGE.rglob("*.py")}
    assert units == set(LAYER_OF)


def test_all_sorted_and_present() -> None:
    names = kling_async.__all__
    assert names == sorted(names)
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(kling_async, name), name
    assert kling_async.__version__


def test_public_names_documented() -> None:
    missing = []
    for name in kling_async.__all__:
        obj = getattr(kling_async, name)
        if inspect.isclass(obj):
            if not obj.__dict__.get("__doc__"):
                missing.append(name)
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                func = member.fget if isinstance(member, property) else member
                if isinstance(func, classmethod | staticmethod):
                    func = func.__func__
                if inspect.isfunction(func) and not func.__doc__:
                    missing.append(f"{name}.{attr}")
        elif inspect.isfunction(obj) and not obj.__doc__:
            missing.append(name)
    assert not missing, f"public names without a docstring: {missing}"


def test_exported_names_live_in_the_package() -> None:
    """`kling_async.Task`, not `kling_async.models._task.Task`: what users import is what
    reprs, tracebacks and documentation show (as httpx and anyio do)."""
    elsewhere = [
        f"{name}: {obj.__module__}"
        for name in kling_async.__all__
        if isinstance(obj := getattr(kling_async, name), type) or inspect.isfunction(obj)
        if obj.__module__ != "kling_async"
    ]
    assert not elsewhere
    assert repr(kling_async.Task) == "<class 'kling_async.Task'>"
    error = kling_async.ServerError("boom", status=500, code=5000)
    assert f"{type(error).__module__}.{type(error).__qualname__}" == "kling_async.ServerError"


def test_core_names_exported() -> None:
    for name in (
        "Client",
        "Credentials",
        "MultiImageToVideoRequest",
        "Task",
        "TaskStatus",
        "KlingError",
        "APIError",
        "RetryPolicy",
        "PollPolicy",
        "Limits",
        "Timeouts",
    ):
        assert name in kling_async.__all__


_ENV_PROBE = """
import importlib, os, pkgutil, sys, sysconfig

real = os.environ
stdlib = sysconfig.get_paths()["stdlib"]
readers = set()


def note():
    # The reader is the first frame outside this probe and the standard library (os.getenv,
    # os.path.expanduser… read on someone's behalf); site-packages readers are not ours.
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if name != __file__ and not name.startswith((stdlib, "<frozen")):
            readers.add(name)
            return
        frame = frame.f_back


class Probe(dict):
    def __getitem__(self, key):
        note()
        return real[key]

    def get(self, key, default=None):
        note()
        return real.get(key, default)

    def __contains__(self, key):
        note()
        return key in real

    def __iter__(self):
        note()
        return iter(real)

    def keys(self):
        note()
        return real.keys()

    def items(self):
        note()
        return real.items()

    def copy(self):
        note()
        return real.copy()


os.environ = Probe(real)
os.getenv = lambda key, default=None: (note(), real.get(key, default))[1]
import kling_async  # noqa: E402

pkg = kling_async.__path__[0]
skip = ("kling_async.simulator", "kling_async.cli", "kling_async.__main__")
for info in pkgutil.walk_packages(kling_async.__path__, "kling_async."):
    if not info.name.startswith(skip):
        importlib.import_module(info.name)
if len(sys.argv) > 1:  # self-test: a module that does read the environment at import
    exec(compile("import os\\nos.environ.get('HOME')", pkg + "/_fake.py", "exec"))
for name in sorted(readers):
    if name.startswith(pkg):
        print(name)
"""


def _probe(tmp_path: Path, *args: str) -> str:
    script = tmp_path / "env_probe.py"
    script.write_text(_ENV_PROBE, encoding="utf-8")
    out = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_no_environment_reads_at_import(tmp_path: Path) -> None:
    readers = _probe(tmp_path)
    assert readers == "", f"modules reading os.environ at import:\n{readers}"


def test_environment_probe_works(tmp_path: Path) -> None:
    assert _probe(tmp_path, "self-test").endswith("_fake.py")
