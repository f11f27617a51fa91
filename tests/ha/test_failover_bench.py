"""bench/failover.py runs at its smallest size and prints the JSON it promises, with nothing
lost or duplicated. No timing is asserted: figures belong to the benchmark."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ..conftest import REPO, dtf_env, need_binary

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_the_failover_bench_reports_takeover_and_sentinel_times_with_nothing_lost() -> None:
    need_binary("redis-server")
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "failover.py"), "--quick", "--repeats", "1",
                           "--tests", "40"], cwd=REPO, env=dtf_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads(proc.stdout)
    assert doc["benchmark"] == "failover" and doc["quick"] is True and doc["repeats"] == 1
    r = doc["results"]
    assert r["lost"] == 0 and r["duplicated"] == 0
    assert r["leader_kill"]["takeover_lease_s"]["n"] == 1 and r["leader_kill"]["tests_checked"] == 80
    assert r["sentinel_failover"]["client_write_after_kill_s"]["n"] == 1
    assert r["settings"]["leader_ttl_ms"] > 0
    [master_trial], [worker_trial] = r["in_flight"]["master_kill"], r["in_flight"]["worker_kill"]  # --quick: one each
    master, worker = master_trial["master_killed"], worker_trial["worker_killed"]
    assert master["tests"] == 80 and master["lost"] == master["duplicated"] == 0
    assert r["in_flight"]["master_kill_summary"]["trials"] == 1
    assert worker["tests"] == 8 and worker["tests_run_twice"] == 1 and "republished_after_s" in worker
    assert worker["killed_after_start_s"] < 1.0
