"""Makespan of FIFO, priority-only and longest-predicted-first (LPT) dispatch, through the
real pipeline, against the lower bound max(total / workers, longest chain).

A suite of N tests (default 500) whose real durations are heavy-tailed: most sleep a few
tens of milliseconds (a Pareto tail, seeded), a few sleep seconds, and the long ones come
last in suite order, as they would in a suite nobody ordered by cost. Each ordering runs
the same suite with the embedded ``dtf run`` (real coordinator, real Celery worker with 2
slots, a real process per test) on one DuckDB file, in the order fifo, priority, lpt: the
first two runs are also the history the LPT run's predictions come from (dtf/predict.py),
exactly as a second run of a suite in CI would see it.

Per run: makespan = last finish - first start over the run's results; the lower bound from
that run's own measured test durations (process start included): max(sum / slots,
longest chain; with no dependencies the chain is the longest test). Goal: LPT <= 1.1 x the
bound. Prints one JSON document; ``--save`` also writes it under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from _common import PYTHON, REPO, TEMPLATES, add_common_args, dtf_env, emit, ratio, workdir

ORDERS = ("fifo", "priority", "lpt")


def durations(n: int, long_tests: int, seed: int) -> list[float]:
    """Heavy-tailed sleeps: Pareto(alpha 1.5, from 20 ms, capped at 1 s) for the many, 3-6 s
    for the few long ones, which are placed last."""
    rng = random.Random(seed)
    short = [round(min(1.0, 0.02 * rng.paretovariate(1.5)), 4) for _ in range(n - long_tests)]
    long = [round(rng.uniform(3.0, 6.0), 3) for _ in range(long_tests)]
    return short + long


def write_suite(path: Path, sleeps: list[float]) -> Path:
    lines = ["name: schedule-bench", "source: synthetic", "chain_batch_sizes: false", "hardware: [cpu]",
             "batch_sizes: [1]", "precisions: [fp32]", "defaults: {timeout_s: 60, retries: 0}", "models:"]
    for i, s in enumerate(sleeps):
        lines.append(f"  - {{name: t{i:05d}, family: bench, template: bench/sleep, params: {{sleep_s: {s}}}}}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_once(tmp: Path, suite: Path, db: Path, order: str, slots: int) -> dict[str, Any]:
    proc = subprocess.run(
        [PYTHON, "-m", "dtf.cli", "run", str(suite), "--db", str(db), "--workers", str(slots), "--format", "json",
         "--templates", str(TEMPLATES), "--order", order],
        cwd=tmp, env=dtf_env(DTF_SPOOL_DIR=str(tmp / f"spool-{order}"), DTF_STATE_DIR=str(tmp / "state")),
        capture_output=True, text=True, timeout=3600,
    )
    if proc.returncode != 0 or "{" not in proc.stdout:
        raise SystemExit(f"dtf run --order {order} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    data = json.loads(proc.stdout[proc.stdout.index("{"):])
    tests = data["tests"]
    bad = [t["test_id"] for t in tests if t["status"] != "passed"]
    if bad:
        raise SystemExit(f"--order {order}: {len(bad)} tests did not pass: {bad[:5]}")
    start = min(float(t["started_at"]) for t in tests)
    end = max(float(t["finished_at"]) for t in tests)
    measured = [float(t["duration_s"]) for t in tests]
    bound = max(sum(measured) / slots, max(measured))
    makespan = end - start
    return {"run_id": data["run"]["run_id"], "tests": len(tests), "makespan_s": round(makespan, 3),
            "lower_bound_s": round(bound, 3), "vs_bound": ratio(makespan, bound),
            "sum_of_durations_s": round(sum(measured), 3), "longest_s": round(max(measured), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, repeats=1)
    parser.add_argument("--tests", type=int, default=500)
    parser.add_argument("--long", type=int, default=10, help="tests of 3-6 s, placed last in suite order")
    parser.add_argument("--slots", type=int, default=2, help="worker slots (dtf run --workers)")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--save", type=Path, default=None, help="also write the JSON here (e.g. bench/results/schedule.json)")
    args = parser.parse_args()
    if args.quick:
        args.tests, args.long = 24, 2
    sleeps = durations(args.tests, args.long, args.seed)
    with workdir("dtf-bench-schedule-") as tmp:
        suite = write_suite(tmp / "suite.yaml", sleeps)
        db = tmp / "schedule.duckdb"
        runs = {order: run_once(tmp, suite, db, order, args.slots) for order in ORDERS}
    results = {
        "tests": args.tests, "long_tests": args.long, "slots": args.slots, "seed": args.seed,
        "sleep_total_s": round(sum(sleeps), 3), "sleep_longest_s": max(sleeps),
        "runs": runs,
        "lpt_vs_bound": runs["lpt"]["vs_bound"],
        "goal_lpt_within_1_1x": bool(runs["lpt"]["vs_bound"] is not None and runs["lpt"]["vs_bound"] <= 1.1),
        "lpt_vs_fifo": ratio(runs["lpt"]["makespan_s"], runs["fifo"]["makespan_s"]),
    }
    notes = [
        "each order is one embedded `dtf run --order ORDER` of the same suite on one DuckDB file, fifo then priority "
        "then lpt; the lpt run's predictions come from the two runs before it",
        "lower bound per run: max(sum of its measured test durations / slots, its longest test); no dependencies, "
        "so the longest chain is the longest test",
        "every test of this suite has the same priority, so priority-only dispatch is suite order, like fifo",
    ]
    if args.save is not None:
        import contextlib
        import io

        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            emit("schedule", args, results, notes)
        args.save.write_text(buffer.getvalue(), encoding="utf-8")
        sys.stdout.write(buffer.getvalue())
    else:
        emit("schedule", args, results, notes)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
