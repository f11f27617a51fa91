"""Per-test overhead: N trivial tests (one tiny assertion each) run four ways, wall time per test.

  pytest_xdist   pytest -n 2 over N generated test files (tests share 2 interpreters)
  dtf_embedded   dtf run with 2 workers (in-process broker, coordinator and worker)
  dtf_redis      a redis-server, dtf coordinator and 2 dtf worker processes (-c 1 each),
                 timed from `dtf submit --wait` to its exit; the services are started
                 (and warmed with one small run) before the clock starts, as in a deployment
  dtf_redis_spawn  the same with the fork server switched off (DTF_FORK_SERVER=0): a
                 fresh interpreter per test, the runner as it was before it (the baseline
                 for the fork server, measured in the same run)
  spawn_floor    `python -c pass` N times over 2 processes: what one fresh interpreter
                 per test costs at the least

Every dtf test runs in its own process (forked from the warm fork server when it can).

    python bench/overhead.py            # N=500, 3 repeats
    python bench/overhead.py --quick    # N=20, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    PYTHON, TEMPLATES, add_common_args, dtf_env, emit, ratio, redis_server, repeats_of, summary,
    trivial_suite, workdir,
)


def run_timeout_s(n: int) -> int:
    """Generous (a fresh interpreter per test costs ~0.1 s here): a hung run is reported
    as that variant's error instead of stalling the benchmark."""
    return 60 + n // 2

VARIANTS = ("pytest_xdist", "dtf_embedded", "dtf_redis", "dtf_redis_spawn", "spawn_floor")
# Not run by default (--only): the embedded mode without the fork server, slow on 2 cores.
EXTRA_VARIANTS = ("dtf_embedded_spawn",)
NO_FORK_SERVER = {"DTF_FORK_SERVER": "0"}  # the runner as it was: a fresh interpreter per test


def pytest_files(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    for i in range(n):
        (folder / f"test_{i:05d}.py").write_text(
            f"def test_{i:05d}():\n    assert {i} + 1 > 0\n", encoding="utf-8"
        )
    return folder


def time_pytest(folder: Path, n: int) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [PYTHON, "-m", "pytest", "-n", "2", "-q", "-p", "no:cacheprovider", "-c", str(folder / "pytest.ini"),
         "--rootdir", str(folder), str(folder)],
        cwd=folder, capture_output=True, text=True, timeout=run_timeout_s(n),
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or f"{n} passed" not in proc.stdout:
        raise RuntimeError(f"pytest failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return wall


def time_spawn_floor(n: int) -> float:
    def one(_: int) -> None:
        subprocess.run([PYTHON, "-c", "pass"], check=True)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, range(n)))
    return time.perf_counter() - t0


def _check_all_passed(stdout: str, n: int) -> None:
    data = json.loads(stdout[stdout.index("{"):])
    statuses = [t["status"] for t in data["tests"]]
    if len(statuses) != n or set(statuses) != {"passed"}:
        raise RuntimeError(f"expected {n} passed tests, got {len(statuses)}: {sorted(set(statuses))}")


def time_embedded(tmp: Path, suite: Path, n: int, env: dict[str, str]) -> float:
    db = tmp / f"embedded-{time.monotonic_ns()}.duckdb"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [PYTHON, "-m", "dtf.cli", "run", str(suite), "--db", str(db), "--workers", "2", "--format", "json",
         "--templates", str(TEMPLATES), "--timeout", str(run_timeout_s(n))],
        env=env, cwd=tmp, capture_output=True, text=True, timeout=run_timeout_s(n) + 60,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"dtf run failed ({proc.returncode}): {proc.stderr[-3000:]}")
    _check_all_passed(proc.stdout, n)
    return wall


class RedisCluster:
    """redis-server + dtf coordinator + 2 dtf workers, started once for all repeats."""

    def __init__(self, tmp: Path, url: str, env: dict[str, str]) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp, self.env = tmp, dict(env, DTF_BROKER_URL=url)
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> "RedisCluster":
        self._spawn("coordinator", ["coordinator", "--db", str(self.tmp / "central.duckdb")])
        for i in (1, 2):
            self._spawn(f"worker{i}", ["worker", "--name", f"bench{i}@local", "--queues", "dtf.cpu",
                                       "--concurrency", "1", "--loglevel", "WARNING"])
        warm = trivial_suite(self.tmp / "warm.yaml", 4, name="warm")
        self.submit(warm, 4)  # both workers consuming, imports done, fork servers up
        return self

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.tmp / f"{name}.log", "wb")
        self.procs.append(subprocess.Popen([PYTHON, "-m", "dtf.cli", *args], env=self.env, cwd=self.tmp,
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def submit(self, suite: Path, n: int) -> float:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [PYTHON, "-m", "dtf.cli", "submit", str(suite), "--wait", "--timeout", str(run_timeout_s(n)), "--format",
             "json", "--templates", str(TEMPLATES)],
            env=self.env, cwd=self.tmp, capture_output=True, text=True, timeout=run_timeout_s(n) + 60,
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            logs = "".join((self.tmp / f"{p}.log").read_text(errors="replace")[-1500:] for p in ("coordinator", "worker1"))
            raise RuntimeError(f"dtf submit failed ({proc.returncode}): {proc.stderr[-2000:]}\n{logs}")
        _check_all_passed(proc.stdout, n)
        return wall

    def stop(self) -> None:
        import os
        import signal

        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("-n", "--tests", type=int, default=None, help="tests per run (default 500; 20 with --quick)")
    parser.add_argument("--only", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS + EXTRA_VARIANTS)}")
    args = parser.parse_args()
    n = args.tests or (20 if args.quick else 500)
    reps = repeats_of(args)
    only = [v for v in args.only.split(",") if v]
    results: dict[str, dict[str, object]] = {}
    with workdir("dtf-bench-overhead-") as tmp:
        env = dtf_env(DTF_SPOOL_DIR=str(tmp / "spool"))
        suite = trivial_suite(tmp / "suite.yaml", n)
        once: dict[str, Callable[[], float]] = {}
        if "pytest_xdist" in only:
            folder = pytest_files(tmp / "pytest_tests", n)
            once["pytest_xdist"] = lambda: time_pytest(folder, n)
        for name, extra in (("dtf_embedded", {}), ("dtf_embedded_spawn", NO_FORK_SERVER)):
            if name in only:
                once[name] = lambda extra=extra: time_embedded(tmp, suite, n, dict(env, **extra))  # type: ignore[misc]
        if "spawn_floor" in only:
            once["spawn_floor"] = lambda: time_spawn_floor(n)
        runs: dict[str, list[float]] = {name: [] for name in once}
        failures: dict[str, str] = {}
        with ExitStack() as stack:
            for name, extra in (("dtf_redis", {}), ("dtf_redis_spawn", NO_FORK_SERVER)):
                if name not in only:
                    continue
                runs[name] = []
                try:
                    url = stack.enter_context(redis_server(tmp / f"redis-{name}"))
                    cluster = RedisCluster(tmp / name, url, dict(env, **extra))
                    stack.callback(cluster.stop)
                    cluster.start()
                    once[name] = lambda cluster=cluster: cluster.submit(suite, n)  # type: ignore[misc]
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    failures[name] = _first_line(exc)
            for _ in range(reps):  # interleaved, so drift in the machine's load hits every variant alike
                for name, fn in once.items():
                    if name in failures:
                        continue
                    try:
                        runs[name].append(fn())
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:  # reported, not hidden
                        failures[name] = _first_line(exc)
        walls = {name: summary(values) for name, values in runs.items() if values and name not in failures}
    for name, error in failures.items():
        results[name] = {"error": error}
    for name, wall in walls.items():
        med = float(wall["median"])  # type: ignore[arg-type]
        results[name] = {"wall_s": wall, "per_test_ms": round(1000.0 * med / n, 3)}
    per = {k: float(v["per_test_ms"]) for k, v in results.items() if "per_test_ms" in v}  # type: ignore[arg-type]
    ratios = {}
    base = per.get("pytest_xdist")
    for name in ("dtf_embedded", "dtf_embedded_spawn", "dtf_redis", "dtf_redis_spawn", "spawn_floor"):
        if base and name in per:
            ratios[f"{name}_vs_pytest_xdist"] = ratio(per[name], base)
    if "spawn_floor" in per:
        for name in ("dtf_embedded", "dtf_redis"):
            if name in per:
                ratios[f"{name}_vs_spawn_floor"] = ratio(per[name], per["spawn_floor"])
    for name in ("dtf_embedded", "dtf_redis"):
        if name in per and f"{name}_spawn" in per:
            ratios[f"{name}_speedup_from_fork_server"] = ratio(per[f"{name}_spawn"], per[name])
    emit("overhead", args, {"tests": n, "variants": results, "ratios": ratios}, notes=[
        "wall time per test = median wall of the whole command / N; lower is better",
        "pytest_xdist and dtf_embedded include their interpreter start-up, collection and rendering",
        "dtf_redis is timed from `dtf submit --wait` to its exit, with the coordinator and 2 workers already up",
        "every dtf test runs in a process of its own; pytest-xdist runs every test in one of 2 shared interpreters",
        "*_spawn variants switch the fork server off (DTF_FORK_SERVER=0): the before figure for the fork server",
        "a variant that fails or hangs past its timeout is reported with an error instead of figures",
    ])


if __name__ == "__main__":
    main()
