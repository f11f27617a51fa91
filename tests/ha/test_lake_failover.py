"""Coordinators on "different hosts" over one DuckLake (a PostgreSQL catalog of the session's
own, one data path): separate processes with separate local directories. No file lock, so
a standby leads as soon as it holds the lease: after SIGSTOP of the leader (the resumed old
leader's writes refused) and after kill -9, with 0 results lost and 0 duplicated, and a
reader querying the lake mid-run."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from dtf.store import open_store

from ..conftest import PostgresServer, Processes, RedisServer, need_lake_extension
from .cluster import Deployment
from .conftest import write_suite
from .test_coordinator_failover import POLL_S, TTL_MS, ha_env, log_times

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def start_lake_pair(tmp_path: Path, processes: Processes, redis_server: RedisServer,
                    postgres_server: PostgresServer) -> Deployment:
    need_lake_extension()
    db = f"ducklake:postgres:{postgres_server.conninfo(postgres_server.create_database())}"
    dep = Deployment(tmp_path, processes, ha_env(redis_server), db=db, data_path=str(tmp_path / "shared-lake") + "/")
    dep.coordinator("a")
    dep.wait_for_leader("a")
    dep.coordinator("b")
    dep.worker("w1")
    dep.worker("w2")
    return dep


def test_a_paused_lake_leader_is_replaced_within_the_lease_and_its_late_writes_are_refused(
    tmp_path: Path, processes: Processes, redis_server: RedisServer, postgres_server: PostgresServer
) -> None:
    dep = start_lake_pair(tmp_path, processes, redis_server, postgres_server)
    run = dep.submit(write_suite(tmp_path / "lake-stop.yaml", models=30, timeout_s=10))
    old_token = dep.ping_token()
    run.wait_for_passed(20)
    with open_store(dep.db, reports=True) as reader:  # a live reader while a coordinator writes
        counts = reader.status_counts(run.run_id)
        assert sum(counts["cpu"].values()) == 120 and counts["cpu"].get("passed", 0) >= 20
    dep.kill("a", signal.SIGSTOP)
    stopped_at = time.time()
    dep.wait_for_leader("b", timeout_s=30)
    leading = [t for t in log_times(dep.log("b"), r"leading with fencing token") if t >= stopped_at]
    deadline = time.monotonic() + 10
    while not leading and time.monotonic() < deadline:
        time.sleep(0.05)
        leading = [t for t in log_times(dep.log("b"), r"leading with fencing token") if t >= stopped_at]
    took = leading[0] - stopped_at
    print(f"lake SIGSTOP: standby leads {took:.2f} s after the leader stopped (ttl {TTL_MS / 1000:g} s)")
    assert took <= TTL_MS / 1000 + POLL_S + 1.0, dep.log("b")
    time.sleep(max(0.0, stopped_at + 2 * TTL_MS / 1000 - time.time()))
    dep.kill("a", signal.SIGCONT)
    code, data = run.finish()
    assert code == 0, run.stderr() + dep.log("a") + dep.log("b")
    new_token = dep.ping_token()
    assert new_token > old_token
    dep.stop("a")
    dep.stop("b")
    outcome = dep.outcome(run.run_id)
    assert outcome.lost() == [] and outcome.duplicated() == []
    late = [r for r in outcome.results if r["token"] == old_token and r["ingested_at"] > stopped_at]
    assert late == [], "the paused leader's writes after resuming were stored"
    assert outcome.max_token == new_token


def test_killing_the_lake_leader_mid_run_loses_and_duplicates_nothing(
    tmp_path: Path, processes: Processes, redis_server: RedisServer, postgres_server: PostgresServer
) -> None:
    dep = start_lake_pair(tmp_path, processes, redis_server, postgres_server)
    run = dep.submit(write_suite(tmp_path / "lake-kill.yaml", models=30, timeout_s=10))
    old_token = dep.ping_token()
    run.wait_for_passed(20)
    dep.kill("a")
    killed_at = time.monotonic()
    dep.wait_for_leader("b", timeout_s=30)
    took = time.monotonic() - killed_at
    print(f"lake kill -9: standby holds the lease {took:.2f} s after kill -9")
    assert took <= TTL_MS / 1000 + POLL_S + 1.0
    code, data = run.finish()
    assert code == 0, run.stderr() + dep.log("b")
    assert len(data["tests"]) == 120 and {t["status"] for t in data["tests"]} == {"passed"}
    new_token = dep.ping_token()
    dep.stop("b")
    outcome = dep.outcome(run.run_id)
    assert outcome.lost() == [] and outcome.duplicated() == []
    assert {r["token"] for r in outcome.results} <= {old_token, new_token}
