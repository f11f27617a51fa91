"""Latency: how soon a result is stored after its test ends, and where a sleep-bound suite's
time goes beyond the ideal, through a real redis-server, `dtf coordinator` and 2 `dtf
worker -c 1` processes (bench/overhead.py's cluster, warmed before the clock starts).

Two suites, each submitted with `dtf submit --wait`:

  sleep    N tests that each sleep 50 ms: wall against the ideal N x 50 ms / 2 workers
  trivial  M tests of one tiny assertion

For every run, read from the results database once the services have stopped: how long
after its test ended each result was stored (``ingested_at - finished_at``: the first
result's, the median and the largest), and per worker the median time inside a test beyond
its own work (``finished_at - started_at``, the fork server's start and end of the test
process included) and between two tests (the next ``started_at`` minus the last
``finished_at``: the result's publish, the ack, the next task's delivery). CPU seconds of
the coordinator and of each worker's main process come from /proc.

    python bench/latency.py             # 200 sleeps, 300 trivial tests, 3 repeats
    python bench/latency.py --quick     # 10 and 10, 1 repeat
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_common_args, dtf_env, emit, ratio, redis_server, repeats_of, summary, trivial_suite, workdir  # noqa: E402
from overhead import RedisCluster  # noqa: E402

SLEEP_S = 0.05


def suite(path: Path, n: int, template: str) -> Path:
    trivial_suite(path, n, name=path.stem)
    path.write_text(path.read_text(encoding="utf-8").replace("bench/trivial", template), encoding="utf-8")
    return path


def cpu_s(pid: int) -> float:
    """utime + stime of a process and its reaped children, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def run_figures(db: Path) -> dict[str, dict[str, float]]:
    """Per run id: store latency, time inside/between tests and the span, from the stored results."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT run_id, worker_id, started_at, finished_at, ingested_at FROM results "
                       "ORDER BY run_id, worker_id, started_at").fetchall()
    con.close()
    runs: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        runs.setdefault(row[0], []).append(row[1:])
    out = {}
    for run_id, tests in runs.items():
        by_end = sorted(tests, key=lambda t: t[2])
        lat = [1000 * (t[3] - t[2]) for t in by_end]
        inside = [1000 * (t[2] - t[1]) for t in tests]
        gaps, last = [], {}
        for worker, started, finished, _ in tests:
            if worker in last:
                gaps.append(1000 * (started - last[worker]))
            last[worker] = finished
        out[run_id] = {
            "first_result_stored_after_ms": round(lat[0], 1), "stored_after_median_ms": round(statistics.median(lat), 1),
            "stored_after_max_ms": round(max(lat), 1), "inside_test_median_ms": round(statistics.median(inside), 1),
            "between_tests_median_ms": round(statistics.median(gaps), 1) if gaps else 0.0,
            "span_s": max(t[2] for t in tests) - min(t[1] for t in tests),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--sleeps", type=int, default=None, help="50 ms tests (default 200; 10 with --quick)")
    parser.add_argument("--trivial", type=int, default=None, help="trivial tests (default 300; 10 with --quick)")
    parser.add_argument("--worker-profile", default="test", help="the workers' --profile: test (prefetch x1, default) or light (x4)")
    args = parser.parse_args()
    n_sleep = args.sleeps or (10 if args.quick else 200)
    n_trivial = args.trivial or (10 if args.quick else 300)
    reps = repeats_of(args)
    walls: dict[str, list[float]] = {"sleep": [], "trivial": []}
    cpu: dict[str, list[dict[str, float]]] = {"sleep": [], "trivial": []}
    load_at_start = round(os.getloadavg()[0], 2)
    with workdir("dtf-bench-latency-") as tmp, redis_server(tmp / "redis") as url:
        cluster = RedisCluster(tmp / "cluster", url, dtf_env(DTF_SPOOL_DIR=str(tmp / "spool"), DTF_PROFILE=args.worker_profile)).start()
        pids = {"coordinator": cluster.procs[0].pid, "worker1": cluster.procs[1].pid, "worker2": cluster.procs[2].pid}
        try:
            for _ in range(reps):  # interleaved, so drift in the machine's load hits each alike
                for kind, n, template in (("sleep", n_sleep, "bench/sleep50"), ("trivial", n_trivial, "bench/trivial")):
                    before = {k: cpu_s(p) for k, p in pids.items()}
                    walls[kind].append(cluster.submit(suite(tmp / f"{kind}.yaml", n, template), n))
                    cpu[kind].append({k: round(cpu_s(p) - before[k], 3) for k, p in pids.items()})
        finally:
            cluster.stop()
        figures = run_figures(tmp / "cluster" / "central.duckdb")
    results: dict[str, Any] = {"load_avg_1m_at_start": load_at_start, "sleep_s": SLEEP_S}
    for kind, n in (("sleep", n_sleep), ("trivial", n_trivial)):
        per_run = [f for r, f in figures.items() if _kind_of(r) == kind]
        wall = summary(walls[kind])
        entry: dict[str, Any] = {"tests": n, "wall_s": wall, "cpu_s_per_process": cpu[kind]}
        for key in ("first_result_stored_after_ms", "stored_after_median_ms", "stored_after_max_ms", "inside_test_median_ms",
                    "between_tests_median_ms", "span_s"):
            entry[key] = summary([f[key] for f in per_run]) if per_run else None
        if kind == "sleep":
            ideal = n * SLEEP_S / 2
            entry["ideal_s"] = ideal
            entry["wall_vs_ideal"] = ratio(wall["median"], ideal)
            entry["span_vs_ideal"] = ratio(entry["span_s"]["median"], ideal) if entry["span_s"] else None
        results[kind] = entry
    emit("latency", args, results, notes=[
        "wall_s: dtf submit --wait of the suite, to its exit (includes the submit's fixed cost, about 0.5 s here)",
        "sleep: wall_vs_ideal compares with N x 50 ms / 2 workers; span_vs_ideal uses span_s, from the first test's "
        "start to the last one's end (the submit's fixed cost left out)",
        "stored_after: ingested_at - finished_at of each result (ingested_at is stamped as its batch is written)",
        "inside_test: finished_at - started_at (the test's own work is ~0 ms for trivial, 50 ms for sleep)",
        "between_tests: per worker, the next test's started_at minus the last one's finished_at",
        "cpu_s_per_process: the coordinator's and each worker's main process (the fork server and tests not included)",
    ])


def _kind_of(run_id: str) -> str:
    """sleep or trivial, from the suite name dtf puts at the front of a run id."""
    return run_id.split("-", 1)[0]


if __name__ == "__main__":
    main()
