"""R3: a test that outlives the broker's visibility timeout is delivered again; the worker
handed the redelivered copy asks the coordinator where the attempt stands (the `test_state`
query), sees a live worker running it, waits, and drops the copy once the result is in: the
test runs once and is stored once."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import Processes, RedisServer
from .cluster import Deployment
from .conftest import write_suite

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_a_test_outliving_the_visibility_timeout_runs_once_and_is_stored_once(
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
    runs = {f.name: len(f.read_text().splitlines()) for f in pid_dir.glob("*.runs")}
    assert len(runs) == 2 and set(runs.values()) == {1}, runs  # the redelivered copies never ran
    dep.stop("c")
    outcome = dep.outcome(run.run_id)
    assert outcome.duplicated() == [] and outcome.lost() == []
    assert len(outcome.results) == len(outcome.tests) == 2  # fp32 and fp16: one row each
