"""The pytest plugin a dtf test task loads (``-p dtf.pytest_plugin``) in the worker.

It records one row per pytest test case (nodeid, outcome, message, duration, and the
classname/name pytest's own JUnit XML would give it) and writes them as JSON to the file
named by ``DTF_PYTEST_CASES`` when the session ends. Outcomes: passed, failed, error
(setup/teardown or collection), skipped, xfailed, xpassed. Standard library and pytest's
public hooks only.

It also gives tests the hardware they run on: fixtures ``dtf_hardware`` ("cuda") and
``dtf_device`` (the torch device name: "cuda" for cuda and rocm), from ``DTF_HARDWARE`` and
``DTF_DEVICE`` (``cpu`` when unset, as in a local run).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest

CASES_ENV = "DTF_PYTEST_CASES"
MESSAGE_CHARS = 500
DETAILS_CHARS = 4000
MAX_CASES = 10_000

_cases: dict[str, dict[str, Any]] = {}


@pytest.fixture
def dtf_hardware() -> str:
    """The dtf hardware kind this test runs on (cpu, cuda, rocm, mps, webgpu)."""
    return os.environ.get("DTF_HARDWARE", "cpu")


@pytest.fixture
def dtf_device() -> str:
    """The device name for torch: cpu, cuda (also on rocm), mps, or webgpu."""
    return os.environ.get("DTF_DEVICE", "cpu")


def junit_names(nodeid: str) -> tuple[str, str]:
    """(classname, name) as pytest's JUnit XML writes them: ``a/test_x.py::C::t[1]`` ->
    (``a.test_x.C``, ``t[1]``)."""
    parts = [p for p in nodeid.split("::") if p]
    if not parts:
        return "", nodeid
    parts[0] = re.sub(r"\.py$", "", parts[0].replace("/", "."))
    if len(parts) == 1:
        return "", parts[0]
    return ".".join(parts[:-1]), parts[-1]


def _message(report: Any) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (file, line, reason)
        text = str(longrepr[2])
    else:
        crash = getattr(longrepr, "reprcrash", None)
        text = str(getattr(crash, "message", "") or "")
        if not text:
            lines = (report.longreprtext or "").strip().splitlines()
            text = lines[-1] if lines else ""
    return " ".join(text.split())[:MESSAGE_CHARS]


def _record(nodeid: str, outcome: str, report: Any, message: str = "") -> None:
    case = _cases.get(nodeid)
    if case is None:
        if len(_cases) >= MAX_CASES:
            return
        classname, name = junit_names(nodeid)
        case = _cases[nodeid] = {"nodeid": nodeid, "classname": classname, "name": name, "outcome": "passed",
                                 "message": "", "duration_s": 0.0}
    case["duration_s"] = round(case["duration_s"] + float(getattr(report, "duration", 0.0) or 0.0), 6)
    # the first bad phase names the case: a failed call stays failed when its teardown errors too
    if outcome != "passed" and case["outcome"] in ("passed", "xpassed"):
        case["outcome"], case["message"] = outcome, message
        if outcome in ("failed", "error"):
            case["details"] = (report.longreprtext or "")[-DETAILS_CHARS:]
    elif outcome == "xpassed":
        case["outcome"], case["message"] = outcome, message


def pytest_runtest_logreport(report: Any) -> None:
    wasxfail = getattr(report, "wasxfail", None)
    if report.when == "call":
        if report.passed:
            _record(report.nodeid, "xpassed" if wasxfail is not None else "passed", report,
                    f"xpass: {wasxfail}" if wasxfail else "")
        elif report.skipped:
            _record(report.nodeid, "xfailed" if wasxfail is not None else "skipped", report,
                    wasxfail if wasxfail is not None else _message(report))
        else:
            _record(report.nodeid, "failed", report, _message(report))
    elif report.failed:  # setup or teardown
        _record(report.nodeid, "error", report, f"error in {report.when}: {_message(report)}")
    elif report.skipped:  # skipped (or xfail-marked with run=False) before the call
        _record(report.nodeid, "xfailed" if wasxfail is not None else "skipped", report,
                wasxfail if wasxfail is not None else _message(report))
    else:
        _record(report.nodeid, "passed", report)


def pytest_collectreport(report: Any) -> None:
    if report.failed:
        _record(report.nodeid or "<collection>", "error", report, f"collection failed: {_message(report)}")


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    path = os.environ.get(CASES_ENV)
    if not path:
        return
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"exit_status": int(exitstatus), "cases": list(_cases.values()),
                   "truncated": len(_cases) >= MAX_CASES}, fh)
