"""What loading a real model costs per test, next to what running it costs, and what reusing
a loaded model across tests saves.

Every dtf test runs in its own process, so by default a test of a real model pays the
framework import and the model build every time. With ``reuse_model: true`` in its params,
a CPU test is forked from a model server that imported torch and built the model once
(dtf.models.reuse; each test is still a process of its own, with a copy-on-write copy of
the weights). The script runs the same real-model suite on the embedded default (a real
Celery worker, a DuckDB file) without and with reuse, interleaved, and prints per test and
in total the time spent importing, building/loading the model, moving it to the device
and running the timed iterations, with the wall of each run.

    python bench/model_load.py [--model bert-base-uncased] [--batch-sizes 1,8] [--precisions fp32,bf16]
    python bench/model_load.py --reuse off      # only the test-loads-its-model run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import PYTHON, emit, ratio, summary

TOTAL_KEYS = ("import_s", "load_s", "to_device_s", "iterations_s", "test_wall_s")


QUICK_CONFIG = '{num_hidden_layers: 1, hidden_size: 32, num_attention_heads: 2, intermediate_size: 37}'


def run_suite(tmp: Path, args: Any, batches: list[int], precisions: list[str], reuse: bool, i: int) -> dict[str, Any]:
    suite = tmp / f"suite-{'reuse' if reuse else 'own'}-{i}.yaml"
    params = ", ".join((["reuse_model: true"] if reuse else []) + ([f"config: {QUICK_CONFIG}"] if args.quick else []))
    params = "{" + params + "}"
    suite.write_text(
        f"name: model-load\nhardware: [{args.hardware}]\nbatch_sizes: {batches}\nprecisions: {precisions}\n"
        f"iterations: {args.iterations}\nwarmup: 2\ntimeout_s: 900\n"
        f"models:\n  - {{name: {args.model}, source: {args.source}, weights: random, params: {params}}}\n"
    )
    started = time.perf_counter()
    proc = subprocess.run([PYTHON, "-m", "dtf.cli", "run", str(suite), "--db", str(tmp / f"b-{reuse}-{i}.duckdb"),
                           "--workers", "1", "--format", "json"], capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"dtf run exited {proc.returncode}: {proc.stderr[-2000:]}")
    data = json.loads(proc.stdout[proc.stdout.index("{"):])
    tests, totals = [], dict.fromkeys(TOTAL_KEYS, 0.0)
    for t in data["tests"]:
        m = t["metrics"]
        iterations_s = sum(m.get("latencies_ms") or []) / 1000.0
        row = {"test": t["test_id"], "status": t["status"], "model_reused": m.get("model_reused"),
               "import_s": m.get("import_time_s"), "load_s": m.get("load_time_s"), "server_load_s": m.get("model_load_s"),
               "to_device_s": m.get("to_device_s"), "iteration_p50_ms": m.get("latency_p50_ms"),
               "iterations_s": round(iterations_s, 4), "test_wall_s": t["duration_s"], "param_count": m.get("param_count")}
        row["load_over_one_iteration"] = round(((m.get("import_time_s") or 0) + (m.get("load_time_s") or 0))
                                               / (m["latency_p50_ms"] / 1000.0), 1) if m.get("latency_p50_ms") else None
        tests.append(row)
        for key in TOTAL_KEYS:
            totals[key] += float(row.get(key) or 0.0)
    if reuse and not all(t["model_reused"] for t in tests):
        raise SystemExit(f"reuse asked for but not every test reused the model: {tests}")
    totals = {k: round(v, 3) for k, v in totals.items()}
    totals["load_share_of_test_wall"] = round((totals["import_s"] + totals["load_s"]) / totals["test_wall_s"], 3)
    server_loads = {t["server_load_s"] for t in tests if t["server_load_s"] is not None}
    return {"run_wall_s": round(wall, 3), "tests": tests, "totals": totals,
            "server_load_s": round(max(server_loads), 3) if server_loads else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bert-base-uncased")
    ap.add_argument("--source", default="hf")
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--hardware", default="cpu")
    ap.add_argument("--reuse", choices=("both", "off", "on"), default="both")
    ap.add_argument("--repeats", type=int, default=2, help="runs per variant, interleaved (default 2)")
    ap.add_argument("--quick", action="store_true", help="a tiny model config, 1 repeat")
    args = ap.parse_args()
    if args.quick:
        args.repeats = 1
    batches = [int(b) for b in args.batch_sizes.split(",")]
    precisions = args.precisions.split(",")
    variants = {"both": (False, True), "off": (False,), "on": (True,)}[args.reuse]
    runs: dict[bool, list[dict[str, Any]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="dtf-bench-load-") as tmp:
        for i in range(args.repeats):
            for reuse in variants:
                runs[reuse].append(run_suite(Path(tmp), args, batches, precisions, reuse, i))
    out: dict[str, Any] = {"model": args.model, "source": args.source, "hardware": args.hardware,
                           "tests_per_run": len(batches) * len(precisions)}
    for reuse, label in ((False, "each_test_loads"), (True, "model_reused")):
        if reuse in runs:
            out[label] = {"run_wall_s": summary([r["run_wall_s"] for r in runs[reuse]]),
                          "test_wall_total_s": summary([r["totals"]["test_wall_s"] for r in runs[reuse]]),
                          "server_load_s": [r["server_load_s"] for r in runs[reuse]],
                          "last_run": runs[reuse][-1]}
    if len(variants) == 2:
        out["ratios"] = {
            "run_wall_reused_vs_each_loads": ratio(out["model_reused"]["run_wall_s"]["median"],
                                                   out["each_test_loads"]["run_wall_s"]["median"]),
            "test_wall_total_reused_vs_each_loads": ratio(out["model_reused"]["test_wall_total_s"]["median"],
                                                          out["each_test_loads"]["test_wall_total_s"]["median"]),
        }
    emit("model_load", args, out, notes=[
        "each_test_loads: every test its own interpreter, importing torch and building the model",
        "model_reused: tests forked from a model server that built the model once (server_load_s, paid by the "
        "first test's wait, in run_wall_s but not in any test's wall); each test still its own process",
        "ratios below 1 mean faster with reuse; run_wall includes dtf run's fixed cost (worker start, store)",
    ])


if __name__ == "__main__":
    main()
