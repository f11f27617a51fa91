"""The harness API a rendered test calls: percentiles, latency metrics, timing, and the
outcome file that run() writes for each way a test can end."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtf import harness
from dtf.harness import RESULT_FILE_ENV, Harness, latency_metrics, percentile

samples = st.lists(st.floats(min_value=-1e9, max_value=1e9), min_size=1, max_size=50)


def run_main(main: Callable[[Harness], None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, dict[str, Any]]:
    """Call harness.run(main) with a result file; return (exit code or None, outcome)."""
    out = tmp_path / "outcome.json"
    monkeypatch.setenv(RESULT_FILE_ENV, str(out))
    code = None
    try:
        harness.run(main)
    except SystemExit as exc:
        code = exc.code
    return code, json.loads(out.read_text())


# -- percentiles and latency ---------------------------------------------------------------------

def test_percentile_interpolates_between_neighbours() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([10.0, 0.0], 90) == pytest.approx(9.0)
    assert percentile([7.0], 99) == 7.0


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile([], 50))


@given(samples, st.floats(min_value=0, max_value=100), st.floats(min_value=0, max_value=100))
def test_percentile_lies_within_the_data_and_grows_with_q(values: list[float], q1: float, q2: float) -> None:
    lo, hi = sorted((q1, q2))
    p_lo, p_hi = percentile(values, lo), percentile(values, hi)
    assert min(values) <= p_lo <= p_hi + 1e-6 * (1 + abs(p_hi))
    assert p_hi <= max(values)
    assert percentile(values, 0) == min(values) and percentile(values, 100) == max(values)


def test_latency_metrics_reports_percentiles_mean_and_throughput() -> None:
    m = latency_metrics([10.0, 20.0, 30.0, 40.0], items_per_iteration=8)
    assert m["latency_p50_ms"] == 25.0
    assert m["latency_mean_ms"] == 25.0
    assert m["throughput_items_s"] == pytest.approx(32 / 0.1)  # 32 items in 100 ms
    assert m["iterations"] == 4.0


def test_latency_metrics_of_no_iterations_are_nan_not_an_error() -> None:
    m = latency_metrics([], items_per_iteration=8)
    assert m["iterations"] == 0.0
    assert all(math.isnan(m[k]) for k in ("latency_p50_ms", "latency_mean_ms", "throughput_items_s"))


def test_timed_runs_warmup_untimed_and_returns_each_timed_output() -> None:
    calls: list[int] = []

    def step() -> int:
        calls.append(len(calls))
        return len(calls)

    h = Harness()
    outputs = h.timed(step, iterations=3, warmup=2)
    assert len(calls) == 5
    assert outputs == [3, 4, 5]
    assert len(h.latencies_ms) == 3 and all(ms >= 0 for ms in h.latencies_ms)


def test_report_latency_adds_summary_and_raw_latencies() -> None:
    h = Harness()
    h.latencies_ms = [1.0, 3.0]
    h.report_latency(items_per_iteration=2)
    assert h.metrics["latency_p50_ms"] == 2.0
    assert h.metrics["latencies_ms"] == [1.0, 3.0]


def test_check_raises_assertion_error_naming_what_failed() -> None:
    h = Harness()
    h.check(True, "fine")
    with pytest.raises(AssertionError, match="check failed: output shape"):
        h.check(False, "output shape")


# -- run(): one outcome per way a test ends ------------------------------------------------------

def test_a_main_that_returns_is_passed_with_its_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, outcome = run_main(lambda h: h.metric("tokens_s", 99.5), tmp_path, monkeypatch)
    assert code is None
    assert outcome == {"outcome": "passed", "metrics": {"tokens_s": 99.5}, "error": None}


def test_a_failed_check_is_failed_and_exits_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def main(h: Harness) -> None:
        h.metric("before", 1)
        h.check(False, "logits finite")

    code, outcome = run_main(main, tmp_path, monkeypatch)
    assert code == 1
    assert outcome == {"outcome": "failed", "metrics": {"before": 1}, "error": "check failed: logits finite"}


def test_an_assertion_without_a_message_is_failed_with_a_default_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def main(h: Harness) -> None:
        raise AssertionError()  # what a bare `assert` raises outside pytest's rewriting

    code, outcome = run_main(main, tmp_path, monkeypatch)
    assert (code, outcome["outcome"], outcome["error"]) == (1, "failed", "assertion failed")


def test_any_other_exception_is_error_and_exits_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def main(h: Harness) -> None:
        raise RuntimeError("CUDA out of memory")

    code, outcome = run_main(main, tmp_path, monkeypatch)
    assert (code, outcome["outcome"], outcome["error"]) == (1, "error", "RuntimeError: CUDA out of memory")


def test_skip_is_skipped_and_exits_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, outcome = run_main(lambda h: h.skip("needs bf16"), tmp_path, monkeypatch)
    assert (code, outcome["outcome"], outcome["error"]) == (0, "skipped", "needs bf16")


def test_nan_metrics_are_written_as_nan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, outcome = run_main(lambda h: h.metric("p99", math.nan), tmp_path, monkeypatch)
    assert math.isnan(outcome["metrics"]["p99"])


def test_numpy_metrics_are_written_as_plain_numbers_and_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A numpy array used to make json.dumps(default=float) raise and lose the whole outcome."""
    def main(h: Harness) -> None:
        h.metric("scalar", np.float32(1.5))
        h.metric("count", np.int64(7))
        h.metric("row", np.array([1.0, 2.0]))

    code, outcome = run_main(main, tmp_path, monkeypatch)
    assert code is None
    assert outcome["metrics"] == {"scalar": 1.5, "count": 7, "row": [1.0, 2.0]}


def test_a_metric_json_cannot_hold_is_written_as_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Device:
        def __str__(self) -> str:
            return "cuda:0"

    _, outcome = run_main(lambda h: h.metric("device", Device()), tmp_path, monkeypatch)
    assert outcome == {"outcome": "passed", "metrics": {"device": "cuda:0"}, "error": None}


def test_without_a_result_file_the_outcome_is_printed(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(RESULT_FILE_ENV, raising=False)
    harness.run(lambda h: h.metric("x", 1))
    assert json.loads(capsys.readouterr().out) == {"outcome": "passed", "metrics": {"x": 1}, "error": None}


def test_the_harness_imports_only_the_standard_library() -> None:
    """It runs inside the test's subprocess, which may not have dtf's dependencies."""
    import ast
    import sys

    tree = ast.parse(Path(harness.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported - {"__future__"} <= set(sys.stdlib_module_names)
