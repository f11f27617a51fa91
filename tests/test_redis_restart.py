"""Redis restarts without its data (no AOF, or a replacement node) under a running
coordinator: the coordinator leads again on its own, re-creates the queues, and re-publishes
the in-flight tests from DuckDB at once, so a worker that connects afterwards runs them.

The reconcile grace is set far beyond the test's wait so that only the recovery path, not
the periodic "silent for too long" re-publish, can bring the lost tests back."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from .conftest import Processes, RedisServer
from .dtf_cluster import Cluster, Gates, gated_suite, wait_for


def _restart_empty(redis: RedisServer) -> None:
    assert redis.proc is not None
    redis.proc.send_signal(signal.SIGKILL)
    redis.proc.wait()
    redis.start()  # same port, --save "" --appendonly no: nothing survives


def test_coordinator_recovers_and_republishes_after_redis_restarts_empty(
    tmp_path: Path, redis_server: RedisServer, processes: Processes
) -> None:
    cluster = Cluster(tmp_path, redis_server, processes)
    cluster.env.update(DTF_RECONCILE_GRACE="3600", DTF_LEADER_TTL_MS="1500", DTF_LOG_LEVEL="INFO")
    cluster.start_coordinator()
    gates = Gates(tmp_path / "gates")
    run_id = cluster.submit(gated_suite(tmp_path / "suite.yaml", "restart", gates, [1, 2]))
    assert {t["status"] for t in cluster.tests(run_id).values()} == {"queued"}  # no worker yet: in Redis only

    _restart_empty(redis_server)
    assert redis_server.proc is not None and redis_server.proc.poll() is None

    wait_for(lambda: cluster._ping(), "the coordinator to answer again after the restart")
    cluster.start_worker("after-restart@test")  # connects to the empty Redis: the tests must be re-sent
    for test_id in ("gated/cpu/bs1/fp32", "gated/cpu/bs2/fp32"):
        wait_for(lambda: gates.started(test_id), f"{test_id} to start on the new worker")
        gates.open(test_id)
    wait_for(lambda: cluster.run_finished(run_id), "the run to finish")
    assert {t["status"] for t in cluster.tests(run_id).values()} == {"passed"}
    log = processes.log("coordinator")
    assert "Connection already closed" not in log, log[-3000:]
    assert "re-publishing" in log and "lost its data" in log, log[-3000:]


def test_a_second_restart_is_recovered_too(tmp_path: Path, redis_server: RedisServer, processes: Processes) -> None:
    """Twice in a row (the issue saw it fail two out of two), with the worker up throughout."""
    cluster = Cluster(tmp_path, redis_server, processes)
    cluster.env.update(DTF_RECONCILE_GRACE="3600", DTF_LEADER_TTL_MS="1500")
    cluster.start_coordinator()
    worker = cluster.start_worker("steady@test")
    gates = Gates(tmp_path / "gates")
    for n, bs in enumerate((1, 2)):
        _restart_empty(redis_server)
        wait_for(lambda: cluster._ping(), f"the coordinator to answer after restart {n + 1}")
        run_id = cluster.submit(gated_suite(tmp_path / f"s{bs}.yaml", f"again{bs}", gates, [bs]))
        test_id = f"gated/cpu/bs{bs}/fp32"
        wait_for(lambda: gates.started(test_id), f"{test_id} to start")
        gates.open(test_id)
        wait_for(lambda: cluster.run_finished(run_id), f"run {run_id} to finish")
    assert worker.poll() is None
    os.killpg(worker.pid, signal.SIGTERM)
