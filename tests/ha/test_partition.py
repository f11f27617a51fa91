"""R11: the leader cut off from Redis (every connection of its process dropped and new ones
refused) for 2 x ttl. It must step down by its own deadline, within ttl, without waiting
for a Redis error; the standby must lead within ttl + 1 s; nothing is lost or duplicated."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ..conftest import Processes, RedisServer
from .cluster import Deployment
from .conftest import write_suite
from .proxy import CuttableProxy
from .test_coordinator_failover import POLL_S, TTL_MS, ha_env, log_times

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_a_leader_partitioned_from_redis_steps_down_and_the_standby_takes_over(
    tmp_path: Path, processes: Processes, redis_server: RedisServer
) -> None:
    with CuttableProxy(redis_server.port) as proxy:
        dep = Deployment(tmp_path, processes, ha_env(redis_server))
        # a reaches Redis only through the proxy; b, the workers and the client directly.
        a_env = dict(dep.env, DTF_BROKER_URL=f"redis://127.0.0.1:{proxy.port}/0")
        dep.procs["a"] = processes.start("a", ["coordinator", "--db", str(dep.db), "--node-id", "a"], a_env, tmp_path)
        dep.wait_for_leader("a")
        dep.coordinator("b")
        dep.worker("w1")
        dep.worker("w2")
        run = dep.submit(write_suite(tmp_path / "r11.yaml", models=30, timeout_s=10))
        old_token = dep.ping_token()
        run.wait_for_passed(20)

        proxy.cut()
        cut_at = time.time()
        dep.wait_for_leader("b", timeout_s=30)
        lease_at = time.time()
        time.sleep(max(0.0, cut_at + 2 * TTL_MS / 1000 - time.time()))
        proxy.mend()

        code, data = run.finish()
        assert code == 0, run.stderr() + dep.log("a") + dep.log("b")
        stepped_down = [t for t in log_times(dep.log("a"), r"stepped down") if t >= cut_at - 0.01]
        assert stepped_down, dep.log("a")
        leading = [t for t in log_times(dep.log("b"), r"leading with fencing token") if t >= cut_at - 0.01]
        assert leading, dep.log("b")
        print(f"R11: a stepped down {stepped_down[0] - cut_at:.2f} s after the cut; b held the lease after "
              f"{lease_at - cut_at:.2f} s and led (DuckDB open) after {leading[0] - cut_at:.2f} s")
        assert stepped_down[0] - cut_at <= TTL_MS / 1000, dep.log("a")
        assert lease_at - cut_at <= TTL_MS / 1000 + POLL_S + 1.0
        # and leads for real (the DuckDB file open) as soon: a lets go of it when its lease lapses
        assert leading[0] - cut_at <= TTL_MS / 1000 + POLL_S + 1.0, dep.log("b")
        assert dep.ping_token() > old_token
        assert dep.procs["a"].poll() is None  # a stands by again; it did not crash
        dep.stop("a")
        dep.stop("b")
        outcome = dep.outcome(run.run_id)
        assert len(data["tests"]) == len(outcome.tests)
        assert outcome.lost() == [] and outcome.duplicated() == []
        late = [r for r in outcome.results if r["token"] == old_token and r["ingested_at"] > stepped_down[0] + 0.01]
        assert late == [], "the partitioned leader's writes after stepping down were stored"
