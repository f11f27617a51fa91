"""Regression detection measured for real: the same suite run twice on an unchanged tree
(every flagged regression or improvement is a false alarm), then with the generic
template slowed by 20% (it should be caught; the two controls should not move).

    python bench/regression.py              # 3 trials of 3 runs each
    python bench/regression.py --quick      # 1 trial, fewer iterations

Prints JSON: false alarms over all comparisons, how often the slowdown was caught, and
each trial's verdicts. Timing is the point here, so this lives in bench/, not in a test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, REPO, add_common_args, dtf_env, emit, repeats_of, workdir  # noqa: E402

SUITE = """
name: regression-probe
defaults: {{timeout_s: 120, retries: 0, iterations: {iterations}, warmup: 20}}
models:   # synthetic: the built-in workloads whose templates this probe slows (a bare name is the real model)
  - {{name: mlp-probe, source: synthetic, family: generic, iterations: {mlp_iterations}}}   # generic/default: slowed
  - {{name: bert-base-uncased, source: synthetic}}     # text_embedding: a control, never slowed
  - {{name: microsoft/resnet-50, source: synthetic}}   # vision: a control, never slowed
hardware: [cpu]
batch_sizes: [1]
precisions: [fp32]
"""
SLOWED_TEST = "mlp-probe/cpu/bs1/fp32"
FORWARD = "first, last = measure(h, B, lambda: B.sync(predict(B, model, x)))"
SLOWED_FORWARD = "first, last = measure(h, B, slowed(lambda: B.sync(predict(B, model, x))))"
SLOWDOWN = '''def slowed(fn, factor=1.2):
    """Each timed call takes 20% longer: the call, then a busy wait for a fifth of it."""
    import time

    def call():
        start = time.perf_counter()
        out = fn()
        spent = time.perf_counter() - start
        while time.perf_counter() - start < spent * factor:
            pass
        return out

    return call


def main(h):'''


def slowed_templates(root: Path) -> Path:
    """A copy of the built-in generic templates whose forward pass is 20% slower."""
    target = root / "generic"
    shutil.copytree(REPO / "templates" / "generic", target)
    model = target / "_model.py.j2"
    text = model.read_text()
    if FORWARD not in text or "def main(h):" not in text:
        raise SystemExit("the generic template changed; update bench/regression.py")
    model.write_text(text.replace(FORWARD, SLOWED_FORWARD).replace("def main(h):", SLOWDOWN, 1))
    return root


def embedded_run(work: Path, suite: Path, db: Path, *extra: str) -> str:
    # One test at a time, as a performance measurement should run.
    proc = subprocess.run(
        [PYTHON, "-m", "dtf.cli", "run", str(suite), "--db", str(db), "--workers", "1", "--format", "json", *extra],
        env=dtf_env(DTF_SPOOL_DIR=str(work / "spool")), cwd=work, capture_output=True, text=True, timeout=900,
    )
    if proc.returncode != 0:
        raise SystemExit(f"dtf run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return str(json.loads(proc.stdout[proc.stdout.index("{"):])["run"]["run_id"])


def comparisons(db: Path, run_id: str) -> list[dict[str, Any]]:
    from dtf.report import build_report
    from dtf.store import Store

    with Store.open_for_reports(db) as store:
        data = store.report_data(run_id, baseline="latest")
    return list(build_report(data["run"], data["tests"], baseline=data["baseline"])["comparison"]["entries"])


def trial(work: Path, iterations: int) -> dict[str, Any]:
    suite = work / "probe.yaml"
    suite.write_text(SUITE.format(iterations=iterations, mlp_iterations=iterations * 3))
    db = work / "perf.duckdb"
    embedded_run(work, suite, db)
    second = embedded_run(work, suite, db)
    slowed = embedded_run(work, suite, db, "--templates", str(slowed_templates(work / "slow")))
    rerun = comparisons(db, second)
    after = {e["test_id"]: e for e in comparisons(db, slowed)}
    flagged = ("regression", "improvement")
    false_alarms = [e["test_id"] for e in rerun if e["verdict"] in flagged]
    false_alarms += [t for t, e in after.items() if t != SLOWED_TEST and e["verdict"] in flagged]
    caught = after.get(SLOWED_TEST, {})
    return {
        "unchanged_rerun": {e["test_id"]: [e["verdict"], e["change"]] for e in rerun},
        "slowed_run": {t: [e["verdict"], e["change"], e.get("note")] for t, e in after.items()},
        "template_changed_noticed": bool(caught.get("template_changed")),
        "slowdown_verdict": caught.get("verdict"),
        "false_alarms": false_alarms,
        "comparisons": len(rerun) + len(after) - 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    args = parser.parse_args()
    trials = repeats_of(args)
    iterations = 60 if args.quick else 300
    results = []
    for i in range(trials):
        with workdir(f"dtf-bench-regression-{i}-") as work:
            results.append(trial(work, iterations))
    emit("regression", args, {
        "trials": results,
        "false_alarms": sum(len(r["false_alarms"]) for r in results),
        "comparisons": sum(r["comparisons"] for r in results),
        "slowdowns_caught": sum(r["slowdown_verdict"] == "regression" for r in results),
        "slowdowns": len(results),
        "iterations": iterations,
    }, notes=["a false alarm is a regression or improvement flagged on an unchanged template",
              "the slowed template busy-waits 20% longer on each timed call"])


if __name__ == "__main__":
    main()
