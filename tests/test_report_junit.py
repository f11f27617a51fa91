"""JUnit XML as CI tools read it: parsed with junitparser, validated against Jenkins'
junit-10.xsd, one testsuite per hardware kind, failures with the error and stderr tail."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import junitparser
import pytest
import xmlschema
from hypothesis import given, settings, strategies as st

from dtf.report import build_report, render

from .conftest import REPO
from .test_report_rows import BASE_ID, T0, mixed_tests, row_for, run_row

XSD = REPO / "tests" / "fixtures" / "junit" / "junit-10.xsd"


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(XSD))


def junit_of(tests: list[dict[str, Any]], tmp_path: Path, **kw: Any) -> tuple[str, junitparser.JUnitXml]:
    text = render(build_report(run_row(), tests, **kw.pop("doc", {})), "junit", **kw)
    path = tmp_path / "junit.xml"
    path.write_text(text, encoding="utf-8")
    return text, junitparser.JUnitXml.fromfile(str(path))


def cases(xml: junitparser.JUnitXml) -> dict[tuple[str, str, str], junitparser.TestCase]:
    return {(suite.name, case.classname, case.name): case for suite in xml for case in suite}


def test_junit_validates_against_the_jenkins_schema(tmp_path: Path, schema: xmlschema.XMLSchema) -> None:
    text, _ = junit_of(mixed_tests(), tmp_path)
    schema.validate(text)


def test_one_testsuite_per_hardware_with_its_counts(tmp_path: Path) -> None:
    _, xml = junit_of(mixed_tests(), tmp_path)
    suites = {s.name: s for s in xml}
    assert set(suites) == {"smoke on cpu", "smoke on cuda"}
    cpu = suites["smoke on cpu"]
    assert (cpu.tests, cpu.failures, cpu.errors, cpu.skipped) == (6, 1, 2, 0)
    cuda = suites["smoke on cuda"]
    assert (cuda.tests, cuda.failures, cuda.errors, cuda.skipped) == (2, 0, 1, 1)
    assert cpu.time == pytest.approx(sum(t["duration_s"] for t in mixed_tests() if t["hardware"] == "cpu"), abs=0.01)
    first_start = datetime.fromtimestamp(T0 + 1, tz=timezone.utc)  # UTC, no zone, to the second
    assert cpu.timestamp == first_start.strftime("%Y-%m-%dT%H:%M:%S")


def test_testcases_are_named_by_family_model_batch_and_precision(tmp_path: Path) -> None:
    _, xml = junit_of(mixed_tests(), tmp_path)
    names = set(cases(xml))
    assert ("smoke on cpu", "text_embedding.bert-base-uncased", "bs4 fp32") in names
    assert ("smoke on cpu", "audio.openai/whisper-tiny", "bs1 fp32") in names


def test_a_failure_carries_its_message_and_the_stderr_tail_without_control_characters(tmp_path: Path) -> None:
    text, xml = junit_of(mixed_tests(), tmp_path)
    case = cases(xml)[("smoke on cpu", "text_generation.gpt2", "bs4 fp32")]
    (failure,) = case.result
    assert isinstance(failure, junitparser.Failure)
    assert failure.message == "AssertionError: check failed: logits are all finite"
    assert "Traceback (most recent call last)" in failure.text and "AssertionError: check failed" in failure.text
    assert "\x1b" not in text and "\\x00" in failure.text


def test_error_timeout_skip_and_never_run_have_their_own_elements(tmp_path: Path) -> None:
    _, xml = junit_of(mixed_tests(), tmp_path)
    by = cases(xml)
    (err,) = by[("smoke on cpu", "audio.openai/whisper-tiny", "bs1 fp32")].result
    assert isinstance(err, junitparser.Error) and err.type == "KeyError" and err.message == "KeyError: 'mel'"
    (timeout,) = by[("smoke on cpu", "vision.microsoft/resnet-50", "bs1 fp32")].result
    assert isinstance(timeout, junitparser.Error) and timeout.type == "timeout"
    (skip,) = by[("smoke on cuda", "text_embedding.bert-base-uncased", "bs1 fp32")].result
    assert isinstance(skip, junitparser.Skipped) and "no worker here serves cuda" in skip.message
    (never,) = by[("smoke on cuda", "text_generation.gpt2", "bs1 fp32")].result
    assert isinstance(never, junitparser.Error) and never.type == "not-run"


def test_a_passed_testcase_has_metrics_in_system_out(tmp_path: Path) -> None:
    _, xml = junit_of(mixed_tests(), tmp_path)
    case = cases(xml)[("smoke on cpu", "text_embedding.bert-base-uncased", "bs1 fp32")]
    assert case.is_passed and "latency_p50_ms:" in (case.system_out or "")
    assert "latencies_ms" not in (case.system_out or "")


def test_regressions_become_failures_only_when_asked(tmp_path: Path, schema: xmlschema.XMLSchema) -> None:
    now = row_for("gpt2", center_ms=5.0, seed=3)
    base = dict(now, run_id=BASE_ID, metrics=dict(now["metrics"], latencies_ms=[x / 1.3 for x in now["metrics"]["latencies_ms"]]))
    doc = {"baseline": {"requested": "latest", "runs": [run_row(BASE_ID, hardware=["cpu"])], "tests": [base], "history": []}}
    _, plain = junit_of([now], tmp_path, doc=doc)
    assert all(c.is_passed for c in cases(plain).values())
    text, strict = junit_of([now], tmp_path, doc=doc, regressions_fail=True)
    schema.validate(text)
    (failure,) = next(iter(cases(strict).values())).result
    assert failure.type == "performance-regression" and "regression" in failure.message
    assert next(iter(strict)).failures == 1


names = st.text(min_size=1, max_size=40)


@settings(max_examples=80, deadline=None)
@given(names, names)
def test_any_model_name_and_error_text_give_valid_xml(model: str, error: str) -> None:
    schema = xmlschema.XMLSchema(str(XSD))
    text = render(build_report(run_row(), [row_for(model, status="failed", error=error, stderr_tail=error)]), "junit")
    schema.validate(text)


def test_flaky_cached_and_quarantined_tests_do_not_fail_the_build(tmp_path: Path, schema: xmlschema.XMLSchema) -> None:
    tests = [row_for("bert-base-uncased", status="flaky", reason="passed on attempt 2 after a failing one (retry ...)"),
             row_for("gpt2", status="cached", family="text_generation", reason="cached from run r0"),
             row_for("openai/whisper-tiny", status="quarantined", family="audio", reason="failed while quarantined (issue 42)")]
    text, xml = junit_of(tests, tmp_path)
    schema.validate(text)
    (suite,) = list(xml)
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (3, 0, 0, 1)
    by = cases(xml)
    assert "flakyFailure" in text and "passed on attempt 2" in text
    assert by[("smoke on cpu", "text_generation.gpt2", "bs1 fp32")].is_passed
    (skip,) = by[("smoke on cpu", "audio.openai/whisper-tiny", "bs1 fp32")].result
    assert isinstance(skip, junitparser.Skipped) and "issue 42" in skip.message
