"""R3: a test that outlives the broker's visibility timeout is delivered again and runs
twice; the second result has the same (run, test, attempt) key, so DuckDB keeps one row
and the coordinator reports the duplicate it ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import Processes, RedisServer
from .cluster import Deployment
from .conftest import wait_until, write_suite

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_a_test_outliving_the_visibility_timeout_runs_twice_but_is_stored_once(
    tmp_path: Path, processes: Processes, redis_server: RedisServer
) -> None:
    dep = Deployment(tmp_path, processes, {
        "DTF_BROKER_URL": redis_server.url,
        "DTF_VISIBILITY_TIMEOUT": "2",  # far below the test's 7 s: Redis hands it out again
        "DTF_RECONCILE_GRACE": "60",
    })
    dep.coordinator("c")
    dep.wait_for_leader("c")
    dep.worker("w1", concurrency=1)
    dep.worker("w2", concurrency=1)
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    suite = write_suite(tmp_path / "long.yaml", models=1, template="ha/marked", batch_sizes=(1,),
                        params={"sleep_s": 7.0, "pid_dir": str(pid_dir)}, timeout_s=30)  # 2 tests
    run = dep.submit(suite)
    code, data = run.finish(timeout_s=120)
    assert code == 0, run.stderr() + dep.log("c")
    # Both workers ran it: the redelivered copy started while the first was still going.
    executions = {t["worker_id"] for t in data["tests"]}
    status = dep.client().call("status", run_id=run.run_id)
    wait_until(lambda: dep.client().call("status", run_id=run.run_id)["duplicates_ignored"] >= 1, 30, 0.5,
               "the coordinator to ignore the second execution's result")
    dep.stop("c")
    outcome = dep.outcome(run.run_id)
    assert outcome.duplicated() == [] and outcome.lost() == []
    assert len(outcome.results) == len(outcome.tests) == 2  # fp32 and fp16: one row each
    print(f"R3: executions reported by {executions}, status {status.get('duplicates_ignored')}")
