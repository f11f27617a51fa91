"""Worker failures with real processes: kill -9 of a worker's pool child (R1) and of a
worker's main process (R2) while it runs a test. Nothing is lost; one result per test."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Callable

import pytest

from ..conftest import Processes, RedisServer
from .cluster import Deployment
from .conftest import wait_until, write_suite

pytestmark = [pytest.mark.redis, pytest.mark.slow]

VISIBILITY_TIMEOUT_S = 8
RESTORE_INTERVAL_S = 5  # dtf.bus.broker_options sets kombu's unacked_restore_interval to this
HEARTBEAT_S = 2  # a redelivered copy waits one heartbeat interval + 5 s for the worker that said it runs it


def deployment(tmp_path: Path, processes: Processes, redis_server: RedisServer) -> Deployment:
    dep = Deployment(tmp_path, processes, {
        "DTF_BROKER_URL": redis_server.url,
        "DTF_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT_S),
        "DTF_RECONCILE_GRACE": "30",  # redelivery, not reconciliation, is under test here
        "DTF_HEARTBEAT_INTERVAL": str(HEARTBEAT_S),
    })
    dep.coordinator("c")
    dep.wait_for_leader("c")
    return dep


def pid_files(pid_dir: Path) -> dict[str, tuple[int, int]]:
    """test file name -> (pid of the process that spawned the test, pid of the test)."""
    out = {}
    for f in pid_dir.glob("*.pid"):
        parts = f.read_text().split()
        if len(parts) == 2:
            out[f.name] = (int(parts[0]), int(parts[1]))
    return out


def run_and_kill(tmp_path: Path, dep: Deployment, victim: Callable[[list[int]], None]) -> tuple[float, str]:
    """Submit 8 marked tests (2 s each); when one runs under w1, call ``victim`` with its
    ancestry up to w1's main process (test's parent first). Return the seconds until that
    test ran again, and the run id once the run has passed."""
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    suite = write_suite(tmp_path / "workers.yaml", models=4, template="ha/marked", batch_sizes=(1,),
                        params={"sleep_s": 2.0, "pid_dir": str(pid_dir)}, timeout_s=6)
    run = dep.submit(suite)
    w1 = dep.procs["w1"].pid

    def on_w1() -> tuple[str, int, list[int]] | None:
        for name, (parent, test_pid) in pid_files(pid_dir).items():
            chain = _ancestry(parent, until=w1)
            if chain:
                return name, test_pid, chain
        return None

    name, test_pid, chain = wait_until(on_w1, 60, 0.05, "a test running on w1")
    victim(chain)
    killed_at = time.monotonic()
    wait_until(lambda: pid_files(pid_dir).get(name, (0, test_pid))[1] != test_pid, 60, 0.1, "the test to run again")
    took = time.monotonic() - killed_at
    code, data = run.finish()
    assert code == 0, run.stderr() + dep.log("c")
    assert len(data["tests"]) == 8 and {t["status"] for t in data["tests"]} == {"passed"}
    return took, run.run_id


def _ancestry(pid: int, *, until: int, depth: int = 4) -> list[int]:
    """[pid, its parent, ...] up to and including ``until``; [] if ``until`` is not an ancestor."""
    chain = [pid]
    while chain[-1] != until and len(chain) <= depth:
        try:
            stat = Path(f"/proc/{chain[-1]}/stat").read_text()
            chain.append(int(stat.rsplit(")", 1)[1].split()[1]))
        except (OSError, ValueError, IndexError):
            return []
    return chain if chain[-1] == until else []


def assert_nothing_lost(dep: Deployment, run_id: str) -> None:
    dep.stop("c")
    outcome = dep.outcome(run_id)
    assert outcome.lost() == [] and outcome.duplicated() == []
    assert sorted(outcome.result_counts()) == sorted(outcome.tests)


def test_killing_a_workers_main_process_mid_test_redelivers_it(
    tmp_path: Path, processes: Processes, redis_server: RedisServer
) -> None:
    """R2: the test comes back within visibility timeout + restore interval + the redelivered
    copy's wait for the killed worker (heartbeat interval + 5 s) + 5 s."""
    dep = deployment(tmp_path, processes, redis_server)
    dep.worker("w1", concurrency=1)
    dep.worker("w2", concurrency=1)

    def kill_main(chain: list[int]) -> None:
        dep.kill("w1", signal.SIGKILL)

    took, run_id = run_and_kill(tmp_path, dep, kill_main)
    print(f"R2: redelivered {took:.1f} s after kill -9 of the worker")
    assert took <= VISIBILITY_TIMEOUT_S + RESTORE_INTERVAL_S + HEARTBEAT_S + 5 + 5, f"redelivered after {took:.1f} s"
    assert_nothing_lost(dep, run_id)


def test_killing_a_workers_pool_child_mid_test_requeues_it(
    tmp_path: Path, processes: Processes, redis_server: RedisServer
) -> None:
    """R1: with the prefork pool, the killed child's task is rejected and requeued."""
    dep = deployment(tmp_path, processes, redis_server)
    dep.worker("w1", concurrency=1, pool="prefork")
    dep.worker("w2", concurrency=1)

    def kill_child(chain: list[int]) -> None:
        assert len(chain) >= 3, f"the test should run under a pool child: {chain}"
        os.kill(chain[-2], signal.SIGKILL)  # the pool child: the one whose parent is w1

    took, run_id = run_and_kill(tmp_path, dep, kill_child)
    print(f"R1: requeued {took:.1f} s after kill -9 of the pool child")
    assert took <= 15, f"requeued after {took:.1f} s"
    assert_nothing_lost(dep, run_id)
