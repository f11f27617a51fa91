"""The worker side of a dtf test task (template ``pytest/run``): write the shipped files into
the test's own temp folder, run ``python -m pytest`` there with dtf's plugin
(``dtf.pytest_plugin``), and report each pytest case in the task's metrics.

Runs inside the test's subprocess (the runner's timeout kills pytest with it, since both are
in the test's process group); standard library only.

Metrics: ``cases`` (one row per pytest case: nodeid, classname, name, outcome, message,
duration_s, and details for a failure), ``case_counts`` ({outcome: n}), ``pytest_exit_code``,
``files_sha256`` and ``source: "pytest"``. The task is ``failed`` when a case failed or
errored, ``skipped`` when pytest collected nothing or every case was skipped or xfailed,
``error`` when pytest itself could not run (a usage or internal error).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from dtf.pytest_plugin import CASES_ENV, junit_names

__all__ = ["main", "DEVICE_FOR_HARDWARE"]

# What a test passes to torch for each hardware kind (ROCm builds of torch call HIP "cuda").
DEVICE_FOR_HARDWARE = {"cpu": "cpu", "cuda": "cuda", "rocm": "cuda", "mps": "mps", "webgpu": "webgpu"}
OUTPUT_TAIL_CHARS = 6000
_BAD_OUTCOMES = ("failed", "error")


def _safe_relpath(name: str) -> PurePosixPath:
    """A shipped file's path must stay inside the test's folder."""
    rel = PurePosixPath(name)
    if not name or rel.is_absolute() or any(part in ("", "..") for part in rel.parts) or "\\" in name or ":" in name:
        raise ValueError(f"refusing to write a shipped file outside the test folder: {name!r}")
    return rel


def write_files(folder: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        target = folder.joinpath(*_safe_relpath(name).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def main(h: Any, params: Mapping[str, Any], hardware: str, work: Path) -> None:
    """Run the task described by ``params`` (see dtf.testtasks) in ``work``; ``h`` is the
    dtf harness: metrics go there, and the outcome is raised as the harness expects."""
    target = str(params.get("target") or "")
    if not target:
        h.skip("no pytest target in this test task")
    src = work / "src"
    src.mkdir(parents=True, exist_ok=True)
    write_files(src, params.get("files") or {})
    cases_file, output_file = work / "pytest-cases.json", work / "pytest-output.txt"
    env = dict(os.environ)
    env.update({"DTF_HARDWARE": hardware, "DTF_DEVICE": DEVICE_FOR_HARDWARE.get(hardware, hardware),
                CASES_ENV: str(cases_file), "PYTHONDONTWRITEBYTECODE": "1"})
    env.pop("DTF_RESULT_FILE", None)  # the task's own outcome file is not pytest's business
    command = [sys.executable, "-m", "pytest", target, *[str(a) for a in params.get("args") or []],
               "-p", "dtf.pytest_plugin", "-p", "no:cacheprovider", "--rootdir", str(src), "-q"]
    with open(output_file, "wb") as out:
        code = subprocess.run(command, cwd=src, env=env, stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.STDOUT, check=False).returncode
    try:
        data = json.loads(cases_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    cases = [c for c in data.get("cases") or [] if isinstance(c, dict)]
    _show_from_suite(cases, target, str(params.get("path") or ""))
    counts = Counter(str(c.get("outcome")) for c in cases)
    h.metric("source", "pytest")
    h.metric("pytest_exit_code", code)
    h.metric("files_sha256", params.get("files_sha256") or "")
    h.metric("case_counts", dict(sorted(counts.items())))
    h.metric("cases", cases)
    if data.get("truncated"):
        h.metric("cases_truncated", True)
    output = output_file.read_text(encoding="utf-8", errors="replace")
    bad = [c for c in cases if c.get("outcome") in _BAD_OUTCOMES]
    if bad or code == 1:
        sys.stderr.write(output[-OUTPUT_TAIL_CHARS:])
        first = bad[0] if bad else {"nodeid": target, "message": "pytest reported failures"}
        summary = ", ".join(f"{counts[k]} {k}" for k in sorted(counts))
        raise AssertionError(f"{len(bad)} of {len(cases)} pytest cases failed ({summary}); "
                             f"first: {first.get('nodeid')}: {first.get('message') or first.get('outcome')}")
    if code == 5 or not cases:
        if code not in (0, 5):
            sys.stderr.write(output[-OUTPUT_TAIL_CHARS:])
            raise RuntimeError(f"pytest exited with code {code}: {_last_line(output)}")
        h.skip(f"pytest collected no test from {target}")
    if code != 0:
        sys.stderr.write(output[-OUTPUT_TAIL_CHARS:])
        raise RuntimeError(f"pytest exited with code {code}: {_last_line(output)}")
    if all(c.get("outcome") in ("skipped", "xfailed") for c in cases):
        h.skip(f"every case skipped or xfailed: {cases[0].get('message') or ''}".strip())


def _show_from_suite(cases: list[dict[str, Any]], target: str, shown: str) -> None:
    """Nodeids relative to the suite's folder, as the test ids show them (pytest ran in the
    shipped root): ``test_ops.py::t`` -> ``tests/test_ops.py::t``, classname to match."""
    prefix = shown[: len(shown) - len(target)] if target and shown.endswith(target) else ""
    if not prefix:
        return
    for case in cases:
        nodeid = str(case.get("nodeid") or "")
        if nodeid and not nodeid.startswith("<"):
            case["nodeid"] = prefix + nodeid
            case["classname"], case["name"] = junit_names(case["nodeid"])


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else "(no output)"
