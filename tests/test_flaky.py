"""Flaky detection and automatic quarantine from attempt history (dtf/flaky.py)."""

from __future__ import annotations

from dtf.flaky import Attempt, flake_rates, run_outcome, to_quarantine


def test_run_outcome_tells_flaky_from_failed_and_passed() -> None:
    assert run_outcome(["failed", "passed"]) == "flaky"
    assert run_outcome(["timeout", "error", "passed"]) == "flaky"
    assert run_outcome(["passed"]) == "passed"
    assert run_outcome(["failed", "failed"]) == "failed"
    assert run_outcome(["passed", "failed"]) == "failed"  # a later failing attempt is what the run ended with
    assert run_outcome(["skipped"]) is None
    assert run_outcome([]) is None


def _history(pattern: list[list[str]], test: str = "t", hw: str = "cpu") -> list[Attempt]:
    rows = []
    for run, statuses in enumerate(pattern):
        for attempt, status in enumerate(statuses):
            rows.append(Attempt(f"r{run}", test, hw, attempt, status, finished_at=float(run * 10 + attempt)))
    return rows


def test_flake_rate_counts_runs_not_attempts_over_the_window() -> None:
    rows = _history([["passed"], ["failed", "passed"], ["failed", "failed", "passed"], ["failed", "failed"], ["passed"]])
    rate = flake_rates(rows)[("t", "cpu")]
    assert (rate.runs, rate.flaky_runs, rate.failed_runs) == (5, 2, 1)
    assert rate.rate == 0.4
    # the window keeps the most recent runs: the last two are one failed and one passed
    recent = flake_rates(rows, window=2)[("t", "cpu")]
    assert (recent.runs, recent.flaky_runs, recent.failed_runs) == (2, 0, 1)


def test_rates_are_per_hardware() -> None:
    rows = _history([["failed", "passed"]] * 5, hw="cuda") + _history([["passed"]] * 5, hw="cpu")
    rates = flake_rates(rows)
    assert rates[("t", "cuda")].rate == 1.0
    assert rates[("t", "cpu")].rate == 0.0


def test_quarantine_needs_enough_runs_and_a_rate_over_the_threshold() -> None:
    often = _history([["failed", "passed"], ["passed"]] * 3, test="often")  # 3 of 6 flaky
    rare = _history([["failed", "passed"]] + [["passed"]] * 9, test="rare")  # 1 of 10
    young = _history([["failed", "passed"]] * 2, test="young")  # 2 of 2, too few runs
    broken = _history([["failed", "failed"]] * 6, test="broken")  # broken, not flaky
    chosen = to_quarantine(flake_rates(often + rare + young + broken).values())
    assert [(r.test_id, r.rate) for r in chosen] == [("often", 0.5)]
    assert [r.test_id for r in to_quarantine(flake_rates(often + rare).values(), threshold=0.1)] == ["often", "rare"]
