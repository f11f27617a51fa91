"""Redis failures with a real Sentinel group: kill -9 of the master mid-run (R5) and a master
paused past its failover (R6)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import redis

from ..conftest import Processes
from .cluster import Deployment
from .conftest import SentinelCluster, wait_until, write_suite

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_killing_the_redis_master_mid_run_loses_and_duplicates_nothing(
    tmp_path: Path, processes: Processes, sentinel_cluster: SentinelCluster
) -> None:
    """R5: writable again <= 5 s, workers consuming again <= 15 s, the run completes, tests
    lost with the old master are re-published by reconciliation, 0 duplicate results."""
    dep = Deployment(tmp_path, processes, {
        **sentinel_cluster.env(),
        "DTF_LEADER_TTL_MS": "10000",  # above the failover time: the leader keeps its lease
        "DTF_CONTROL_VISIBILITY_TIMEOUT": "5",
        "DTF_RECONCILE_GRACE": "5",
        "DTF_VISIBILITY_TIMEOUT": "60",
    })
    dep.coordinator("a")
    dep.wait_for_leader("a")
    dep.worker("w1")
    dep.worker("w2")
    suite = write_suite(tmp_path / "r5.yaml", models=40, params={"sleep_s": 0.3}, timeout_s=10)
    run = dep.submit(suite)
    run.wait_for_passed(30)
    before = run.passed()
    old = sentinel_cluster.kill_master()
    killed_at = time.monotonic()
    sentinel_cluster.wait_for_new_master(old)
    writable_after = time.monotonic() - killed_at
    wait_until(lambda: run.passed() >= before + 8, 60, 0.2, "tests to pass again after the failover")
    consuming_after = time.monotonic() - killed_at
    code, data = run.finish()
    print(f"R5: writable after {writable_after:.2f} s, consuming after {consuming_after:.2f} s")
    assert code == 0, run.stderr() + dep.log("a") + dep.log("w1")
    assert len(data["tests"]) == 160 and {t["status"] for t in data["tests"]} == {"passed"}
    assert writable_after <= 5.0
    assert consuming_after <= 15.0
    dep.stop("a")
    outcome = dep.outcome(run.run_id)
    assert outcome.lost() == [] and outcome.duplicated() == []
    assert sorted(outcome.result_counts()) == sorted(outcome.tests)


def test_a_master_paused_past_its_failover_accepts_no_writes_once_it_has_looked_at_its_replicas(
    sentinel_cluster: SentinelCluster,
) -> None:
    """R6: with min-replicas-to-write 1 the stale master refuses writes after SIGCONT.

    Measured: it can accept writes until its first cron tick (hz 10: <= 100 ms) after it
    resumes, because it counts its good replicas only there; every later write is refused.
    Those early writes are lost when it rejoins as a replica (see docs/ha.md)."""
    old = sentinel_cluster.master()
    stale = old.client(socket_timeout=0.5)
    assert stale.set("dtf:test:before", "1")
    old.signal(signal.SIGSTOP)
    try:
        sentinel_cluster.wait_for_new_master(old)
    finally:
        old.signal(signal.SIGCONT)
    resumed = time.monotonic()
    accepted: list[float] = []
    tries = 0
    while time.monotonic() - resumed < 3.0:
        tries += 1
        try:
            stale.set(f"dtf:test:stale:{tries}", "1")
            accepted.append(time.monotonic() - resumed)
        except redis.RedisError:
            pass
    print(f"R6: stale master accepted {len(accepted)} of {tries} writes, the last {max(accepted, default=0):.3f} s after resuming")
    assert tries > 10
    assert [t for t in accepted if t > 0.2] == []
