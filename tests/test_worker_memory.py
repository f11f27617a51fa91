"""A test that needs more memory than a worker has goes back to its queue for a bigger
worker, at most K times, then fails with the reason: in-process runtimes on the in-memory
broker, and one real worker on a real Redis."""

from __future__ import annotations

import subprocess
import types
from pathlib import Path
from typing import Any

import pytest

from dtf.app import make_app
from dtf.bus import CONTROL_QUEUE, RESULTS_QUEUE
from dtf.bus import task_payload as payload_for
from dtf.model import GpuInfo, HardwareProfile, RenderedTest, TestSpec
from dtf.settings import Settings
from dtf.worker import WorkerRuntime, memory_capacity_for

from .conftest import Processes, RedisServer, dtf_cmd
from .dtf_cluster import GATE_TEMPLATES, Cluster, Gates
from .memory_broker import drain


PASSING_SOURCE = "from dtf import harness\nharness.run(lambda h: h.metric('ok', 1))\n"


def machine(memory_gb: float, *, limit_gb: float | None = None, gpu_gb: float | None = None) -> HardwareProfile:
    gpus = () if gpu_gb is None else (GpuInfo("nvidia", "A100", memory_mb=gpu_gb * 1024, index=0),)
    return HardwareProfile(platform="linux", memory_total_mb=memory_gb * 1024,
                           memory_limit_mb=None if limit_gb is None else limit_gb * 1024, gpus=gpus)


def big_test(memory_gb: float, hardware: str = "cpu") -> RenderedTest:
    spec = TestSpec(f"llm/{hardware}/bs8/fp32", "llm", "text-generation", hardware, 8, "fp32", "generic/x",
                    memory_gb=memory_gb)
    return RenderedTest(spec, PASSING_SOURCE, "h")


@pytest.fixture
def app(tmp_path: Path) -> Any:
    app = make_app(Settings(spool_dir=str(tmp_path / "spool")))
    for queue in ("dtf.cpu", RESULTS_QUEUE, CONTROL_QUEUE):
        drain(app, queue)
    return app


def delivery(task_id: str = "run-m:llm/cpu/bs8/fp32:1", queue: str = "dtf.cpu") -> Any:
    return types.SimpleNamespace(id=task_id, delivery_info={"routing_key": queue})


def test_capacity_is_host_memory_under_any_cgroup_limit_or_the_largest_gpu() -> None:
    assert memory_capacity_for("cpu", machine(64)) == 64
    assert memory_capacity_for("cpu", machine(64, limit_gb=16)) == 16
    assert memory_capacity_for("cuda", machine(64, gpu_gb=80)) == 80
    assert memory_capacity_for("cuda", machine(64)) is None  # unknown: do not reject
    assert memory_capacity_for("cpu", None) is None


def test_a_too_big_test_goes_back_to_its_queue_and_a_bigger_worker_runs_it(app: Any, tmp_path: Path) -> None:
    small = WorkerRuntime(app, worker_id="small@test", queues=["dtf.cpu"], profile=machine(8), spool_dir=tmp_path)
    big = WorkerRuntime(app, worker_id="big@test", queues=["dtf.cpu"], profile=machine(64), spool_dir=tmp_path)
    small.handle(payload_for("run-m", 1, big_test(20)), delivery())
    assert small.flush_results()  # results leave on the sender's thread
    [task] = drain(app, "dtf.cpu")
    assert task.headers["id"] == "run-m:llm/cpu/bs8/fp32:1"  # same task id: the same attempt
    payload = task.decode()[0][0]
    assert payload["rejections"] == [{"worker_id": "small@test", "capacity_gb": 8.0}]
    assert [m.decode()["op"] for m in drain(app, CONTROL_QUEUE)] == []  # never said it started
    assert drain(app, RESULTS_QUEUE) == []

    big.handle(payload, delivery())
    assert big.flush_results()  # results leave on the sender's thread
    [result] = [m.decode()["result"] for m in drain(app, RESULTS_QUEUE)]
    assert result["status"] == "passed" and result["worker_id"] == "big@test"


def test_after_k_rejections_the_test_fails_with_the_reason(app: Any, tmp_path: Path) -> None:
    worker = WorkerRuntime(app, worker_id="w2@test", queues=["dtf.cpu"], profile=machine(8), spool_dir=tmp_path,
                           max_rejections=2)
    payload = dict(payload_for("run-m", 1, big_test(20)), rejections=[{"worker_id": "w1@test", "capacity_gb": 4.0}])
    worker.handle(payload, delivery())
    assert worker.flush_results()  # results leave on the sender's thread
    assert drain(app, "dtf.cpu") == []
    [result] = [m.decode()["result"] for m in drain(app, RESULTS_QUEUE)]
    assert result["status"] == "error" and result["attempt"] == 1
    assert result["error"].startswith("needs 20 GB of memory, more than any worker that took it (largest 8 GB)")
    assert "rejected 2 times (limit 2) by w1@test, w2@test" in result["error"]


def test_a_gpu_test_is_judged_by_gpu_memory_and_a_fitting_test_runs(app: Any, tmp_path: Path) -> None:
    worker = WorkerRuntime(app, worker_id="gpu@test", queues=["dtf.cpu"], profile=machine(512, gpu_gb=24),
                           spool_dir=tmp_path, max_rejections=1)
    worker.handle(payload_for("run-g", 1, big_test(40, "cuda")), delivery(queue="dtf.cuda"))
    assert worker.flush_results()  # results leave on the sender's thread
    [result] = [m.decode()["result"] for m in drain(app, RESULTS_QUEUE)]
    assert result["status"] == "error" and "needs 40 GB of device memory" in result["error"]
    worker.handle(payload_for("run-g", 1, big_test(2)), delivery())
    assert worker.flush_results()  # results leave on the sender's thread
    [result] = [m.decode()["result"] for m in drain(app, RESULTS_QUEUE)]
    assert result["status"] == "passed"


@pytest.mark.redis
def test_a_real_worker_fails_a_test_no_worker_can_hold_and_runs_the_rest(
    tmp_path: Path, redis_server: RedisServer, processes: Processes
) -> None:
    cluster = Cluster(tmp_path, redis_server, processes)
    cluster.start_coordinator()
    cluster.start_worker("mem@test", "--max-rejections", "2")
    gates = Gates(tmp_path / "gates")
    for test_id in ("huge/cpu/bs1/fp32", "small/cpu/bs1/fp32"):
        gates.open(test_id)
    suite = tmp_path / "mem.yaml"
    suite.write_text(
        "name: mem\ndefaults: {timeout_s: 60}\nmodels:\n"
        f"  - {{name: huge, family: gate, template: gate/wait, params: {{dir: \"{gates.dir}\", memory_gb: 100000}}}}\n"
        f"  - {{name: small, family: gate, template: gate/wait, params: {{dir: \"{gates.dir}\"}}}}\n"
        "hardware: [cpu]\nbatch_sizes: [1]\nprecisions: [fp32]\n"
    )
    proc = subprocess.run(dtf_cmd("submit", str(suite), "--wait", "--timeout", "120", "--format", "json",
                                  "--templates", str(GATE_TEMPLATES)),
                          env=cluster.env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 1, proc.stderr + processes.log("mem@test")
    run_id = proc.stdout.strip().splitlines()[0]
    tests = cluster.tests(run_id)
    assert tests["small/cpu/bs1/fp32"]["status"] == "passed"
    huge = tests["huge/cpu/bs1/fp32"]
    assert huge["status"] == "error"
    assert huge["error"].startswith("needs 100000 GB of memory, more than any worker that took it")
    assert "rejected 2 times (limit 2) by mem@test" in huge["error"]
