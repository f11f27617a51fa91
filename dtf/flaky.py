"""Flaky tests: telling a test that fails then passes on retry from one that is broken.

Pure: the caller hands in attempts from the results history (`Attempt`, one row per
attempt of a test in a run). Definitions, the ones PyTorch's CI and most flaky-test tools use:

- a test is **flaky in a run** when one of its attempts failed (failed, error or timeout) and
  a later attempt passed; all attempts stay stored;
- its **flake rate** on a hardware kind is the share of its recent runs (the last `window`
  runs that finished it) in which it was flaky; a run that failed every attempt counts as
  failed, not flaky;
- an **infrastructure error** is an ``error`` whose message says the machinery failed, not
  the test (`INFRASTRUCTURE_ERRORS`: the test process could not start, the fork server died
  under it, the worker was lost); dtf/schedule.py retries those with a backoff;
- **automatic quarantine** proposes (test, hardware) pairs whose flake rate is at least
  `threshold` over at least `min_runs` runs, so one unlucky run never quarantines a test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from .model import FAILING_STATUSES, Status

__all__ = ["Attempt", "FlakeRate", "run_outcome", "flake_rates", "to_quarantine", "infrastructure_error",
           "INFRASTRUCTURE_ERRORS", "DEFAULT_WINDOW", "DEFAULT_THRESHOLD", "DEFAULT_MIN_RUNS"]

DEFAULT_WINDOW = 20
DEFAULT_THRESHOLD = 0.2
DEFAULT_MIN_RUNS = 5
_FAILING = {s.value for s in FAILING_STATUSES}
# How the runner and worker word errors that are the machinery's fault, not the test's.
INFRASTRUCTURE_ERRORS = ("cannot start test:", "the fork server exited", "worker lost", "infrastructure:")


def infrastructure_error(status: str, error: str | None) -> bool:
    """Whether a failing attempt failed for a reason outside the test (retried with backoff)."""
    return status == Status.ERROR.value and bool(error) and str(error).lower().startswith(INFRASTRUCTURE_ERRORS)


@dataclass(frozen=True)
class Attempt:
    """One attempt of one test in one run, from the results table."""

    run_id: str
    test_id: str
    hardware: str
    attempt: int
    status: str
    finished_at: float = 0.0


@dataclass(frozen=True)
class FlakeRate:
    test_id: str
    hardware: str
    runs: int  # runs in the window that finished this test
    flaky_runs: int
    failed_runs: int  # every attempt failed

    @property
    def rate(self) -> float:
        return self.flaky_runs / self.runs if self.runs else 0.0

    def to_dict(self) -> dict[str, object]:
        return {"test_id": self.test_id, "hardware": self.hardware, "runs": self.runs,
                "flaky_runs": self.flaky_runs, "failed_runs": self.failed_runs, "flake_rate": round(self.rate, 4)}


def run_outcome(statuses: Sequence[str]) -> str | None:
    """One run's outcome of a test from its attempts' statuses in attempt order: ``flaky``
    (a failing attempt, then a pass), ``passed``, ``failed`` (it ended failing), or None when
    no attempt is final-and-meaningful (skipped or unfinished)."""
    seen_failure = False
    outcome: str | None = None
    for status in statuses:
        if status in _FAILING:
            seen_failure = True
            outcome = "failed"
        elif status == Status.PASSED.value:
            outcome = "flaky" if seen_failure else "passed"
    return outcome


def flake_rates(attempts: Iterable[Attempt], *, window: int = DEFAULT_WINDOW) -> dict[tuple[str, str], FlakeRate]:
    """Flake rate per (test id, hardware) over each pair's last ``window`` runs."""
    per_run: dict[tuple[str, str], dict[str, list[Attempt]]] = {}
    for a in attempts:
        per_run.setdefault((a.test_id, a.hardware), {}).setdefault(a.run_id, []).append(a)
    out = {}
    for key, runs in per_run.items():
        outcomes = []
        for rows in runs.values():
            rows.sort(key=lambda r: r.attempt)
            outcome = run_outcome([r.status for r in rows])
            if outcome is not None:
                outcomes.append((max(r.finished_at for r in rows), outcome))
        outcomes.sort()
        recent = [o for _, o in outcomes[-window:]] if window > 0 else []
        out[key] = FlakeRate(key[0], key[1], len(recent), recent.count("flaky"), recent.count("failed"))
    return out


def to_quarantine(rates: Iterable[FlakeRate], *, threshold: float = DEFAULT_THRESHOLD,
                  min_runs: int = DEFAULT_MIN_RUNS) -> list[FlakeRate]:
    """The pairs automatic quarantine would take, most flaky first."""
    chosen = [r for r in rates if r.runs >= min_runs and r.flaky_runs > 0 and r.rate >= threshold]
    return sorted(chosen, key=lambda r: (-r.rate, r.test_id, r.hardware))
