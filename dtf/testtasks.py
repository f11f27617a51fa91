"""Test tasks: a suite's `tests:` entries (pytest files) expanded into dtf test specs, where
the suite is submitted. Called by the CLI as ``expand_suite(..., collect_tests=collect_tests)``
(dtf.suite stays pure: this module reads files and runs pytest).

For each entry: ``python -m pytest --collect-only -q`` in a subprocess (the entry's args
included, so ``-k`` and markers select here already), in the entry's root folder; a
collection failure is one SuiteError line naming the file. Then the files a worker needs
are read, content-hashed and size-capped, and put in each spec's params (the "ship the
text" design: a worker needs no checkout, and a result records exactly what ran). Shipped:
the collected test files, every ``conftest.py`` and ``__init__.py`` from the root down to
them, the root's pytest config (pytest.ini, pyproject.toml, setup.cfg, tox.ini), and with
an explicit ``root:`` every ``*.py`` under it (local helper modules).

Ids: ``<file>/<hardware>/bs1/fp32`` (split: file) or ``<file>::<case>/<hardware>/bs1/fp32``
(split: case), where <file> is the test file's path relative to the suite file's folder.
That is dtf's ``model/hardware/bsN/precision`` shape, so ``depends_on`` selectors such as
``tests/test_ops.py*/cpu/*/*`` work unchanged.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from .errors import SuiteError
from .model import TestSpec
from .suite import PYTEST_FAMILY, PYTEST_TEMPLATE, Suite, TestTaskEntry, format_test_id
from .suite.parse import _suite_dir
from .requirements import merge_requires

__all__ = ["collect_tests", "collect_nodeids", "ship_files", "SHIP_MAX_BYTES", "COLLECT_TIMEOUT_S"]

SHIP_MAX_BYTES = 512 * 1024  # per task; the rendered test (1 MiB cap) carries them as text
COLLECT_TIMEOUT_S = 120.0
DEFAULT_MEMORY_GB = 0.5
CONFIG_FILES = ("pytest.ini", "pyproject.toml", "setup.cfg", "tox.ini", "conftest.py")
_SKIP_DIRS = frozenset({"__pycache__", "node_modules", "venv", "build", "dist", "site-packages"})


def collect_tests(suite: Suite) -> list[TestSpec]:
    """Every `tests:` entry of the suite as specs: collected, shipped, one per file or case
    on each of its hardware kinds."""
    base = _suite_dir(suite.path)
    specs: list[TestSpec] = []
    for index, entry in enumerate(suite.tests):
        specs.extend(_entry_specs(suite, index, entry, base))
    return specs


def _entry_specs(suite: Suite, index: int, entry: TestTaskEntry, base: Path) -> list[TestSpec]:
    where = f"tests[{index}]"

    def fail(field: str | None, message: str) -> SuiteError:
        return SuiteError(suite.path, f"{where}.{field}" if field else where, message)

    target = (base / Path(entry.path).expanduser()).resolve()
    if not target.exists():
        raise fail("path", f"no such file or folder: {entry.path}")
    if entry.root is not None:
        root = (base / Path(entry.root).expanduser()).resolve()
        if not root.is_dir():
            raise fail("root", f"not a folder: {entry.root}")
    else:
        root = target if target.is_dir() else target.parent
    try:
        rel_target = target.relative_to(root).as_posix()
    except ValueError:
        raise fail("path", f"{entry.path} is not inside root {entry.root}") from None
    shown_root = _shown(root, base)
    nodeids = collect_nodeids(root, rel_target or ".", entry.args,
                              fail=lambda msg: fail(None, f"{msg} (collecting {entry.path})"), shown_root=shown_root)
    if not nodeids:
        raise fail(None, f"pytest collected no test from {entry.path}" + (f" with args {list(entry.args)}" if entry.args else ""))
    files = list(dict.fromkeys(n.split("::", 1)[0] for n in nodeids))
    shipped, digest = ship_files(root, files, all_python=entry.root is not None,
                                 fail=lambda msg: fail("root" if entry.root else "path", msg))
    units = files if entry.split == "file" else nodeids
    specs = []
    for hardware in entry.hardware or suite.hardware:
        for unit in units:
            file_part, sep, case_part = unit.partition("::")
            shown = posixpath.normpath(posixpath.join(shown_root, file_part)) + sep + case_part
            specs.append(TestSpec(
                test_id=format_test_id(shown, hardware, 1, "fp32"),
                model=shown,
                family=PYTEST_FAMILY,
                hardware=hardware,
                batch_size=1,
                precision="fp32",
                template=PYTEST_TEMPLATE,
                params={"target": unit, "args": list(entry.args), "files": shipped, "files_sha256": digest,
                        "split": entry.split, "path": shown},
                timeout_s=entry.timeout_s if entry.timeout_s is not None else suite.defaults.timeout_s,
                retries=entry.retries if entry.retries is not None else suite.defaults.retries,
                iterations=1,
                warmup=0,
                priority=5,
                memory_gb=entry.memory_gb if entry.memory_gb is not None else DEFAULT_MEMORY_GB,
                requires=merge_requires(suite.requires, entry.requires),
            ))
    return specs


def _shown(path: Path, base: Path) -> str:
    """``path`` as ids show it: relative to the suite's folder when inside it."""
    try:
        rel = path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()
    return "" if rel == "." else rel


def collect_nodeids(root: Path, target: str, args: Sequence[str], *, fail, shown_root: str = "",
                    timeout_s: float = COLLECT_TIMEOUT_S, python: str = sys.executable) -> list[str]:
    """The nodeids (relative to ``root``) that ``pytest --collect-only`` finds for
    ``target`` with ``args``; ``fail(message)`` makes the error raised when it cannot."""
    command = [python, "-m", "pytest", "--collect-only", "-q", target, *args, "-p", "no:cacheprovider",
               "--rootdir", str(root)]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_CURRENT_TEST", None)
    try:
        proc = subprocess.run(command, cwd=root, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, errors="replace", timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise fail(f"pytest collection took longer than {timeout_s:g} s") from None
    except OSError as exc:
        raise fail(f"cannot start pytest: {exc}") from None
    if proc.returncode not in (0, 5):
        raise fail(_collection_error(proc.stdout, proc.stderr, proc.returncode, shown_root))
    nodeids = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        head = line.split("::", 1)[0]
        if "::" in line and head.endswith(".py") and not line.startswith(("ERROR", "E ")) and (root / head).is_file():
            nodeids.append(line)
    return nodeids


def _collection_error(stdout: str, stderr: str, code: int, shown_root: str) -> str:
    """One line: the file that failed and why (pytest's short summary), or its usage error."""
    if "No module named pytest" in stderr:
        return "pytest is not installed in this Python (pip install pytest)"
    for line in stdout.splitlines():
        if line.startswith("ERROR ") and " - " in line:  # "ERROR test_bad.py - NameError: ..."
            where, why = line[len("ERROR "):].split(" - ", 1)
            return f"pytest cannot collect {posixpath.join(shown_root, where.strip())}: {' '.join(why.split())}"
    for line in stdout.splitlines():
        if line.startswith("ERROR "):
            where = line[len("ERROR "):].strip()
            causes = [x[1:].strip() for x in stdout.splitlines() if x.startswith("E ") and x[1:].strip()]
            why = causes[-1] if causes else "collection error"
            return f"pytest cannot collect {posixpath.join(shown_root, where)}: {why}"
    for line in stderr.splitlines():  # a usage error: "python -m pytest: error: unrecognized arguments: --x"
        if "error: " in line and not line.startswith("ERROR: usage"):
            return f"pytest refuses the arguments: {line.split('error: ', 1)[1].strip()}"
    lines = [x.strip() for x in (stderr + "\n" + stdout).splitlines() if x.strip()]
    last = lines[-1] if lines else "(no output)"
    return f"pytest --collect-only exited with code {code}: {' '.join(last.split())[:300]}"


def ship_files(root: Path, files: Sequence[str], *, all_python: bool, fail,
               max_bytes: int = SHIP_MAX_BYTES) -> tuple[dict[str, str], str]:
    """{path relative to root: text} of what a worker needs, and its sha256 (over sorted
    paths and bytes). Over ``max_bytes`` in all, or a file that is not UTF-8, is an error."""
    wanted: dict[str, None] = {}
    for name in CONFIG_FILES:
        if (root / name).is_file():
            wanted[name] = None
    for name in files:
        parts = name.split("/")
        for depth in range(len(parts)):  # conftest.py and __init__.py of each folder on the way
            for helper in ("conftest.py", "__init__.py"):
                candidate = "/".join([*parts[:depth], helper])
                if (root / candidate).is_file():
                    wanted[candidate] = None
        wanted[name] = None
    if all_python:
        for folder, dirs, names in os.walk(root):  # symlinked folders are not followed
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS)
            for name in sorted(names):
                if name.endswith(".py"):
                    wanted[Path(folder, name).relative_to(root).as_posix()] = None
    shipped: dict[str, str] = {}
    total = 0
    digest = hashlib.sha256()
    for name in sorted(wanted):
        path = root / name
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            raise fail(f"{name} is a link out of the shipped root {root}")
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise fail(f"cannot read {name}: {exc.strerror or exc}") from None
        total += len(raw)
        if total > max_bytes:
            raise fail(f"the files shipped with the test task are over the {max_bytes // 1024} KiB cap at {name}"
                       " (ship fewer: a narrower root: or path:)")
        try:
            shipped[name] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise fail(f"{name} is not UTF-8 text; only text files are shipped") from None
        digest.update(name.encode() + b"\0" + raw + b"\0")
    return shipped, digest.hexdigest()
