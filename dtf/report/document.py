"""The report document: one JSON-ready dict built from a run's rows (and a baseline's),
which every format renders. Its shape is versioned (``schema_version``) and documented in
docs/reports.md; add fields freely, but rename or remove one only with a version bump.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

from ..model import FAILING_ORDER, FINAL_ORDER, UNFINISHED_ORDER, RunStatus
from ..outcome import report_code
from ..regression import Rule, compare_runs, count_verdicts, key_of
from .parity import lift, parity_matrix, source_label, stack_table

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "FINAL_STATUSES",
    "FAILING_STATUSES",
    "UNFINISHED_STATUSES",
    "build_report",
    "comparisons_of",
    "exit_code",
    "iso_time",
]

SCHEMA = "dtf-report"
SCHEMA_VERSION = 1
# Plain strings in report order, from the one vocabulary in dtf.model (reports are JSON).
FINAL_STATUSES: tuple[str, ...] = tuple(s.value for s in FINAL_ORDER)
FAILING_STATUSES: tuple[str, ...] = tuple(s.value for s in FAILING_ORDER)
UNFINISHED_STATUSES: tuple[str, ...] = tuple(s.value for s in UNFINISHED_ORDER)
_ALL_STATUSES = FINAL_STATUSES + UNFINISHED_STATUSES
_TEST_FIELDS = (
    "test_id", "model", "family", "hardware", "batch_size", "precision", "template", "template_hash",
    "status", "attempts", "reason", "error", "stderr_tail", "duration_s", "peak_memory_mb",
    "worker_id", "hostname", "depends_on",
)
SLOWEST = 10


def iso_time(epoch: Any) -> str | None:
    """An epoch in seconds as ISO 8601 UTC with milliseconds, or None."""
    if not isinstance(epoch, (int, float)) or not math.isfinite(epoch) or epoch <= 0:
        return None
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None, tuples lists, keys strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _info(run: Mapping[str, Any]) -> dict[str, Any]:
    info = run.get("info")
    if isinstance(info, str):
        import json

        try:
            info = json.loads(info)
        except ValueError:
            info = {}
    return dict(info) if isinstance(info, Mapping) else {}


def _run_section(run: Mapping[str, Any], tests: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    info = _info(run)
    starts = [t["started_at"] for t in tests if t.get("started_at")]
    ends = [t["finished_at"] for t in tests if t.get("finished_at")]
    return {
        "run_id": run.get("run_id"),
        "suite_name": run.get("suite_name"),
        "suite_hash": run.get("suite_hash"),
        "suite_path": info.get("suite_path"),
        "status": run.get("status"),
        "submitted_at": iso_time(run.get("submitted_at")),
        "finished_at": iso_time(run.get("finished_at")),
        "wall_time_s": (max(ends) - min(starts)) if starts and ends else None,
        "git_sha": run.get("git_sha"),
        "branch": run.get("branch"),
        "ci_provider": info.get("ci_provider"),
        "ci_url": run.get("ci_url"),
    }


def _test_entry(row: Mapping[str, Any]) -> dict[str, Any]:
    entry = {name: row.get(name) for name in _TEST_FIELDS}
    entry["depends_on"] = list(row.get("depends_on") or [])
    entry["started_at"] = iso_time(row.get("started_at"))
    entry["finished_at"] = iso_time(row.get("finished_at"))
    entry["metrics"] = dict(row.get("metrics") or {})
    lifted = lift(row)
    for name in ("source", "weights", "provenance", "parity"):
        if name in lifted:
            entry[name] = lifted[name]
    return entry


def _count(statuses: Iterable[str]) -> dict[str, int]:
    counts = {s: 0 for s in _ALL_STATUSES}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    return counts


def _totals(tests: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts = _count(t["status"] for t in tests)
    unfinished = sum(counts.pop(s) for s in UNFINISHED_STATUSES)
    return {"tests": len(tests), **counts, "unfinished": unfinished}


def _matrix(tests: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    models = list(dict.fromkeys(t["model"] for t in tests))
    sources: dict[str, list[str]] = {}
    for t in tests:
        label = source_label(t)
        if label not in sources.setdefault(t["model"], []):
            sources[t["model"]].append(label)
    hardware = sorted({t["hardware"] for t in tests})
    cells = []
    for model in models:
        for hw in hardware:
            here = [t for t in tests if t["model"] == model and t["hardware"] == hw]
            if here:
                cells.append({"model": model, "hardware": hw, **_totals(here), "outcome": _outcome(here)})
    return {"models": models, "hardware": hardware, "cells": cells, "sources": sources}


def _sources(tests: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """{source: number of tests}; "synthetic" counts the built-in workloads."""
    counts: dict[str, int] = {}
    for t in tests:
        label = source_label(t)
        counts[label] = counts.get(label, 0) + 1
    return counts


def _outcome(tests: Sequence[Mapping[str, Any]]) -> str:
    """incomplete (something never finished), failed, skipped (nothing ran) or passed."""
    statuses = {t["status"] for t in tests}
    if statuses & set(UNFINISHED_STATUSES):
        return "incomplete"
    if statuses & set(FAILING_STATUSES):
        return "failed"
    if statuses and statuses <= {"skipped"}:
        return "skipped"
    return "passed"


def _history_map(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, int, str], list[float]]:
    history: dict[tuple[str, str, int, str], list[float]] = {}
    for row in rows:
        value = row.get("fast_ms")
        if isinstance(value, (int, float)) and math.isfinite(value):
            history.setdefault(key_of(row), []).append(float(value))
    return history


def _baseline_section(baseline: Mapping[str, Any], rule: Rule, tests: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    runs = [
        {"run_id": r.get("run_id"), "hardware": list(r.get("hardware") or []), "git_sha": r.get("git_sha"),
         "branch": r.get("branch"), "submitted_at": iso_time(r.get("submitted_at")), "status": r.get("status")}
        for r in baseline.get("runs") or []
    ]
    base_tests = list(baseline.get("tests") or [])
    history = _history_map(baseline.get("history") or [])
    comparisons = compare_runs(tests, base_tests, history=history, rule=rule)
    section = {"requested": baseline.get("requested"), "runs": runs,
               "history_runs": len({r.get("run_id") for r in baseline.get("history") or []})}
    return section, {
        "rule": rule.to_dict(),
        "counts": count_verdicts(comparisons),
        "entries": [_clean(c.to_dict()) for c in comparisons],
        "status_changes": _status_changes(tests, base_tests),
    }


def _status_changes(tests: Sequence[Mapping[str, Any]], base_tests: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Tests whose pass/fail state differs from the baseline's: newly failing, or fixed."""
    before = {key_of(t): t["status"] for t in base_tests}
    changes = []
    for t in tests:
        old = before.get(key_of(t))
        if old is None or old == t["status"]:
            continue
        was_ok, is_ok = old == "passed", t["status"] == "passed"
        if was_ok != is_ok:
            changes.append({"test_id": t["test_id"], "baseline_status": old, "status": t["status"],
                            "change": "fixed" if is_ok else "broken"})
    return changes


def build_report(
    run: Mapping[str, Any],
    tests: Sequence[Mapping[str, Any]],
    *,
    baseline: Mapping[str, Any] | None = None,
    rule: Rule = Rule(),
    generated_at: float | None = None,
    dtf_version: str = "",
) -> dict[str, Any]:
    """The report document for one run (see docs/reports.md for every field).

    ``tests`` are rows shaped like ``Store.final_results``; ``baseline`` is the
    ``baseline`` part of ``Store.report_data`` (runs, tests, history) or None.
    """
    entries = [_test_entry(t) for t in tests]
    comparison: dict[str, Any] | None = None
    base_section: dict[str, Any] | None = None
    if baseline is not None:
        base_section, comparison = _baseline_section(baseline, rule, tests)
    timed = sorted((t for t in entries if t.get("duration_s")), key=lambda t: -float(t["duration_s"]))
    regressions = comparison["counts"]["regression"] if comparison else 0
    doc = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "generated_at": iso_time(generated_at if generated_at is not None else datetime.now(timezone.utc).timestamp()),
        "dtf_version": dtf_version,
        "run": _run_section(run, tests),
        # A cancelled run did not finish, whatever its tests say (dtf cancel; exit 2 like any unfinished run).
        "outcome": "incomplete" if run.get("status") == RunStatus.CANCELLED.value else (_outcome(tests) if tests else "passed"),
        "regressions": regressions,
        "totals": _totals(tests),
        "hardware": {hw: _totals([t for t in tests if t["hardware"] == hw])
                     for hw in sorted({t["hardware"] for t in tests})},
        "matrix": _matrix(tests),
        "sources": _sources(tests),
        "parity": parity_matrix(tests),
        "stacks": stack_table(tests),
        "slowest": [t["test_id"] for t in timed[:SLOWEST]],
        "tests": entries,
        "baseline": base_section,
        "comparison": comparison,
    }
    return _clean(doc)  # type: ignore[no-any-return]


def exit_code(report: Mapping[str, Any], *, fail_on_regression: bool = False) -> int:
    """The report's verdict as an exit code (the one policy lives in dtf.outcome.report_code)."""
    return report_code(report, fail_on_regression=fail_on_regression)


def comparisons_of(report: Mapping[str, Any], verdict: str) -> list[Mapping[str, Any]]:
    """The comparison entries with one verdict, largest change first."""
    comparison = report.get("comparison") or {}
    found = [e for e in comparison.get("entries") or [] if e["verdict"] == verdict]
    return sorted(found, key=lambda e: -abs(e.get("change") or 0.0))

