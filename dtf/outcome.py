"""How a run ends a command: the exit code, and the lines that say why.

One policy for every command that reports a run (``dtf run``, ``submit --wait``, ``status``,
``results``, ``report``): 0 all passed, 1 a test failed, errored or timed out (or a
performance regression was flagged when asked to fail on one), 2 the run did not finish
within the wait (naming the tests that never ran) or was cancelled (`dtf cancel`). Pure: the CLI turns an ``Outcome``
into ``typer.Exit``; nothing here prints or exits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from .model import CANCELLED_REASON, FAILING_ORDER, UNFINISHED_ORDER, RunStatus

__all__ = [
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_ERROR",
    "Outcome",
    "results_code",
    "report_code",
    "never_ran",
    "timeout_message",
    "regression_summary",
    "run_outcome",
    "status_outcome",
    "cancelled_outcome",
]

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
_FAILING = frozenset(s.value for s in FAILING_ORDER)
_UNFINISHED = frozenset(s.value for s in UNFINISHED_ORDER)
_SHOWN = 20  # tests named in a timeout message; the rest are counted


@dataclass(frozen=True)
class Outcome:
    """An exit code and the lines (for stderr, in order) that explain it."""

    code: int
    messages: tuple[str, ...] = ()


def results_code(tests: Sequence[Mapping[str, Any]]) -> int:
    """1 when any test failed, errored or timed out, else 0."""
    return EXIT_FAILED if any(row["status"] in _FAILING for row in tests) else EXIT_OK


def report_code(report: Mapping[str, Any], *, fail_on_regression: bool = False) -> int:
    """A report document's verdict: 2 the run did not finish, 1 a test failed, errored or
    timed out (or a regression with ``fail_on_regression``), else 0."""
    if report["outcome"] == "incomplete":
        return EXIT_ERROR
    if report["outcome"] == "failed":
        return EXIT_FAILED
    if fail_on_regression and report.get("regressions"):
        return EXIT_FAILED
    return EXIT_OK


def never_ran(tests: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ids of tests that are still pending, queued or running."""
    return [str(t["test_id"]) for t in tests if t["status"] in _UNFINISHED]


def timeout_message(timeout_s: Optional[float], run_id: str, tests: Sequence[Mapping[str, Any]]) -> str:
    """One line for a wait that gave up: how long, which tests never finished, how to resume."""
    left = never_ran(tests)
    shown = ", ".join(left[:_SHOWN]) + (f" and {len(left) - _SHOWN} more" if len(left) > _SHOWN else "")
    return (f"error: timed out after {timeout_s or 0:g} s waiting for run {run_id}: {len(left)} tests never finished"
            + (f": {shown}" if left else "") + f" (the run goes on; resume with `dtf status {run_id} --wait`)")


def regression_summary(report: Mapping[str, Any]) -> Optional[str]:
    """One line comparing the run with its baseline, naming up to ten regressions; None
    when the report has no comparison."""
    comparison = report.get("comparison")
    if comparison is None:
        return None
    runs = ", ".join(r["run_id"] for r in (report.get("baseline") or {}).get("runs") or []) or "none found"
    counts = comparison["counts"]
    flagged = [e for e in comparison["entries"] if e["verdict"] == "regression"]
    detail = "; ".join(f"{e['test_id']} {e['change']:+.0%}" + (f" ({e['stack_change']})" if e.get("stack_change") else "")
                       for e in flagged[:10])
    return (f"performance vs baseline {runs}: {counts['regression']} regression(s), {counts['improvement']} improvement(s), "
            f"{counts['unchanged']} unchanged, {counts['noisy']} within noise" + (f" — {detail}" if detail else ""))


def run_outcome(
    run_id: str,
    tests: Sequence[Mapping[str, Any]],
    *,
    finished: bool,
    timeout_s: Optional[float] = None,
    report: Optional[Mapping[str, Any]] = None,
    fail_on_regression: bool = False,
) -> Outcome:
    """How a watched run ends: 2 when the wait timed out (naming the tests that never
    ran), else the report's verdict when there is a report, else the results' verdict."""
    messages: list[str] = []
    code = results_code(tests)
    if report is not None:
        summary = regression_summary(report)
        if summary:
            messages.append(summary)
        code = report_code(report, fail_on_regression=fail_on_regression)
    if not finished:
        return Outcome(EXIT_ERROR, (*messages, timeout_message(timeout_s, run_id, tests)))
    return Outcome(code, tuple(messages))


def status_outcome(
    run: Mapping[str, Any],
    *,
    finished: bool,
    waited: bool,
    timeout_s: Optional[float] = None,
    tests: Sequence[Mapping[str, Any]] = (),
) -> Outcome:
    """How ``dtf status`` ends: a wait that gave up is 2 (naming the tests that never
    ran, from ``tests``); a finished run 1 when it failed, else 0; a run still going 0."""
    if run.get("status") == RunStatus.CANCELLED.value:
        return cancelled_outcome(str(run["run_id"]), tests)
    if waited and not finished:
        return Outcome(EXIT_ERROR, (timeout_message(timeout_s, str(run["run_id"]), tests),))
    if finished and run.get("status") == "failed":
        return Outcome(EXIT_FAILED)
    return Outcome(EXIT_OK)


def cancelled_outcome(run_id: str, tests: Sequence[Mapping[str, Any]] = ()) -> Outcome:
    """A cancelled run did not finish: 2, like a wait that gave up, saying how many tests never ran."""
    dropped = sum(1 for row in tests if row.get("reason") == CANCELLED_REASON)
    counted = f": {dropped} tests did not run" if tests else ""
    return Outcome(EXIT_ERROR, (f"run {run_id} was cancelled{counted}",))
