"""dtf.outcome: the one policy for how a run ends a command (exit code and the lines
that say why), on the result rows and report documents the coordinator really returns."""

from __future__ import annotations

from typing import Any

from dtf.outcome import (EXIT_ERROR, EXIT_FAILED, EXIT_OK, Outcome, never_ran, regression_summary, report_code, results_code,
                         run_outcome, status_outcome, timeout_message)
from dtf.report import build_report


def row(test_id: str, status: str, *, hardware: str = "cpu", p50: float | None = None) -> dict[str, Any]:
    return {"test_id": test_id, "run_id": "r1", "model": test_id.split("/")[0], "family": "text_embedding",
            "hardware": hardware, "batch_size": 1, "precision": "fp32", "status": status, "attempt": 1,
            "duration_s": 1.0, "peak_memory_mb": 10.0, "metrics": {"latency_p50_ms": p50, "latencies_ms": [p50 + 0.01 * i for i in range(20)]} if p50 else {},
            "error": None, "reason": None, "worker_id": "w", "started_at": 1.0, "finished_at": 2.0}


RUN = {"run_id": "r1", "suite_name": "s", "status": "passed", "submitted_at": 1.0}


def report(tests: list[dict[str, Any]], baseline: dict[str, Any] | None = None) -> dict[str, Any]:
    return build_report(RUN, tests, baseline=baseline, dtf_version="test", generated_at=0.0)


def test_all_passed_or_skipped_is_0_and_any_failing_status_is_1() -> None:
    assert results_code([row("a/cpu", "passed"), row("b/cpu", "skipped")]) == EXIT_OK
    for bad in ("failed", "error", "timeout"):
        assert results_code([row("a/cpu", "passed"), row("b/cpu", bad)]) == EXIT_FAILED
    assert results_code([]) == EXIT_OK


def test_a_finished_run_without_a_report_ends_with_its_results_verdict_and_says_nothing() -> None:
    assert run_outcome("r1", [row("a/cpu", "passed")], finished=True) == Outcome(EXIT_OK)
    assert run_outcome("r1", [row("a/cpu", "error")], finished=True) == Outcome(EXIT_FAILED)


def test_a_wait_that_timed_out_is_2_naming_the_tests_that_never_finished() -> None:
    tests = [row("a/cpu", "failed"), row("b/cpu", "running"), row("c/cpu", "queued"), row("d/cpu", "pending")]
    outcome = run_outcome("r1", tests, finished=False, timeout_s=30)
    assert outcome.code == EXIT_ERROR
    assert outcome.messages == (
        "error: timed out after 30 s waiting for run r1: 3 tests never finished: b/cpu, c/cpu, d/cpu "
        "(the run goes on; resume with `dtf status r1 --wait`)",)


def test_a_timeout_message_names_twenty_tests_and_counts_the_rest() -> None:
    tests = [row(f"m{i}/cpu", "queued") for i in range(25)]
    message = timeout_message(None, "r9", tests)
    assert message.startswith("error: timed out after 0 s waiting for run r9: 25 tests never finished: m0/cpu, ")
    assert "m19/cpu and 5 more (the run goes on" in message and "m20/cpu" not in message
    assert never_ran([row("a/cpu", "passed"), row("b/cpu", "running")]) == ["b/cpu"]


def test_with_a_report_the_report_decides_and_an_unfinished_report_is_2() -> None:
    done = report([row("a/cpu", "passed")])
    assert report_code(done) == EXIT_OK
    assert run_outcome("r1", [row("a/cpu", "passed")], finished=True, report=done) == Outcome(EXIT_OK)
    unfinished = report([row("a/cpu", "passed"), row("b/cpu", "running")])
    assert unfinished["outcome"] == "incomplete" and report_code(unfinished) == EXIT_ERROR
    assert report_code(report([row("a/cpu", "timeout")])) == EXIT_FAILED


def test_a_regression_fails_the_run_only_when_asked_and_is_summarised_either_way() -> None:
    base_tests = [row("bert/cpu/bs1/fp32", "passed", p50=10.0)]
    baseline = {"runs": [{**RUN, "run_id": "r0"}], "tests": [{**t, "run_id": "r0"} for t in base_tests]}
    slower = [row("bert/cpu/bs1/fp32", "passed", p50=30.0)]
    doc = report(slower, baseline=baseline)
    assert doc["regressions"] == 1
    summary = regression_summary(doc)
    assert summary is not None and summary.startswith("performance vs baseline r0: 1 regression(s), 0 improvement(s)")
    assert "bert/cpu/bs1/fp32 +200%" in summary
    assert run_outcome("r1", slower, finished=True, report=doc) == Outcome(EXIT_OK, (summary,))
    assert run_outcome("r1", slower, finished=True, report=doc, fail_on_regression=True) == Outcome(EXIT_FAILED, (summary,))
    assert regression_summary(report(slower)) is None


def test_a_timed_out_wait_with_a_baseline_says_both_the_comparison_and_the_timeout() -> None:
    base = {"runs": [{**RUN, "run_id": "r0"}], "tests": [{**row("a/cpu/bs1/fp32", "passed", p50=10.0), "run_id": "r0"}]}
    tests = [row("a/cpu/bs1/fp32", "passed", p50=10.0), row("b/cpu/bs1/fp32", "queued")]
    outcome = run_outcome("r1", tests, finished=False, timeout_s=5, report=report(tests, baseline=base))
    assert outcome.code == EXIT_ERROR and len(outcome.messages) == 2
    assert outcome.messages[0].startswith("performance vs baseline r0:")
    assert outcome.messages[1].startswith("error: timed out after 5 s waiting for run r1: 1 tests never finished: b/cpu/bs1/fp32")


def test_dtf_status_exits_by_the_run_state_and_2_when_its_wait_gives_up() -> None:
    assert status_outcome({"run_id": "r1", "status": "running"}, finished=False, waited=False) == Outcome(EXIT_OK)
    assert status_outcome({"run_id": "r1", "status": "passed"}, finished=True, waited=True) == Outcome(EXIT_OK)
    assert status_outcome({"run_id": "r1", "status": "failed"}, finished=True, waited=False) == Outcome(EXIT_FAILED)
    gave_up = status_outcome({"run_id": "r1", "status": "running"}, finished=False, waited=True, timeout_s=2,
                             tests=[row("a/cpu", "running")])
    assert gave_up.code == EXIT_ERROR and gave_up.messages[0].startswith("error: timed out after 2 s waiting for run r1: 1 tests")
