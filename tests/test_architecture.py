"""Import contracts and the checks CI runs on the code itself.

- The pure core (data, suites, scheduling, parity, model sources) imports neither Celery,
  kombu, Redis, DuckDB nor a model framework: it is checked in a fresh interpreter.
- Only the CLI (the dtf/cli/ package) exits, with the codes dtf/outcome.py decides: no other module exits, except the ones that are the
  entry point of a test process or of a `python -m` helper, listed here with the reason.
- docs/architecture.md names every module of the package, and nothing that is gone.
- ruff (style and errors) and mypy (strict, on the pure core) pass with the config in
  pyproject.toml.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

PACKAGE = REPO / "dtf"
PURE_CORE = ("dtf.model", "dtf.parity", "dtf.predict", "dtf.flaky", "dtf.scale", "dtf.cache", "dtf.schedule", "dtf.suite",
             "dtf.models.source", "dtf.errors", "dtf.paths", "dtf.harness", "dtf.outcome")
HEAVY = ("celery", "kombu", "redis", "duckdb", "pyarrow", "torch", "transformers", "timm", "onnxruntime", "jinja2",
         "dtf.store", "dtf.app", "dtf.coordinator", "dtf.worker")
CLI = "dtf/cli/"
# module (or package folder) -> why it may end the process itself
MAY_EXIT = {
    CLI: "the command line: exit codes are turned into the process's exit here",
    "dtf/harness.py": "runs inside the test's own process: its exit code is the test's outcome",
    "dtf/forkserver.py": "the fork server's child ends with the test's exit code",
    "dtf/models/webgpu.py": "`python -m dtf.models.webgpu setup|check`",
    "dtf/models/inspect.py": "the child process that counts parameters (`python -m dtf.models.inspect --count`)",
    "dtf/flower.py": "`celery -A dtf.flower:app flower`: Celery's entry point, not dtf's CLI",
}


def test_the_pure_core_imports_no_broker_database_or_framework() -> None:
    code = ("import json, sys\n"
            f"for name in {list(PURE_CORE)!r}: __import__(name)\n"
            f"print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def _exits(path: Path) -> list[int]:
    """Lines that end the process: sys.exit, os._exit, raise SystemExit, typer.Exit."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        target = node.exc if isinstance(node, ast.Raise) else node.func if isinstance(node, ast.Call) else None
        if isinstance(target, ast.Call):
            target = target.func
        name = ast.unparse(target) if target is not None else ""
        if name in ("sys.exit", "os._exit", "SystemExit", "typer.Exit", "exit", "quit"):
            lines.append(node.lineno)
    return lines


def test_only_the_cli_and_process_entry_points_exit() -> None:
    found = {str(p.relative_to(REPO)): _exits(p) for p in sorted(PACKAGE.rglob("*.py")) if "_templates" not in p.parts}
    allowed = {path for path in found if path in MAY_EXIT or path.startswith(CLI)}
    offenders = {path: lines for path, lines in found.items() if lines and path not in allowed}
    assert offenders == {}, "raise a DtfError instead and let the CLI (dtf/cli/) exit with dtf.outcome's code"
    assert any(lines for path, lines in found.items() if path.startswith(CLI)), "the CLI is where the process exits"
    assert found["dtf/outcome.py"] == [], "dtf.outcome decides the code; only the CLI exits with it"


def test_the_architecture_doc_maps_every_module() -> None:
    doc = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(dtf/[\w/]+\.py)`", doc))
    tracked = subprocess.run(["git", "ls-files", "dtf"], capture_output=True, text=True, cwd=REPO).stdout.split()
    modules = {p for p in tracked if p.endswith(".py")} or {str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py")}
    assert modules - named == set(), "add these modules to docs/architecture.md"
    assert named - modules == set(), "docs/architecture.md names modules that do not exist"


def _tool(name: str) -> str:
    local = Path(sys.executable).with_name(name)
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return found


def test_ruff_passes() -> None:
    proc = subprocess.run([_tool("ruff"), "check", "dtf", "bench", "tests"], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_passes_strict_on_the_pure_core() -> None:
    paths = [Path(*m.split(".")) for m in PURE_CORE if m != "dtf.harness"]
    files = [str(p if (REPO / p).is_dir() else p.with_suffix(".py")) for p in paths]  # a package: all its modules
    proc = subprocess.run([_tool("mypy"), *files], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
