"""The resource guard on a real worker: a real memory hog pushes the machine over the
worker's --max-memory-percent; the worker cancels its queue consumer and says it is
constrained, the test it was running finishes untouched, the next test waits in Redis,
and once the hog is gone and the cool-down has passed the worker takes it."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
import pytest

from dtf.health import HealthSampler

from .conftest import Processes, RedisServer
from .dtf_cluster import Cluster, Gates, gated_suite, memory_hog, wait_for

WORKER = "guarded@test"


def _hog_plan() -> tuple[int, float]:
    """(MiB the hog fills, the worker's memory limit): the limit sits halfway between the
    machine's memory use now and its use with the hog, so neither side is near the line."""
    mem = psutil.virtual_memory()
    hog_bytes = int(min(0.25 * mem.total, 0.6 * mem.available))
    hog_percent = 100.0 * hog_bytes / mem.total
    if hog_percent < 8:
        pytest.skip(f"too little free memory for a clear signal ({mem.available >> 20} MiB available)")
    baseline = HealthSampler(None).sample().memory_percent
    return hog_bytes >> 20, round(baseline + hog_percent / 2, 1)


def _guard(cluster: Cluster) -> dict:
    row = cluster.worker(WORKER) or {}
    health = row.get("health") or {}
    return {**(health.get("guard") or {}), "state": row.get("state"), "sent_at": health.get("sent_at", 0.0)}


@pytest.mark.slow
@pytest.mark.redis
def test_a_memory_hog_pauses_intake_without_touching_the_running_test(
    tmp_path: Path, redis_server: RedisServer, processes: Processes
) -> None:
    cluster = Cluster(tmp_path, redis_server, processes)
    cluster.start_coordinator()
    hog_mb, limit = _hog_plan()
    cluster.start_worker(WORKER, "--concurrency", "1", "--max-memory-percent", str(limit), "--guard-cooldown", "1")
    wait_for(lambda: _guard(cluster).get("consuming") is True and _guard(cluster)["state"] == "online",
             "the worker to accept tests before the hog")
    gates = Gates(tmp_path / "gates")
    run_id = cluster.submit(gated_suite(tmp_path / "guard.yaml", "guard", gates, [1, 2]))
    ids = ["gated/cpu/bs1/fp32", "gated/cpu/bs2/fp32"]
    first = wait_for(lambda: next((t for t in ids if gates.started(t)), None), "the first test to start")
    second = next(t for t in ids if t != first)

    hog = memory_hog(hog_mb, tmp_path / "hog.ready")
    try:
        wait_for(lambda: (tmp_path / "hog.ready").exists(), "the hog to fill its memory")
        wait_for(lambda: _guard(cluster)["state"] == "constrained" and _guard(cluster).get("consuming") is False,
                 "the worker to say it is constrained and to cancel its consumer")
        assert any("memory" in r for r in _guard(cluster)["reasons"])

        gates.open(first)
        wait_for(lambda: cluster.tests(run_id)[first]["status"] == "passed", "the running test to finish")
        # Three more heartbeats, each still constrained, and the second test never left Redis.
        for _ in range(3):
            seen = _guard(cluster)["sent_at"]
            wait_for(lambda seen=seen: _guard(cluster)["sent_at"] > seen, "the next heartbeat")
            assert _guard(cluster)["state"] == "constrained"
            assert cluster.tests(run_id)[second]["status"] == "queued" and not gates.started(second)
    finally:
        hog.send_signal(signal.SIGKILL)
        hog.wait()
    freed_at = time.time()

    wait_for(lambda: _guard(cluster)["state"] == "online", "the worker to take tests again after the cool-down")
    wait_for(lambda: gates.started(second), "the waiting test to start once the hog is gone")
    gates.open(second)
    wait_for(lambda: cluster.run_finished(run_id), "the run to finish")
    tests = cluster.tests(run_id)
    assert {t["status"] for t in tests.values()} == {"passed"}
    assert tests[second]["started_at"] > freed_at
    log = processes.log(WORKER)
    assert "Canceling queue dtf.cpu" in log and "Started consuming from dtf.cpu" in log
