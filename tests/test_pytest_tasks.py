"""Test tasks: a suite's `tests:` entries (pytest files) run through the real `dtf run`
(embedded broker, real Celery worker, DuckDB file), one task per file or per case, each
pytest case a row under its task, in `--format json` and as its own JUnit testcase."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from dtf.errors import SuiteError
from dtf.suite import expand_suite, parse_suite

from .conftest import dtf_cmd, dtf_env

MIXED = '''
import os
import pytest

@pytest.fixture
def broken():
    raise RuntimeError("fixture exploded")

def test_pass(dtf_device):
    assert os.environ["DTF_HARDWARE"] == "cpu" and dtf_device == "cpu"

def test_fail():
    assert 1 + 1 == 3, "arithmetic is off"

def test_skip():
    pytest.skip("not on this machine")

@pytest.mark.xfail(reason="known bug 42")
def test_xfail():
    assert False

def test_error(broken):
    pass
'''

OPS = '''
from helpers import double

def test_add():
    assert 1 + 1 == 2

def test_mul():
    assert double(3) == 6

def test_slow():
    assert False, "deselected by -k"
'''

SUITE = '''
name: pytasks
hardware: [cpu]
defaults: {timeout_s: 120}
tests:
  - {path: tests/test_mixed.py}
  - {path: tests/test_ops.py, split: case, root: ., args: ["-k", "not slow"]}
depends_on:
  - {test: "tests/test_ops.py::test_mul/cpu/*/*", after: "tests/test_ops.py::test_add/cpu/*/*"}
'''

MIXED_ID = "tests/test_mixed.py/cpu/bs1/fp32"
ADD_ID, MUL_ID = "tests/test_ops.py::test_add/cpu/bs1/fp32", "tests/test_ops.py::test_mul/cpu/bs1/fp32"
EXPECTED = {"tests/test_mixed.py::test_pass": "passed", "tests/test_mixed.py::test_fail": "failed",
            "tests/test_mixed.py::test_skip": "skipped", "tests/test_mixed.py::test_xfail": "xfailed",
            "tests/test_mixed.py::test_error": "error"}


def write_project(root: Path, suite: str = SUITE) -> Path:
    (root / "tests").mkdir(parents=True, exist_ok=True)
    (root / "tests" / "test_mixed.py").write_text(MIXED)
    (root / "tests" / "test_ops.py").write_text(OPS)
    (root / "helpers.py").write_text("def double(x):\n    return 2 * x\n")
    (root / "suite.yaml").write_text(suite)
    return root / "suite.yaml"


def dtf(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(dtf_cmd(*args), cwd=cwd, env=dtf_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("pytasks")
    write_project(root)
    proc = dtf(root, "run", "suite.yaml", "--db", str(root / "r.duckdb"), "--format", "json",
               "--output-dir", str(root / "out"))
    assert proc.stdout.strip(), proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    return {"root": root, "proc": proc, "data": data, "tests": {t["test_id"]: t for t in data["tests"]}}


@pytest.mark.slow
def test_one_task_per_file_and_per_case_with_readable_ids_and_exit_1(ran: dict[str, Any]) -> None:
    assert ran["proc"].returncode == 1, ran["proc"].stderr[-3000:]  # a case failed
    assert set(ran["tests"]) == {MIXED_ID, ADD_ID, MUL_ID}  # test_slow deselected by -k at collection
    assert ran["tests"][MIXED_ID]["status"] == "failed"
    assert ran["tests"][ADD_ID]["status"] == ran["tests"][MUL_ID]["status"] == "passed"  # helpers.py shipped via root
    assert ran["tests"][MUL_ID]["depends_on"] == [ADD_ID]  # depends_on selectors work on test task ids
    assert ran["tests"][MIXED_ID]["family"] == "pytest" and ran["tests"][MIXED_ID]["template"] == "pytest/run"


@pytest.mark.slow
def test_each_pytest_case_is_a_row_with_outcome_message_and_duration(ran: dict[str, Any]) -> None:
    metrics = ran["tests"][MIXED_ID]["metrics"]
    cases = {c["nodeid"]: c for c in metrics["cases"]}
    assert {n: c["outcome"] for n, c in cases.items()} == EXPECTED
    assert metrics["case_counts"] == {"error": 1, "failed": 1, "passed": 1, "skipped": 1, "xfailed": 1}
    assert "arithmetic is off" in cases["tests/test_mixed.py::test_fail"]["message"]
    assert "assert (1 + 1) == 3" in cases["tests/test_mixed.py::test_fail"]["details"]
    assert cases["tests/test_mixed.py::test_skip"]["message"] == "Skipped: not on this machine"
    assert cases["tests/test_mixed.py::test_xfail"]["message"] == "known bug 42"
    assert "fixture exploded" in cases["tests/test_mixed.py::test_error"]["message"]
    assert all(c["duration_s"] >= 0 for c in cases.values())
    assert metrics["pytest_exit_code"] == 1 and len(metrics["files_sha256"]) == 64
    assert "2 of 5 pytest cases failed" in ran["tests"][MIXED_ID]["error"]
    for test_id, name in ((ADD_ID, "test_add"), (MUL_ID, "test_mul")):
        only = ran["tests"][test_id]["metrics"]["cases"]
        assert [(c["nodeid"], c["outcome"]) for c in only] == [(f"tests/test_ops.py::{name}", "passed")]


@pytest.mark.slow
def test_results_json_from_the_db_has_the_cases_under_the_task(ran: dict[str, Any]) -> None:
    run_id = ran["data"]["run"]["run_id"]
    proc = dtf(ran["root"], "results", run_id, "--db", str(ran["root"] / "r.duckdb"), "--format", "json")
    assert proc.returncode == 1, proc.stderr
    row = next(t for t in json.loads(proc.stdout)["tests"] if t["test_id"] == MIXED_ID)
    assert {c["nodeid"]: c["outcome"] for c in row["metrics"]["cases"]} == EXPECTED


def _junit_cases(path: Path) -> dict[tuple[str, str], str]:
    """(classname, name) -> passed/failure/error/skipped, for dtf's and pytest's own JUnit."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        out[(case.get("classname") or "", case.get("name") or "")] = kinds[0] if kinds else "passed"
    return out


@pytest.mark.slow
def test_junit_shows_each_case_as_pytest_itself_reports_it(ran: dict[str, Any]) -> None:
    root = ran["root"]
    ours = _junit_cases(root / "out" / "junit.xml")
    assert ours[("tests.test_ops", "test_add")] == ours[("tests.test_ops", "test_mul")] == "passed"
    mixed = {k: v for k, v in ours.items() if k[0] == "tests.test_mixed"}
    own = root / "pytest-own.xml"  # the same file through pytest's own --junitxml, from the same folder
    subprocess.run([sys.executable, "-m", "pytest", "tests/test_mixed.py", "-p", "dtf.pytest_plugin", "-p",
                    "no:cacheprovider", f"--junitxml={own}", "-q", "--rootdir", str(root)],
                   cwd=root, env=dtf_env(DTF_HARDWARE="cpu"), capture_output=True, timeout=120, check=False)
    assert mixed == _junit_cases(own)
    assert mixed[("tests.test_mixed", "test_fail")] == "failure"
    assert mixed[("tests.test_mixed", "test_error")] == "error"
    suite = ET.parse(root / "out" / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("7", "1", "1", "2")
    fail = next(c for c in suite.iter("testcase") if c.get("name") == "test_fail")
    failure = fail.find("failure")
    assert failure is not None and "arithmetic is off" in (failure.get("message") or "")


def test_a_collection_error_is_one_line_naming_the_file(tmp_path: Path) -> None:
    write_project(tmp_path, "name: broken\nhardware: [cpu]\ntests:\n  - {path: tests}\n")
    (tmp_path / "tests" / "test_ops.py").unlink()
    (tmp_path / "tests" / "test_broken.py").write_text("import no_such_module_for_dtf\n")
    proc = dtf(tmp_path, "run", "suite.yaml", "--db", str(tmp_path / "r.duckdb"), timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: suite.yaml: tests[0]: pytest cannot collect tests/test_broken.py:")
    assert "No module named 'no_such_module_for_dtf'" in lines[0]


def test_unknown_pytest_arguments_and_empty_collection_are_suite_errors(tmp_path: Path) -> None:
    from dtf.testtasks import collect_tests

    write_project(tmp_path)
    no_root = parse_suite({"name": "a", "hardware": ["cpu"], "tests": [{"path": "tests/test_ops.py"}]},
                          str(tmp_path / "suite.yaml"))  # helpers.py sits above tests/: importable only with root: .
    with pytest.raises(SuiteError, match=r"pytest cannot collect tests/test_ops.py: ModuleNotFoundError: No module named 'helpers'"):
        expand_suite(no_root, collect_tests=collect_tests)
    bad_arg = parse_suite({"name": "a", "hardware": ["cpu"], "tests": [{"path": "tests/test_ops.py", "root": ".", "args": ["--nope"]}]},
                          str(tmp_path / "suite.yaml"))
    with pytest.raises(SuiteError, match=r"tests\[0\]: pytest refuses the arguments: unrecognized arguments: --nope"):
        expand_suite(bad_arg, collect_tests=collect_tests)
    none = parse_suite({"name": "a", "hardware": ["cpu"], "tests": [{"path": "tests/test_ops.py", "root": ".", "args": ["-k", "zzz"]}]},
                       str(tmp_path / "suite.yaml"))
    with pytest.raises(SuiteError, match="collected no test from tests/test_ops.py"):
        expand_suite(none, collect_tests=collect_tests)


def test_split_by_file_and_by_case_ships_hashed_files(tmp_path: Path) -> None:
    from dtf.testtasks import collect_tests

    write_project(tmp_path)
    suite = parse_suite({"name": "a", "hardware": ["cpu", "cuda"], "tests": [
        {"path": "tests/test_mixed.py"}, {"path": "tests/test_ops.py", "split": "case", "hardware": ["cpu"], "root": "."}]},
        str(tmp_path / "suite.yaml"))
    specs = expand_suite(suite, collect_tests=collect_tests)
    ids = [s.test_id for s in specs]
    assert ids == ["tests/test_mixed.py/cpu/bs1/fp32", "tests/test_mixed.py/cuda/bs1/fp32",
                   "tests/test_ops.py::test_add/cpu/bs1/fp32", "tests/test_ops.py::test_mul/cpu/bs1/fp32",
                   "tests/test_ops.py::test_slow/cpu/bs1/fp32"]
    by_file, by_case = specs[0].params, specs[2].params
    assert set(by_file["files"]) == {"test_mixed.py"} and by_file["target"] == "test_mixed.py"  # root: the file's folder
    assert {"helpers.py", "tests/test_ops.py"} <= set(by_case["files"]) and by_case["target"] == "tests/test_ops.py::test_add"
    assert len(by_case["files_sha256"]) == 64 and by_case["files_sha256"] != by_file["files_sha256"]


def test_a_suite_of_only_tests_validates_purely() -> None:
    suite = parse_suite({"name": "t", "hardware": ["cpu"], "tests": ["a/test_x.py", {"path": "b", "split": "case"}]}, "s.yaml")
    assert suite.models == () and [t.split for t in suite.tests] == ["file", "case"]
    assert parse_suite(suite.to_dict(), "s.yaml").tests == suite.tests
    with pytest.raises(SuiteError, match=r"s.yaml: tests: test entries need collection"):
        expand_suite(suite)
    for entry, says in (({"path": "x.py", "split": "module"}, r"tests\[0\]\.split: unknown split 'module'"),
                        ({"path": "x.py", "spilt": "case"}, r"did you mean 'split'"),
                        ({"args": ["-x"]}, r"tests\[0\]\.path: required field missing")):
        with pytest.raises(SuiteError, match=says):
            parse_suite({"name": "t", "hardware": ["cpu"], "tests": [entry]}, "s.yaml")
    with pytest.raises(SuiteError, match=r"hardware: required field missing"):
        parse_suite({"name": "t", "tests": ["x.py"]}, "s.yaml")
    assert parse_suite({"name": "t", "tests": [{"path": "x.py", "hardware": ["cuda"]}]}, "s.yaml").hardware == ()
