"""Regression detection: the statistics, the rule on synthetic samples (including
properties it must keep), and a real measurement with the embedded `dtf run`: an unchanged
tree run twice, then a template slowed by 20%."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from dtf.regression import (
    compare_runs,
    compare_samples,
    count_verdicts,
    mann_whitney_greater,
    quantile,
)

from .conftest import REPO
from .test_report_rows import BASE_ID, latencies, row_for


# -- statistics ----------------------------------------------------------------------------------
def test_mann_whitney_matches_the_textbook_value_for_separated_samples() -> None:
    # U = 25 of 25, mean 12.5, variance 5*5*11/12; z = (25 - 12.5 - 0.5) / 4.787 = 2.507.
    p = mann_whitney_greater([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])
    assert p == pytest.approx(0.00609, abs=2e-5)


def test_mann_whitney_is_one_sided() -> None:
    assert mann_whitney_greater([6, 7, 8, 9, 10], [1, 2, 3, 4, 5]) > 0.99


def test_mann_whitney_of_identical_constant_samples_is_one() -> None:
    assert mann_whitney_greater([1.0] * 10, [1.0] * 10) == 1.0


def test_quantile_interpolates_like_the_harness_percentile() -> None:
    from dtf.harness import percentile

    values = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    for q in (0, 10, 25, 50, 90, 100):
        assert quantile(values, q / 100) == pytest.approx(percentile(values, q))


# -- the rule on synthetic samples -------------------------------------------------------------
def test_identical_samples_are_unchanged() -> None:
    sample = latencies(2.0, seed=1)
    assert compare_samples(sample, list(sample)).verdict == "unchanged"


def test_a_clean_twenty_percent_slowdown_is_a_regression() -> None:
    v = compare_samples(latencies(2.0, seed=1), latencies(2.4, seed=2))
    assert v.verdict == "regression"
    assert v.change == pytest.approx(0.2, abs=0.03)
    assert v.p_value is not None and v.p_value < 1e-6


def test_a_clean_twenty_percent_speedup_is_an_improvement() -> None:
    v = compare_samples(latencies(2.4, seed=1), latencies(2.0, seed=2))
    assert v.verdict == "improvement"


def test_a_five_percent_change_is_below_the_threshold() -> None:
    assert compare_samples(latencies(2.0, seed=1), latencies(2.1, seed=2)).verdict == "unchanged"


def test_a_shift_inside_the_runs_own_noise_is_noisy_not_flagged() -> None:
    rng = random.Random(3)
    noisy = [2.0 * (1 + rng.random() * 1.5) for _ in range(40)]  # median ~75% above the fast tail
    v = compare_samples(latencies(2.0, seed=1), [x * 1.25 for x in noisy])
    assert v.verdict == "noisy"
    assert "noise band" in v.note


def test_a_level_an_earlier_run_already_reached_is_noisy_not_flagged() -> None:
    base, now = latencies(2.0, seed=1), latencies(2.6, seed=2)
    assert compare_samples(base, now).verdict == "regression"
    v = compare_samples(base, now, history_fast=[2.0, 2.7, 2.0])
    assert v.verdict == "noisy" and "earlier run" in v.note


def test_one_run_of_history_is_not_enough_to_excuse_a_change() -> None:
    v = compare_samples(latencies(2.0, seed=1), latencies(2.6, seed=2), history_fast=[2.0])
    assert v.verdict == "regression"


def test_too_few_iterations_is_no_data() -> None:
    v = compare_samples(latencies(2.0, n=5), latencies(4.0, n=5))
    assert v.verdict == "no-data" and "8 timed iterations" in v.note


def test_interference_in_the_slow_tail_alone_is_not_a_regression() -> None:
    base = latencies(2.0, seed=1)
    now = sorted(latencies(2.0, seed=2))
    now[-10:] = [x * 3 for x in now[-10:]]  # a quarter of the iterations hit by a neighbour
    assert compare_samples(base, now).verdict == "unchanged"


samples = st.lists(st.floats(min_value=0.5, max_value=2.0), min_size=8, max_size=40)


@settings(max_examples=200, deadline=None)
@given(samples, samples, st.floats(min_value=0.01, max_value=1000.0))
def test_verdicts_do_not_depend_on_the_unit_of_time(base: list[float], now: list[float], scale: float) -> None:
    a = compare_samples(base, now)
    b = compare_samples([x * scale for x in base], [x * scale for x in now])
    assert a.verdict == b.verdict


@settings(max_examples=200, deadline=None)
@given(samples, samples)
def test_swapping_baseline_and_current_swaps_regression_and_improvement(base: list[float], now: list[float]) -> None:
    mirror = {"regression": "improvement", "improvement": "regression"}
    forward, backward = compare_samples(base, now).verdict, compare_samples(now, base).verdict
    if forward in mirror:
        assert backward == mirror[forward]


# -- comparing runs ---------------------------------------------------------------------------------
def test_runs_are_matched_by_model_hardware_batch_and_precision() -> None:
    current = [row_for("bert-base-uncased", center_ms=1.25, seed=5), row_for("gpt2", center_ms=5.0, seed=6),
               row_for("vit", center_ms=1.0)]
    baseline = [row_for("bert-base-uncased", run_id=BASE_ID, template_hash="feedfacefeedface"),
                row_for("gpt2", run_id=BASE_ID, center_ms=5.0, seed=7)]
    by_model = {c.model: c for c in compare_runs(current, baseline)}
    assert by_model["bert-base-uncased"].verdict == "regression"
    assert by_model["bert-base-uncased"].baseline_run_id == BASE_ID
    assert by_model["bert-base-uncased"].template_changed
    assert by_model["gpt2"].verdict == "unchanged" and not by_model["gpt2"].template_changed
    assert by_model["vit"].verdict == "new"


def test_failed_tests_are_not_compared_and_failed_baselines_are_no_baseline() -> None:
    current = [row_for("a", status="failed", error="x"), row_for("b")]
    baseline = [row_for("a", run_id=BASE_ID), row_for("b", run_id=BASE_ID, status="failed")]
    result = compare_runs(current, baseline)
    assert [(c.model, c.verdict) for c in result] == [("b", "new")]


def test_count_verdicts_names_every_verdict() -> None:
    counts = count_verdicts([])
    assert set(counts) == {"regression", "improvement", "noisy", "unchanged", "new", "no-data"}


# -- the real pipeline: the comparison is wired end to end -------------------------------------------
# Whether a 20% slowdown is caught and how many false alarms an unchanged rerun raises are
# timing measurements: bench/regression.py makes them (figures in docs/reports.md). Here we
# check, with a real `dtf run`, what does not depend on timing.


@pytest.mark.slow
def test_bench_regression_compares_every_test_and_notices_the_changed_template() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "regression.py"), "--quick"],
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    trial = doc["results"]["trials"][0]
    print("regression measurement:", json.dumps(doc["results"], indent=2))
    assert set(trial["unchanged_rerun"]) == set(trial["slowed_run"]) == {
        "mlp-probe/cpu/bs1/fp32", "bert-base-uncased/cpu/bs1/fp32", "microsoft-resnet-50/cpu/bs1/fp32"}
    assert trial["template_changed_noticed"] is True
    verdicts = {"regression", "improvement", "noisy", "unchanged", "new", "no-data"}
    assert {v[0] for v in [*trial["unchanged_rerun"].values(), *trial["slowed_run"].values()]} <= verdicts
    assert doc["results"]["comparisons"] == 5
