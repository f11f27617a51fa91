"""Routing by requirements, admission with reservations, health-gated workers and cancel.

The pure parts (requirement sets, queue names, what a machine lacks, the reservation pool,
the known-answer check) are tested directly; the rest with a real redis-server, a real
`dtf coordinator` and real `dtf worker` processes running gate/wait tests, which finish
only when the test opens their gate (tests/dtf_cluster.py): no sleeps to tune."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from dtf.errors import SuiteError
from dtf.healthcheck import check_kind, cpu_check, parse_nvidia_ecc
from dtf.model import GpuInfo, HardwareProfile
from dtf.requirements import describe, is_route_queue, route_queue, unmet
from dtf.reservations import Reservations
from dtf.routing import RouteTable
from dtf.suite import expand_suite, parse_suite

from .conftest import Processes, RedisServer, dtf_cmd
from .dtf_cluster import GATE_TEMPLATES, Cluster, Gates, wait_for

H100 = HardwareProfile(platform="linux", logical_cores=32, memory_total_mb=256 * 1024, model_sources=("hf", "synthetic"),
                       gpus=(GpuInfo("nvidia", "NVIDIA H100 80GB HBM3", memory_mb=81559.0, index=0),),
                       hardware_kinds=("cpu", "cuda"))


# -- requirement sets ----------------------------------------------------------------------
def test_a_requirement_set_names_one_queue_per_kind_and_reads_back_for_people() -> None:
    a = route_queue("cuda", {"tags": ["a100"], "gpu_memory_gb": 24.0})
    assert a == route_queue("cuda", {"gpu_memory_gb": 24.0, "tags": ["a100"]})  # key order does not matter
    assert a != route_queue("cpu", {"tags": ["a100"], "gpu_memory_gb": 24.0})
    assert a.startswith("dtf.cuda.r-") and is_route_queue(a)
    assert route_queue("cuda", {}) == "dtf.cuda"
    assert describe({"tags": ["a100"], "gpu_memory_gb": 24.0, "device": "*H100*"}) == "tags=a100 gpu_memory_gb>=24 device~*H100*"


def test_what_a_machine_lacks_for_a_set() -> None:
    assert unmet(H100, ["nvlink"], "cuda", {"tags": ["nvlink"], "gpu_memory_gb": 80.0, "device": "*h100*"}) == []
    assert unmet(H100, [], "cuda", {"tags": ["nvlink"], "gpu_memory_gb": 96.0, "device": "*A100*", "cpu_cores": 64.0,
                                   "ram_gb": 512.0, "model_sources": ["onnx"]}) == [
        "tags nvlink", "device *A100*", "gpu_memory_gb 96", "cpu_cores 64", "ram_gb 512", "model_sources onnx"]
    assert unmet(H100, [], "rocm", {"gpu_memory_gb": 1.0}) == ["gpu_memory_gb 1"]  # an NVIDIA GPU is no rocm device


def test_suite_requires_at_each_level_and_errors_with_their_path() -> None:
    suite = parse_suite({
        "name": "r", "hardware": ["cpu"], "batch_sizes": [1], "defaults": {"requires": {"ram_gb": 4}},
        "models": [{"name": "a", "template": "gate/wait", "requires": {"tags": ["big"]}},
                   {"name": "b", "template": "gate/wait"}],
    }, "r.yaml")
    by_model = {s.model: dict(s.requires) for s in expand_suite(suite)}
    assert by_model == {"a": {"tags": ["big"], "ram_gb": 4.0}, "b": {"ram_gb": 4.0}}
    assert parse_suite(suite.to_dict(), "again").requires == {"ram_gb": 4.0}  # round-trips
    with pytest.raises(SuiteError, match=r"models\[0\]\.requires\.gpu_memory_gb.*positive number"):
        parse_suite({"name": "r", "hardware": ["cpu"], "batch_sizes": [1],
                     "models": [{"name": "a", "requires": {"gpu_memory_gb": -1}}]}, "r.yaml")
    with pytest.raises(SuiteError, match=r"requires\.colour.*unknown requirement"):
        parse_suite({"name": "r", "hardware": ["cpu"], "batch_sizes": [1], "models": ["a"], "requires": {"colour": 1}}, "r.yaml")


def test_a_worker_takes_the_sets_it_satisfies_and_leaves_a_sick_kind() -> None:
    table = RouteTable(["dtf.cpu", "dtf.cuda"], H100, tags=["nvlink"])
    ok = {"queue": route_queue("cuda", {"tags": ["nvlink"]}), "hardware": "cuda", "requires": {"tags": ["nvlink"]}}
    no = {"queue": route_queue("cuda", {"tags": ["tpu"]}), "hardware": "cuda", "requires": {"tags": ["tpu"]}}
    webgpu = {"queue": route_queue("webgpu", {"tags": ["nvlink"]}), "hardware": "webgpu", "requires": {"tags": ["nvlink"]}}
    assert table.refresh([ok, no, webgpu])
    assert table.desired() == ["dtf.cpu", "dtf.cuda", ok["queue"]]
    assert table.report()["declined"] == {no["queue"]: ["tags tpu"]}
    table.set_health("cuda", "uncorrected ECC errors: gpu 0: 3")
    assert table.desired() == ["dtf.cpu"]
    table.set_health("cuda", None)
    assert table.desired() == ["dtf.cpu", "dtf.cuda", ok["queue"]]


# -- reservations --------------------------------------------------------------------------
def test_reservations_never_overcommit_a_pool() -> None:
    """Eight threads each hold 3 of a 10 GiB pool; the most held at once is 9."""
    pool = Reservations(lambda kind: 10.0)
    held = [0.0]
    peak = [0.0]
    lock = threading.Lock()
    start = threading.Barrier(8)

    def one() -> None:
        start.wait()
        with pool.hold("cpu", 3.0):
            with lock:
                held[0] += 3.0
                peak[0] = max(peak[0], held[0])
            with lock:
                held[0] -= 3.0

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] <= 10.0 and pool.report() == {"host": {"held_gb": 0.0, "waiting": 0}}


def test_a_reservation_is_released_when_the_test_raises() -> None:
    pool = Reservations(lambda kind: 4.0)
    with pytest.raises(RuntimeError):
        with pool.hold("cuda", 4.0):
            raise RuntimeError("killed")
    assert pool.report() == {"device:cuda": {"held_gb": 0.0, "waiting": 0}}


# -- health checks -------------------------------------------------------------------------
def test_the_cpu_known_answer_check_passes_and_the_test_hook_fails_it() -> None:
    assert cpu_check() is None
    assert check_kind("cpu", {}) is None
    assert check_kind("cpu", {"DTF_HEALTHCHECK_FAIL": "cuda,cpu"}) == "failed by DTF_HEALTHCHECK_FAIL (test hook)"
    assert parse_nvidia_ecc("0, 0\n1, 3\n2, [N/A]\n") == {0: 0, 1: 3}


# -- with a real cluster -------------------------------------------------------------------
def _suite(path: Path, gates: Gates, models: list[tuple[str, dict[str, Any] | None]], *, batch_sizes: list[int],
           memory_gb: float | None = None) -> Path:
    lines = [f"name: {path.stem}", "defaults: {timeout_s: 120, retries: 0}", "models:"]
    for name, requires in models:
        params = f'{{dir: "{gates.dir}", latency_ms: 0.0' + (f", memory_gb: {memory_gb}" if memory_gb else "") + "}"
        req = f", requires: {requires}" if requires else ""
        lines.append(f"  - {{name: {name}, family: gate, template: gate/wait, params: {params}{req}}}")
    lines += ["hardware: [cpu]", f"batch_sizes: {batch_sizes}", "precisions: [fp32]", "chain_batch_sizes: false"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _submit(cluster: Cluster, suite: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(dtf_cmd("submit", str(suite), "--templates", str(GATE_TEMPLATES), "--format", "json", *args),
                          env=cluster.env, cwd=cluster.tmp, capture_output=True, text=True, timeout=300)


def test_a_test_that_needs_a_tag_reaches_only_the_tagged_worker_and_an_unserved_set_is_skipped(
        tmp_path: Path, redis_server: RedisServer, processes: Processes) -> None:
    cluster = Cluster(tmp_path, redis_server, processes)
    cluster.start_coordinator()
    cluster.start_worker("tagged@test", "--tags", "a100")
    cluster.start_worker("plain@test")
    gates = Gates(tmp_path / "gates")
    for name in ("needs-a100", "anywhere", "needs-h100"):
        for bs in (1, 2, 3):
            gates.open(f"{name}/cpu/bs{bs}/fp32")  # open up front: these tests pass at once
    suite = _suite(tmp_path / "routed.yaml", gates, [("needs-a100", {"tags": ["a100"]}), ("anywhere", None),
                                                      ("needs-h100", {"tags": ["h100"]})], batch_sizes=[1, 2, 3])
    done = _submit(cluster, suite, "--wait", "--timeout", "240", "--skip-unserved")
    assert done.returncode == 0, done.stderr
    assert "no live worker offers tags=h100 on cpu" in done.stderr and "its 3 tests are skipped (--skip-unserved)" in done.stderr
    assert "tagged@test lacks tags h100" in done.stderr
    run_id = done.stdout.strip().splitlines()[0]
    tests = cluster.tests(run_id)
    a100 = [t for tid, t in tests.items() if tid.startswith("needs-a100/")]
    assert len(a100) == 3 and {t["status"] for t in a100} == {"passed"}
    assert {t["worker_id"] for t in a100} == {"tagged@test"}  # only the tagged worker consumes that set's queue
    h100 = [t for tid, t in tests.items() if tid.startswith("needs-h100/")]
    assert {t["status"] for t in h100} == {"skipped"}
    assert all(t["reason"].startswith("unserved: no live worker offers tags=h100 on cpu (dtf.cpu.r-") for t in h100)
    tagged = cluster.worker("tagged@test")
    assert tagged is not None and tagged["hardware"]["tags"] == ["a100"]


def test_reservations_keep_two_concurrent_tests_from_overcommitting_memory(
        tmp_path: Path, redis_server: RedisServer, processes: Processes) -> None:
    from dtf.hardware import detect
    from dtf.worker import memory_capacity_for

    capacity = memory_capacity_for("cpu", detect())
    assert capacity
    cluster = Cluster(tmp_path, redis_server, processes)
    cluster.start_coordinator()
    cluster.start_worker("roomy@test", "--concurrency", "2")
    gates = Gates(tmp_path / "gates")
    suite = _suite(tmp_path / "big.yaml", gates, [("big", None)], batch_sizes=[1, 2], memory_gb=round(capacity * 0.6, 1))
    run_id = cluster.submit(suite)
    ids = ["big/cpu/bs1/fp32", "big/cpu/bs2/fp32"]
    first = wait_for(lambda: next((t for t in ids if gates.started(t)), None), "one test to start")
    second = next(t for t in ids if t != first)

    def waiting() -> bool:
        w = cluster.worker("roomy@test") or {}
        return ((w.get("health") or {}).get("reservations") or {}).get("host", {}).get("waiting") == 1

    wait_for(waiting, "the second test to wait for its reservation")  # taken by the worker, not started
    assert not gates.started(second)
    gates.open(first)
    wait_for(lambda: gates.started(second), "the second test to start once the first released its memory")
    gates.open(second)
    wait_for(lambda: cluster.run_finished(run_id), "the run to finish")
    tests = cluster.tests(run_id)
    assert {tests[t]["status"] for t in ids} == {"passed"}
    a, b = sorted((tests[t] for t in ids), key=lambda t: t["started_at"])
    assert a["finished_at"] <= b["started_at"]  # never both at once


def test_a_failing_health_check_keeps_a_worker_off_its_queue(tmp_path: Path, redis_server: RedisServer,
                                                             processes: Processes) -> None:
    cluster = Cluster(tmp_path, redis_server, processes)
    cluster.start_coordinator()
    sick_env = dict(cluster.env, DTF_HEALTHCHECK_FAIL="cpu")  # the documented test hook
    processes.start("sick@test", ["worker", "--name", "sick@test", "--queues", "dtf.cpu", "--heartbeat-interval", "1"],
                    sick_env, tmp_path)
    sick = wait_for(lambda: cluster.worker("sick@test"), "a heartbeat from the sick worker")
    assert sick["queues"] == []
    assert sick["health"]["routing"]["unhealthy"] == {"cpu": "failed by DTF_HEALTHCHECK_FAIL (test hook)"}
    shown = subprocess.run(dtf_cmd("workers", "--format", "json"), env=cluster.env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
    assert "failed by DTF_HEALTHCHECK_FAIL (test hook)" in shown.stdout
    gates = Gates(tmp_path / "gates")
    for bs in (1, 2):
        gates.open(f"quick/cpu/bs{bs}/fp32")
    run_id = cluster.submit(_suite(tmp_path / "q.yaml", gates, [("quick", None)], batch_sizes=[1, 2]))
    assert cluster.client.call("status", run_id=run_id)["idle_queues"] == ["dtf.cpu"]  # nobody healthy consumes it
    cluster.start_worker("healthy@test")
    wait_for(lambda: cluster.run_finished(run_id), "the healthy worker to run the tests")
    assert {t["worker_id"] for t in cluster.tests(run_id).values()} == {"healthy@test"}
    assert "health check for cpu failed" in processes.log("sick@test")


def test_cancel_stops_a_run_mid_way_and_keeps_what_had_finished(tmp_path: Path, redis_server: RedisServer,
                                                               processes: Processes) -> None:
    cluster = Cluster(tmp_path, redis_server, processes)
    cluster.start_coordinator()
    cluster.start_worker("one@test", "--concurrency", "1")
    gates = Gates(tmp_path / "gates")
    run_id = cluster.submit(_suite(tmp_path / "long.yaml", gates, [("slow", None)], batch_sizes=[1, 2, 3, 4]))
    ids = [f"slow/cpu/bs{bs}/fp32" for bs in (1, 2, 3, 4)]
    first = wait_for(lambda: next((t for t in ids if gates.started(t)), None), "a first test to start")
    gates.open(first)
    wait_for(lambda: cluster.tests(run_id).get(first, {}).get("status") == "passed", "the first test to pass")
    second = wait_for(lambda: next((t for t in ids if t != first and gates.started(t)), None), "a second test to start")
    pid = int((gates.dir / (second.replace("/", "_") + ".started")).read_text())
    wait_for(lambda: cluster.client.call("status", run_id=run_id)["counts"]["cpu"].get("running") == 1,
             "the coordinator to know the second test runs")

    cancelled = subprocess.run(dtf_cmd("cancel", run_id), env=cluster.env, cwd=tmp_path, capture_output=True, text=True,
                               timeout=60)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"run {run_id} cancelled: 1 tests had finished and are kept, 2 queued dropped, 1 running stopped" in cancelled.stdout

    def gone() -> bool:
        try:
            Path(f"/proc/{pid}").stat()
        except FileNotFoundError:
            return True
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"

    wait_for(gone, "the running test's process to be killed")
    tests = cluster.tests(run_id)
    assert tests[first]["status"] == "passed"  # kept
    assert {tid: (t["status"], t["reason"]) for tid, t in tests.items() if tid != first} == {
        tid: ("skipped", "cancelled") for tid in ids if tid != first}
    status = subprocess.run(dtf_cmd("status", run_id), env=cluster.env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert status.returncode == 2 and "state: cancelled" in status.stdout
    assert f"run {run_id} was cancelled" in status.stderr
    assert all(not gates.started(t) for t in ids if t not in (first, second))  # the dropped ones never ran
    report = subprocess.run(dtf_cmd("report", run_id, "--format", "md"), env=cluster.env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert report.returncode == 2  # a cancelled run did not finish
    again = subprocess.run(dtf_cmd("cancel", run_id), env=cluster.env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "had already ended (cancelled)" in again.stderr


# -- the worker's control round --------------------------------------------------------------
class _Coordinator:
    """What WorkerControl asks of a coordinator client: the routes query's answer."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer

    def call(self, op: str, **params: Any) -> Any:
        assert op == "routes"
        return self.answer


def test_an_infrastructure_error_makes_the_worker_check_its_hardware_again(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from dtf.app import make_app
    from dtf.model import RenderedTest, TestSpec
    from dtf.settings import Settings
    from dtf.worker import WorkerRuntime
    from dtf.worker_control import WorkerControl, initial_checks

    runtime = WorkerRuntime(make_app(Settings(spool_dir=str(tmp_path / "spool"))), worker_id="w@test", queues=["dtf.cpu"],
                            profile=H100, health_checks=True)
    assert initial_checks(runtime) == {"cpu": None}
    queue = route_queue("cpu", {"cpu_cores": 16.0})
    control = WorkerControl(runtime, lambda: _Coordinator({"routes": [
        {"queue": queue, "hardware": "cpu", "requires": {"cpu_cores": 16}, "label": "cpu_cores>=16"}], "cancelled": []}),
        interval_s=1.0, check_interval_s=3600.0)
    control.step()
    assert runtime.routing.desired() == ["dtf.cpu", queue] and not runtime.recheck.is_set()

    # A test that crashes (an infrastructure error) flags a re-check; the next round runs it.
    spec = TestSpec("crash/cpu/bs1/fp32", "crash", "generic", "cpu", 1, "fp32", "generic/x", timeout_s=60)
    runtime.handle({"run_id": "run-x", "attempt": 1, "test": RenderedTest(spec, "import os\nos._exit(3)\n", "h").to_dict()})
    assert runtime.flush_results()  # results leave on the sender's thread
    assert runtime.recheck.is_set()
    monkeypatch.setenv("DTF_HEALTHCHECK_FAIL", "cpu")  # the documented test hook: the check now fails
    control.step()
    assert not runtime.recheck.is_set()
    assert runtime.routing.desired() == [] and runtime.heartbeat_body()["worker"]["queues"] == []
    assert runtime.health_report()["routing"]["unhealthy"] == {"cpu": "failed by DTF_HEALTHCHECK_FAIL (test hook)"}
    monkeypatch.delenv("DTF_HEALTHCHECK_FAIL")
    runtime.recheck.set()
    control.step()
    assert runtime.routing.desired() == ["dtf.cpu", queue]
