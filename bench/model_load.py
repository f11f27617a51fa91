"""What loading a real model costs per test, next to what running it costs.

Every dtf test runs in its own process, so a test of a real model pays the framework
import and the model build every time: a worker does not reuse a loaded model across tests
of the same model (isolation is the promise; this measures its price). The script runs one
real-model suite on the embedded default (a real Celery worker, a DuckDB file) and prints,
per test and in total, the time spent importing, building/loading the model, moving it to
the device and running the timed iterations.

    python bench/model_load.py [--model bert-base-uncased] [--batch-sizes 1,8] [--iterations 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from _common import PYTHON, emit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bert-base-uncased")
    ap.add_argument("--source", default="hf")
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--hardware", default="cpu")
    args = ap.parse_args()
    args.repeats = 1
    batches = [int(b) for b in args.batch_sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="dtf-bench-load-") as tmp:
        suite = Path(tmp) / "suite.yaml"
        suite.write_text(
            f"name: model-load\nhardware: [{args.hardware}]\nbatch_sizes: {batches}\nprecisions: [fp32]\n"
            f"iterations: {args.iterations}\nwarmup: 2\ntimeout_s: 900\n"
            f"models:\n  - {{name: {args.model}, source: {args.source}, weights: random}}\n"
        )
        proc = subprocess.run([PYTHON, "-m", "dtf.cli", "run", str(suite), "--db", str(Path(tmp) / "b.duckdb"),
                               "--workers", "1", "--format", "json"], capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            raise SystemExit(f"dtf run exited {proc.returncode}: {proc.stderr[-2000:]}")
        data = json.loads(proc.stdout[proc.stdout.index("{"):])
    tests, totals = [], {"import_s": 0.0, "load_s": 0.0, "to_device_s": 0.0, "iterations_s": 0.0, "test_wall_s": 0.0}
    for t in data["tests"]:
        m = t["metrics"]
        iterations_s = sum(m.get("latencies_ms") or []) / 1000.0
        row = {"test": t["test_id"], "status": t["status"], "import_s": m.get("import_time_s"),
               "load_s": m.get("load_time_s"), "to_device_s": m.get("to_device_s"),
               "iteration_p50_ms": m.get("latency_p50_ms"), "iterations_s": round(iterations_s, 4),
               "test_wall_s": t["duration_s"], "param_count": m.get("param_count")}
        row["load_over_one_iteration"] = round((m.get("import_time_s", 0) + m.get("load_time_s", 0))
                                               / (m["latency_p50_ms"] / 1000.0), 1) if m.get("latency_p50_ms") else None
        tests.append(row)
        for key in totals:
            totals[key] += float(row.get(key) or 0.0)
    totals = {k: round(v, 3) for k, v in totals.items()}
    totals["load_share_of_test_wall"] = round((totals["import_s"] + totals["load_s"]) / totals["test_wall_s"], 3)
    emit("model_load", args, {"model": args.model, "source": args.source, "hardware": args.hardware,
                              "model_reused_across_tests": False, "tests": tests, "totals": totals},
         notes=["each test is its own process: the import and the model build are paid once per test"])


if __name__ == "__main__":
    main()
