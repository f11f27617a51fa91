"""JUnit XML in the shape CI tools read (Jenkins, GitLab, GitHub test-report actions):
``<testsuites>`` holding one ``<testsuite>`` per hardware kind, one ``<testcase>`` per
test with classname ``family.model`` and name ``bs<N> <precision>``; failures carry the
error and the stderr tail, skips their reason. Valid against Jenkins' junit-10.xsd.

Real models: a test that failed its cross-hardware parity check is a ``<failure
type="parity">`` whose message is the parity message ("cuda/fp16 differs from cpu/fp32:
max abs 3.1e-1 > 5e-2 on logits"). Every test's parity verdict is a property: since the
schema allows ``<properties>`` only on a testsuite, it is the suite's property
``dtf.parity.<classname>.<name>`` (value "pass max_rel=2.4e-02 tolerance=2.1e-01 ..."), and
a ``parity:`` line of the test's system-out; its source ("synthetic" for a built-in
workload) is a ``source:`` line there too.

Test tasks (pytest files, docs/test-tasks.md): each pytest case of a task's
``metrics.cases`` is its own ``<testcase>`` with pytest's classname and name (as pytest's
own JUnit XML names it), outcome, message and duration; xfailed is a skip, xpassed a pass.
A task that reported no cases (a timeout, a crash) stays one testcase.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Any, Mapping, Sequence

__all__ = ["render_junit", "testcase_name", "testcase_classname"]

# XML 1.0 allows tab, newline and carriage return of the C0 controls, and no surrogates.
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
MESSAGE_CHARS = 500
_SKIP_METRICS = {"latencies_ms"}


def _xml_text(value: Any) -> str:
    text = _ANSI.sub("", "" if value is None else str(value))
    return _ILLEGAL_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _first_line(text: str | None, fallback: str) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else fallback
    return _xml_text(line[:MESSAGE_CHARS])


def testcase_classname(test: Mapping[str, Any]) -> str:
    """``family.model``; dots inside a model name become underscores, since JUnit
    viewers read dots in a classname as package separators."""
    if "case_classname" in test:
        return str(test["case_classname"])
    return f"{test.get('family') or 'unknown'}.{str(test['model']).replace('.', '_')}"


def testcase_name(test: Mapping[str, Any]) -> str:
    if "case_name" in test:
        return str(test["case_name"])
    return f"bs{test['batch_size']} {test['precision']}"


def _timestamp(tests: Sequence[Mapping[str, Any]], fallback: str | None) -> str:
    """The earliest start, as the schema wants it: local-free ISO 8601 to the second."""
    stamps = sorted(t["started_at"] for t in tests if t.get("started_at")) or ([fallback] if fallback else [])
    if not stamps:
        return "1970-01-01T00:00:00"
    return datetime.fromisoformat(stamps[0].replace("Z", "+00:00")).strftime("%Y-%m-%dT%H:%M:%S")


def _seconds(value: Any) -> str:
    return f"{float(value or 0.0):.3f}"


_CASE_STATUS = {"passed": "passed", "xpassed": "passed", "failed": "failed", "error": "error",
                "skipped": "skipped", "xfailed": "skipped"}


def _case_rows(test: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A test task's pytest cases as testcase rows (the task's own row when it has none)."""
    cases = (test.get("metrics") or {}).get("cases")
    if test.get("family") != "pytest" or not isinstance(cases, list) or not cases:
        return [test]
    rows = []
    for case in cases:
        if not isinstance(case, Mapping):
            continue
        outcome = str(case.get("outcome"))
        message = str(case.get("message") or "")
        if outcome == "xfailed":
            message = f"xfail: {message}" if message else "xfail"
        rows.append({**test, "status": _CASE_STATUS.get(outcome, "error"), "duration_s": case.get("duration_s"),
                     "error": "\n\n".join(x for x in (message, str(case.get("details") or "")) if x) or None,
                     "reason": message or None, "stderr_tail": None, "metrics": {},
                     "case_classname": str(case.get("classname") or ""), "case_name": str(case.get("name") or "?"),
                     "case_nodeid": str(case.get("nodeid") or ""), "case_outcome": outcome})
    return rows or [test]


def _system_out(test: Mapping[str, Any], comparison: Mapping[str, Any] | None) -> str:
    lines = [f"test_id: {test['test_id']}", f"template: {test.get('template')} ({test.get('template_hash')})",
             f"worker: {test.get('worker_id') or '-'} on {test.get('hostname') or '-'}; attempts {test.get('attempts')}"]
    if test.get("case_nodeid"):
        lines.append(f"pytest: {test['case_nodeid']} ({test.get('case_outcome')})")
    if test.get("peak_memory_mb") is not None:
        lines.append(f"peak_memory_mb: {test['peak_memory_mb']:.1f}")
    lines.append(f"source: {test.get('source') or 'synthetic'}")
    if test.get("parity"):
        lines.append(f"parity: {_parity_value(test['parity'])}")
    for name, value in sorted((test.get("metrics") or {}).items()):
        if name not in _SKIP_METRICS and isinstance(value, (int, float, str)):
            lines.append(f"{name}: {value}")
    if comparison is not None:
        lines.append(f"baseline: {_comparison_line(comparison)}")
    return _xml_text("\n".join(lines))


def _parity_value(parity: Mapping[str, Any]) -> str:
    """"pass max_abs=2.4e-02 max_rel=2.4e-02 tolerance=2.1e-01 reference=cpu/fp32 on last_hidden_state"."""
    parts = [str(parity.get("verdict"))]
    for name in ("max_abs", "max_rel", "tolerance"):
        value = parity.get(name)
        if isinstance(value, (int, float)):
            parts.append(f"{name}={value:.1e}")
    if parity.get("reference"):
        parts.append(f"reference={parity['reference']}")
    if parity.get("output"):
        parts.append(f"on {parity['output']}")
    return " ".join(parts)


def _comparison_line(c: Mapping[str, Any]) -> str:
    if c.get("change") is None:
        return f"{c['verdict']} {c.get('note') or ''}".strip()
    return (f"{c['verdict']}: {c['change']:+.1%} fast-tail latency vs run {c.get('baseline_run_id')}"
            f" (noise band {c.get('noise') or 0:.0%}, p={c.get('p_value') or 0:.2g})"
            + (f"; {c['stack_change']}" if c.get("stack_change") else ""))


def _outcome_element(case: ET.Element, test: Mapping[str, Any]) -> None:
    status = test["status"]
    detail = "\n\n".join(x for x in (test.get("error"), test.get("stderr_tail") and f"stderr (tail):\n{test['stderr_tail']}") if x)
    parity = test.get("parity") or {}
    if status == "failed" and parity.get("verdict") == "fail" and parity.get("message"):
        el = ET.SubElement(case, "failure", type="parity", message=_first_line(parity["message"], "parity failed"))
        el.text = _xml_text(detail or parity["message"])
    elif status == "failed":
        el = ET.SubElement(case, "failure", type="failed", message=_first_line(test.get("error"), "test failed"))
        el.text = _xml_text(detail)
    elif status in ("error", "timeout"):
        message = _first_line(test.get("error") or test.get("reason"), f"test {status}")
        kind = status if status == "timeout" else (message.split(":", 1)[0] if ":" in message else "error")
        el = ET.SubElement(case, "error", type=_xml_text(kind), message=message)
        el.text = _xml_text(detail)
    elif status == "skipped":
        ET.SubElement(case, "skipped", message=_first_line(test.get("reason") or test.get("error"), "skipped"))
    elif status == "quarantined":  # ran and failed, but quarantined: reported, not failing the build
        ET.SubElement(case, "skipped", type="quarantined", message=_first_line(test.get("reason"), "quarantined"))
    elif status == "flaky":  # Maven Surefire's element for a test that passed on a rerun
        el = ET.SubElement(case, "flakyFailure", type="flaky", message=_first_line(test.get("reason"), "flaky"))
        el.text = _xml_text(test.get("reason") or "")
    elif status not in ("passed", "cached"):
        ET.SubElement(case, "error", type="not-run",
                      message=f"never finished: still {status} when the report was written")


def _testcase(parent: ET.Element, test: Mapping[str, Any], comparison: Mapping[str, Any] | None,
              regressions_fail: bool) -> None:
    case = ET.SubElement(parent, "testcase", name=_xml_text(testcase_name(test)),
                         classname=_xml_text(testcase_classname(test)), time=_seconds(test.get("duration_s")))
    _outcome_element(case, test)
    if regressions_fail and comparison is not None and comparison["verdict"] == "regression" and test["status"] == "passed":
        el = ET.SubElement(case, "failure", type="performance-regression", message=_xml_text(_comparison_line(comparison)))
        el.text = _xml_text(_comparison_line(comparison))
    ET.SubElement(case, "system-out").text = _system_out(test, comparison)


def _counts(tests: Sequence[Mapping[str, Any]], regressed: set[str]) -> dict[str, int]:
    failures = sum(1 for t in tests if t["status"] == "failed" or t["test_id"] in regressed)
    errors = sum(1 for t in tests if t["status"] not in ("passed", "flaky", "cached", "failed", "skipped", "quarantined"))
    skipped = sum(1 for t in tests if t["status"] in ("skipped", "quarantined"))
    return {"tests": len(tests), "failures": failures, "errors": errors, "skipped": skipped}


def _properties(parent: ET.Element, report: Mapping[str, Any], tests: Sequence[Mapping[str, Any]] = ()) -> None:
    props = ET.SubElement(parent, "properties")
    run = report["run"]
    for name in ("run_id", "suite_name", "suite_hash", "git_sha", "branch", "ci_url", "ci_provider"):
        if run.get(name):
            ET.SubElement(props, "property", name=f"dtf.{name}", value=_xml_text(run[name]))
    for base in (report.get("baseline") or {}).get("runs") or []:
        ET.SubElement(props, "property", name="dtf.baseline_run_id", value=_xml_text(base.get("run_id")))
    for test in tests:
        if test.get("parity"):
            ET.SubElement(props, "property", name=_xml_text(f"dtf.parity.{testcase_classname(test)}.{testcase_name(test)}"),
                          value=_xml_text(_parity_value(test["parity"])))


def render_junit(report: Mapping[str, Any], *, regressions_fail: bool = False) -> str:
    """The report as JUnit XML text. With ``regressions_fail``, a flagged performance
    regression is also a ``<failure type="performance-regression">`` of its test."""
    run = report["run"]
    by_test = {c["test_id"]: c for c in (report.get("comparison") or {}).get("entries") or []}
    regressed = {tid for tid, c in by_test.items() if regressions_fail and c["verdict"] == "regression"}
    tests = [row for test in report["tests"] for row in _case_rows(test)]
    root = ET.Element("testsuites", name=_xml_text(f"dtf {run.get('suite_name')} {run.get('run_id')}"),
                      time=_seconds(sum(float(t.get("duration_s") or 0) for t in tests)),
                      **{k: str(v) for k, v in _counts(tests, regressed).items() if k != "skipped"})
    for index, hw in enumerate(sorted({t["hardware"] for t in tests})):
        here = [t for t in tests if t["hardware"] == hw]
        hosts = sorted({t["hostname"] for t in here if t.get("hostname")})
        suite = ET.SubElement(
            root, "testsuite", name=_xml_text(f"{run.get('suite_name')} on {hw}"), id=str(index),
            package=_xml_text(run.get("suite_name") or "dtf"), hostname=_xml_text(",".join(hosts) or "localhost"),
            timestamp=_timestamp(here, run.get("submitted_at")),
            time=_seconds(sum(float(t.get("duration_s") or 0) for t in here)),
            **{k: str(v) for k, v in _counts(here, regressed).items()},
        )
        _properties(suite, report, here)
        for test in here:
            _testcase(suite, test, by_test.get(test["test_id"]), regressions_fail)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
