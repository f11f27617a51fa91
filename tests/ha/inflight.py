"""The in-flight fault scenarios shared by tests/ha/test_inflight_failover.py and
bench/failover.py: kill -9 of the Redis master while results are being published, and
kill -9 of a worker mid-test. Each runs the same suite of counted tests (each execution
appends a line to a file of its own) once without a fault and once with it, and reports
the extra wall time, the executions per test, and what was lost or stored twice."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any, Callable

from .cluster import Deployment
from .conftest import SentinelCluster, wait_until, write_suite

HEARTBEAT_S = 2.0
OFFLINE_AFTER_S = 45.0  # dtf.coordinator.WORKER_OFFLINE_AFTER_S (3 heartbeats are less)


def executions(count_dir: Path) -> dict[str, int]:
    """test file name -> how many times it started."""
    return {f.name: len(f.read_text().splitlines()) for f in count_dir.glob("*.runs")}


def starts(count_dir: Path, name: str) -> list[float]:
    path = count_dir / name
    return [float(line.split()[1]) for line in path.read_text().splitlines()] if path.exists() else []


def _timed_run(dep: Deployment, tmp: Path, label: str, *, models: int, sleep_s: float,
               fault: Callable[[Any, Path], dict[str, Any]] | None) -> dict[str, Any]:
    count_dir = tmp / f"counts-{label}"
    count_dir.mkdir()
    suite = write_suite(tmp / f"{label}.yaml", models=models, template="ha/counted", batch_sizes=(1, 2),
                        params={"sleep_s": sleep_s, "count_dir": str(count_dir)}, timeout_s=120)
    started = time.monotonic()
    run = dep.submit(suite)
    figures = fault(run, count_dir) if fault else {}
    code, _ = run.finish(timeout_s=600)
    figures["wall_s"] = round(time.monotonic() - started, 2)
    figures["exit_code"] = code
    figures["_run"] = (run.run_id, count_dir)
    return figures


def _outcomes(dep: Deployment, *named: dict[str, Any]) -> None:
    """Stop the coordinator (it holds the DuckDB file) and add what each run stored."""
    dep.stop("a")
    for figures in named:
        run_id, count_dir = figures.pop("_run")
        _add_outcome(dep, figures, run_id, count_dir)


def _add_outcome(dep: Deployment, figures: dict[str, Any], run_id: str, count_dir: Path) -> None:
    runs = executions(count_dir)
    outcome = dep.outcome(run_id)
    figures.update(tests=len(outcome.tests), lost=len(outcome.lost()), duplicated=len(outcome.duplicated()),
                   max_executions=max(runs.values(), default=0),
                   tests_run_twice=sum(1 for n in runs.values() if n == 2),
                   tests_run_more_than_twice=sum(1 for n in runs.values() if n > 2),
                   never_ran=len(outcome.tests) - len(runs))


def master_kill(tmp: Path, processes: Any, cluster: SentinelCluster, *, models: int = 30, sleep_s: float = 0.3) -> dict[str, Any]:
    """kill -9 of the Redis master (a Sentinel failover) while results are being published."""
    dep = Deployment(tmp, processes, {
        **cluster.env(),
        "DTF_LEADER_TTL_MS": "10000",  # above the failover time: the leader keeps its lease
        "DTF_CONTROL_VISIBILITY_TIMEOUT": "5",
        "DTF_HEARTBEAT_INTERVAL": str(HEARTBEAT_S),
        "DTF_LOG_LEVEL": "INFO",
    })
    dep.coordinator("a")
    dep.wait_for_leader("a")
    dep.worker("w1")
    dep.worker("w2")
    total = models * 4
    baseline = _timed_run(dep, tmp, "master-baseline", models=models, sleep_s=sleep_s, fault=None)

    def kill_master(run: Any, count_dir: Path) -> dict[str, Any]:
        wait_until(lambda: len(executions(count_dir)) >= total // 4, 120, 0.05, "a quarter of the tests to start")
        old = cluster.kill_master()
        killed = time.monotonic()
        cluster.wait_for_new_master(old)
        return {"writable_after_s": round(time.monotonic() - killed, 2)}

    faulted = _timed_run(dep, tmp, "master-kill", models=models, sleep_s=sleep_s, fault=kill_master)
    _outcomes(dep, baseline, faulted)
    faulted["extra_wall_s"] = round(faulted["wall_s"] - baseline["wall_s"], 2)
    return {"no_fault": baseline, "master_killed": faulted}


def worker_kill(tmp: Path, processes: Any, redis_url: str, *, models: int = 4, sleep_s: float = 3.0,
                after_start_s: float = 0.5) -> dict[str, Any]:
    """kill -9 of a worker's main process mid-test, ``after_start_s`` after the test started
    (0.5: past its started notice at 0.25 s; 0: before it); the coordinator notices from its
    missing heartbeats. Visibility timeout at its default (4 h): only the heartbeats bring
    the test back."""
    dep = Deployment(tmp, processes, {
        "DTF_BROKER_URL": redis_url,
        "DTF_HEARTBEAT_INTERVAL": str(HEARTBEAT_S),
    })
    dep.coordinator("a")
    dep.wait_for_leader("a")
    dep.worker("w1", concurrency=1)
    dep.worker("w2", concurrency=1)
    baseline = _timed_run(dep, tmp, "worker-baseline", models=models, sleep_s=sleep_s, fault=None)

    def kill_worker(run: Any, count_dir: Path) -> dict[str, Any]:
        w1 = dep.procs["w1"].pid

        def on_w1() -> str | None:
            for f in count_dir.glob("*.runs"):
                lines = f.read_text().splitlines()
                if lines and _runs_under(int(lines[0].split()[0]), w1):
                    return f.name
            return None

        name = wait_until(on_w1, 120, 0.01, "a test to start on w1")
        time.sleep(after_start_s)
        dep.kill("w1", signal.SIGKILL)
        killed = time.time()
        kill_after_start_s = killed - starts(count_dir, name)[0]
        wait_until(lambda: len(starts(count_dir, name)) >= 2, OFFLINE_AFTER_S + 60, 0.1, "the killed test to run again")
        return {"republished_after_s": round(starts(count_dir, name)[1] - killed, 2), "offline_after_s": OFFLINE_AFTER_S,
                "killed_after_start_s": round(kill_after_start_s, 3)}

    faulted = _timed_run(dep, tmp, "worker-kill", models=models, sleep_s=sleep_s, fault=kill_worker)
    faulted["label"] = f"kill -9 {after_start_s:g} s after a test started"
    _outcomes(dep, baseline, faulted)
    faulted["extra_wall_s"] = round(faulted["wall_s"] - baseline["wall_s"], 2)
    return {"no_fault": baseline, "worker_killed": faulted}


def _runs_under(pid: int, ancestor: int) -> bool:
    """Whether ``pid`` is ``ancestor`` or one of its descendants (by /proc)."""
    for _ in range(16):
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        if pid <= 1:
            return False
    return False
