"""A wheel install ships the templates: build the wheel from a copy of the sources, install
it into a fresh venv outside the repository and run a suite there with its `dtf`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "dtf", "templates")


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{argv}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.mark.slow
def test_the_wheel_ships_the_templates_and_runs_a_suite_outside_the_repo(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy: the build writes build/ and *.egg-info next to the sources
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_templates"))
        else:
            shutil.copy2(REPO / name, src / name)
    dist = tmp_path / "dist"
    # --no-build-isolation: the build backend is this venv's setuptools (no index needed)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
         timeout=300)
    (wheel,) = dist.glob("dtf-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.removeprefix("dtf/_templates/") for n in names if n.startswith("dtf/_templates/")}
    expected = {str(p.relative_to(REPO / "templates")) for p in (REPO / "templates").rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert shipped == expected

    # A fresh venv; the dependencies come from this venv's site-packages through a .pth
    # (appended after the new venv's own, so its dtf is the wheel's, not the checkout's).
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
         timeout=300)

    work = tmp_path / "work"  # outside the repository
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DTF_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(DTF_STATE_DIR=str(tmp_path / "state"), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    where = _run([str(python), "-c", "import dtf, dtf.templates as t; print(dtf.__file__); print(t.builtin_root())"],
                 cwd=work, env=env).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where
    assert where[1].endswith("dtf/_templates")

    suite = work / "suite.yaml"
    suite.write_text(textwrap.dedent("""\
        name: wheel-smoke
        description: built-in numpy workloads, labelled synthetic
        defaults: {iterations: 2, warmup: 1, timeout_s: 120}
        models:
          - {name: bert-base-uncased, source: synthetic}
          - {name: resnet-50, source: synthetic}
        hardware: [cpu]
        batch_sizes: [1]
        """))
    proc = _run([str(venv / "bin" / "dtf"), "run", str(suite), "--db", str(work / "r.duckdb"), "--format", "json"],
                cwd=work, env=env, timeout=300)
    data = json.loads(proc.stdout)
    assert [t["status"] for t in data["tests"]] == ["passed", "passed"]
    listed = _run([str(venv / "bin" / "dtf"), "templates", "list"], cwd=work, env=env).stdout
    assert "models/torch" in listed and "text_embedding/cpu" in listed
