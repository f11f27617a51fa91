"""Scale: runs of 1,000, 10,000 and 100,000 trivial tests through a real `dtf coordinator`
process on a private redis-server: the coordinator's peak RSS, the submit time, and the
coordinator's per-test overhead (dispatch + ingest) as the run grows, with the exponent
of each (time ~ N^k; k = 1 is linear).

So that the coordinator is what is measured, the two workers are echo workers: they take
each dtf.run_test task off dtf.cpu and publish a passed result at once, without starting
a process (bench/overhead.py measures real workers). Test sources are generated without
Jinja (bench/render.py measures rendering).

    python bench/scale.py                          # 1k, 10k, 100k; 3 repeats (1 at 100k)
    python bench/scale.py --sizes 1000,5000        # any sizes
    python bench/scale.py --quick                  # 200, 400; 1 repeat
    python bench/scale.py --workers real --sizes 1000,10000 --pytest
                                                   # real `dtf worker`s (-c 1 each): every test in a
                                                   # process of its own; beside pytest -n 2 on the same tests

With ``--workers real`` the run time is the whole system's: submit, dispatch, two real
workers forking every test from their fork servers, results, ingest. ``--pytest`` times
pytest-xdist ``-n 2`` over the same number of one-test files in the same run, and both get
a fixed cost and a marginal cost per test from the two smallest and largest sizes
(time = fixed + N x marginal).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, add_common_args, dtf_env, emit, ratio, redis_server, summary, workdir  # noqa: E402

# The echo worker below answers with plain kombu JSON: this bench measures the coordinator's
# memory, not signing, so every process of it runs unsigned (this one and the children).
os.environ["DTF_INSECURE_NO_SIGNING"] = "1"


import psutil  # noqa: E402

from dtf.app import make_app  # noqa: E402
from dtf.client import CoordinatorClient  # noqa: E402
from dtf.model import RenderedTest, TestSpec  # noqa: E402
from dtf.settings import Settings  # noqa: E402

SOURCE = 'from dtf import harness\n\n\ndef main(h):\n    h.check({n} + 1 > 0, "arithmetic")\n\n\nharness.run(main)\n'


def make_tests(n: int) -> list[RenderedTest]:
    return [
        RenderedTest(TestSpec(test_id=f"m{i // 100:05d}/cpu/bs{i % 100 + 1}/fp32", model=f"m{i // 100:05d}",
                              family="bench", hardware="cpu", batch_size=i % 100 + 1, precision="fp32",
                              template="bench/trivial", timeout_s=60, iterations=1, warmup=0),
                     SOURCE.format(n=i), "0" * 16)
        for i in range(n)
    ]


def echo_worker(url: str) -> None:
    """Consume dtf.run_test tasks and answer each with a passed result straight away."""
    from kombu import Connection, Consumer, Producer

    from dtf.bus import RESULTS_QUEUE, hardware_queues, result_body
    from dtf.bus import results_queue
    from dtf.model import TestResult

    with Connection(url) as conn:
        producer = Producer(conn.channel(), serializer="json")

        def on_task(body: Any, message: Any) -> None:
            payload = body[0][0] if isinstance(body, list) else body["args"][0]
            now = time.time()
            result = TestResult(run_id=payload["run_id"], test_id=payload["test"]["spec"]["test_id"],
                                attempt=int(payload["attempt"]), status="passed", duration_s=0.001,
                                worker_id=f"echo{os.getpid()}", hostname="bench", hardware="cpu",
                                started_at=now, finished_at=now)
            producer.publish(result_body(result), exchange="", routing_key=RESULTS_QUEUE,
                             declare=[results_queue()], serializer="json")
            message.ack()

        queues = [q for q in hardware_queues() if q.name == "dtf.cpu"]
        with Consumer(conn.channel(), queues, callbacks=[on_task], accept=["json"], prefetch_count=100):
            while True:
                try:
                    conn.drain_events(timeout=1)
                except TimeoutError:
                    pass


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            self.stop.wait(0.05)


def one_size(tmp: Path, url: str, n: int, reps: int, workers: str = "echo") -> dict[str, Any]:
    env = dtf_env(DTF_BROKER_URL=url, DTF_LOG_LEVEL="WARNING", DTF_INSECURE_NO_SIGNING="1")
    procs: list[subprocess.Popen[bytes]] = []
    log = open(tmp / f"coordinator-{n}.log", "wb")
    coordinator = subprocess.Popen([PYTHON, "-m", "dtf.cli", "coordinator", "--db", str(tmp / f"scale-{n}.duckdb")],
                                   env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    procs.append(coordinator)
    for w in range(2):
        if workers == "real":
            wlog = open(tmp / f"worker{w}-{n}.log", "wb")
            procs.append(subprocess.Popen(
                [PYTHON, "-m", "dtf.cli", "worker", "--name", f"scale{w}@bench", "--queues", "dtf.cpu", "--concurrency", "1",
                 "--loglevel", "WARNING"], env=dict(env, DTF_STATE_DIR=str(tmp / f"state{w}")), stdout=wlog,
                stderr=subprocess.STDOUT, start_new_session=True))
        else:
            procs.append(subprocess.Popen([PYTHON, __file__, "--echo-worker", url], env=env, start_new_session=True))
    sampler = RssSampler(coordinator.pid)
    sampler.start()
    app = make_app(Settings.from_env({}, broker_url=url))
    client = CoordinatorClient(app, timeout_s=600)
    submit_s, run_s = [], []
    try:
        client.call("ping", timeout_s=60)  # the coordinator is up and consuming
        if workers == "real":
            warm = {"run_id": f"warm-{n}-{time.monotonic_ns()}", "suite_name": "warm"}
            wait_finished(client, client.submit(warm, make_tests(4)), 4)  # both workers consuming, fork servers up
        baseline_rss = psutil.Process(coordinator.pid).memory_info().rss
        for rep in range(reps):
            tests = make_tests(n)
            run = {"run_id": f"scale-{n}-{rep}-{time.monotonic_ns()}", "suite_name": "scale"}
            t0 = time.perf_counter()
            run_id = client.submit(run, tests)
            t1 = time.perf_counter()
            wait_finished(client, run_id, n)
            t2 = time.perf_counter()
            submit_s.append(t1 - t0)
            run_s.append(t2 - t0)
    finally:
        sampler.stop.set()
        sampler.join()
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    run_summary = summary(run_s)
    return {
        "tests": n,
        "submit_s": summary(submit_s),
        "run_s": run_summary,
        "per_test_ms": round(1000 * run_summary["median"] / n, 4),
        "coordinator_peak_rss_mb": round(sampler.peak / 2**20, 1),
        "coordinator_idle_rss_mb": round(baseline_rss / 2**20, 1),
    }


def wait_finished(client: CoordinatorClient, run_id: str, n: int) -> None:
    while True:
        status = client.call("status", run_id=run_id)
        if status["finished"]:
            break
        time.sleep(0.05)
    passed = sum(per.get("passed", 0) for per in status["counts"].values())
    if passed != n:
        raise RuntimeError(f"run of {n}: {passed} passed, counts {status['counts']}")


def pytest_size(tmp: Path, n: int, reps: int) -> dict[str, Any]:
    """pytest-xdist -n 2 over n one-test files (bench/overhead.py's), timed like a run."""
    from overhead import pytest_files, time_pytest

    folder = pytest_files(tmp / f"pytest-{n}", n)
    walls = [time_pytest(folder, n) for _ in range(reps)]
    return {"tests": n, "run_s": summary(walls), "tests_per_s": round(n / summary(walls)["median"], 1)}


def fixed_and_marginal(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """time = fixed + N x marginal through the smallest and the largest size."""
    if len(rows) < 2:
        return None
    a, b = rows[0], rows[-1]
    ta, tb = a["run_s"]["median"], b["run_s"]["median"]
    marginal = (tb - ta) / (b["tests"] - a["tests"])
    return {"marginal_ms_per_test": round(1000 * marginal, 3), "fixed_s": round(ta - a["tests"] * marginal, 3)}


def exponent(sizes: list[int], seconds: list[float]) -> float | None:
    """Least-squares slope of log(time) on log(N)."""
    if len(sizes) < 2:
        return None
    xs, ys = [math.log(s) for s in sizes], [math.log(max(t, 1e-9)) for t in seconds]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den, 3) if den else None


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--echo-worker":
        echo_worker(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--sizes", default=None, help="comma list of run sizes (default 1000,10000,100000)")
    parser.add_argument("--big-repeats", type=int, default=1, help="repeats for sizes of 100,000 and more (default 1)")
    parser.add_argument("--workers", choices=("echo", "real"), default="echo",
                        help="echo: answer every task at once (the coordinator's cost); real: 2 dtf workers, -c 1 each")
    parser.add_argument("--pytest", action="store_true", help="also time pytest -n 2 on the same number of tests")
    args = parser.parse_args()
    sizes = [int(s) for s in (args.sizes or ("200,400" if args.quick else "1000,10000,100000")).split(",")]
    reps = args.repeats or (1 if args.quick else 3)
    rows, xdist = [], []
    with workdir("dtf-bench-scale-") as tmp, redis_server(tmp / "redis") as url:
        for n in sizes:
            size_reps = args.big_repeats if n >= 100_000 else reps
            rows.append(one_size(tmp, url, n, size_reps, args.workers))
            if args.pytest:
                xdist.append(pytest_size(tmp, n, size_reps))
                rows[-1]["tests_per_s"] = round(n / rows[-1]["run_s"]["median"], 1)
                rows[-1]["pytest_xdist"] = xdist[-1]
                rows[-1]["run_time_vs_pytest_xdist"] = ratio(rows[-1]["run_s"]["median"], xdist[-1]["run_s"]["median"])
    costs: dict[str, Any] = {"dtf": fixed_and_marginal(rows)}
    if xdist:
        costs["pytest_xdist"] = fixed_and_marginal(xdist)
        if costs["dtf"] and costs["pytest_xdist"]:
            costs["marginal_dtf_vs_pytest_xdist"] = ratio(costs["dtf"]["marginal_ms_per_test"],
                                                          costs["pytest_xdist"]["marginal_ms_per_test"])
    emit("scale", args, {
        "workers": args.workers,
        "sizes": rows,
        "fixed_and_marginal": costs,
        "exponents": {
            "submit_time": exponent(sizes, [r["submit_s"]["median"] for r in rows]),
            "run_time": exponent(sizes, [r["run_s"]["median"] for r in rows]),
        },
        "coordinator_peak_rss_mb_at_largest": rows[-1]["coordinator_peak_rss_mb"],
    }, notes=[
        "run_s = from client.submit() to the run's status finished; submit_s = until the coordinator stored the run",
        "workers=echo: echo workers answer every task at once, so run_s is the coordinator's own cost: store, dispatch, "
        "ingest; workers=real: two `dtf worker -c 1` processes, every test forked from their fork servers",
        "fixed_and_marginal: time = fixed + N x marginal through the smallest and largest sizes; pytest_xdist is "
        "pytest -n 2 over as many one-test files, measured after each dtf size in the same run",
        "exponent k of time ~ N^k by least squares over the sizes; 1.0 is linear",
        "sizes of 100,000 and more run --big-repeats times (default 1) to keep the default affordable on 2 cores",
    ])


if __name__ == "__main__":
    main()
