"""Worker health: what a sample measures (recorded nvidia-smi / rocm-smi outputs, cgroup
files, this machine), and what the coordinator does with heartbeats: the latest health in
the workers table, a bounded history, offline after silence, in-flight tests re-published."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import pytest

from dtf.app import make_app
from dtf.coordinator import WORKER_OFFLINE_AFTER_S, Coordinator
from dtf.health import NVIDIA_HEALTH_ARGV, ROCM_HEALTH_ARGV, HealthSampler, cgroup_memory_percent
from dtf.model import GpuInfo, HardwareProfile, RenderedTest, TestSpec
from dtf.settings import Settings
from dtf.store import Store

from .memory_broker import drain, submit

FIXTURES = Path(__file__).parent / "fixtures" / "hardware"
NVIDIA_H100 = (FIXTURES / "nvidia-smi_query-gpu_csv_h100-80gb-hbm3_allfields.csv").read_text()
ROCM_MI100 = (FIXTURES / "rocm-smi_json_4x-mi100_rocm602.json").read_text()


def gpu_host(*vendors: str) -> HardwareProfile:
    return HardwareProfile(platform="linux", gpus=tuple(GpuInfo(v, f"{v} card", index=0) for v in vendors))


class FakeTools:
    """Answers tool invocations from recorded outputs and remembers what was asked."""

    def __init__(self, outputs: dict[str, str]) -> None:
        self.outputs = outputs
        self.asked: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str], timeout: float) -> tuple[int, str, str]:
        self.asked.append(tuple(argv))
        if argv[0] not in self.outputs:
            raise FileNotFoundError(argv[0])
        return 0, self.outputs[argv[0]], ""


def test_gpu_health_comes_from_recorded_nvidia_smi_and_rocm_smi_outputs() -> None:
    tools = FakeTools({"nvidia-smi": NVIDIA_H100, "rocm-smi": ROCM_MI100})
    sample = HealthSampler(gpu_host("nvidia", "amd"), run=tools).sample()
    assert tools.asked == [NVIDIA_HEALTH_ARGV, ROCM_HEALTH_ARGV]
    h100, mi100 = sample.gpus[0], sample.gpus[1]
    assert (h100.vendor, h100.name, h100.memory_total_mb, h100.utilization_percent) == (
        "nvidia", "NVIDIA H100 80GB HBM3", 81559.0, 0.0)
    assert mi100.vendor == "amd" and mi100.memory_percent == pytest.approx(0.0, abs=0.1)
    assert len(sample.gpus) == 5  # one H100, four MI100s


def test_gpu_memory_percent_is_the_fullest_gpu() -> None:
    # Constructed (no recorded sample has load): nvidia-smi in the exact order health asks for.
    csv = "0, NVIDIA H100, GPU-a, 81559, 40779, 97, 590.48.01, 9.0\n1, NVIDIA H100, GPU-b, 81559, 8155, 3, 590.48.01, 9.0\n"
    sample = HealthSampler(gpu_host("nvidia"), run=FakeTools({"nvidia-smi": csv})).sample()
    assert [g.utilization_percent for g in sample.gpus] == [97.0, 3.0]
    assert sample.gpu_memory_percent == 50.0
    assert sample.to_dict()["gpus"][0]["memory_percent"] == 50.0


def test_a_machine_without_gpus_never_runs_a_gpu_tool() -> None:
    tools = FakeTools({})
    assert HealthSampler(gpu_host(), run=tools).sample().gpus == ()
    assert tools.asked == []


def test_a_missing_gpu_tool_costs_the_gpu_numbers_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    sampler = HealthSampler(gpu_host("nvidia"), run=FakeTools({}))
    with caplog.at_level(logging.WARNING, logger="dtf.health"):
        assert sampler.sample().gpus == () and sampler.sample().gpus == ()
    assert len([r for r in caplog.records if "nvidia-smi gave no GPU health" in r.message]) == 1


def files(contents: dict[str, str]) -> Any:
    return lambda path: contents.get(path)


def test_memory_is_measured_against_a_cgroup_limit_without_page_cache() -> None:
    v2 = {"/sys/fs/cgroup/memory.max": "1073741824\n", "/sys/fs/cgroup/memory.current": "536870912\n",
          "/sys/fs/cgroup/memory.stat": "anon 1\ninactive_file 268435456\nactive_file 2\n"}
    assert cgroup_memory_percent(files(v2)) == 25.0
    v1 = {"/sys/fs/cgroup/memory/memory.limit_in_bytes": "2147483648", "/sys/fs/cgroup/memory/memory.usage_in_bytes":
          "1073741824", "/sys/fs/cgroup/memory/memory.stat": "total_inactive_file 0\n"}
    assert cgroup_memory_percent(files(v1)) == 50.0


def test_no_cgroup_limit_means_host_memory_only() -> None:
    unlimited_v1 = (FIXTURES / "cgroup1_memory.limit_in_bytes_unlimited.txt").read_text()
    assert cgroup_memory_percent(files({"/sys/fs/cgroup/memory.max": "max\n", "/sys/fs/cgroup/memory.current": "5"})) is None
    assert cgroup_memory_percent(files({"/sys/fs/cgroup/memory/memory.limit_in_bytes": unlimited_v1,
                                        "/sys/fs/cgroup/memory/memory.usage_in_bytes": "5"})) is None
    assert cgroup_memory_percent(files({})) is None


def test_a_sample_of_this_machine_is_in_range() -> None:
    sample = HealthSampler(None, disk_path=".").sample()
    assert 0.0 <= sample.cpu_percent <= 100.0 and 0.0 < sample.memory_percent <= 100.0
    assert sample.disk_free_gb is not None and sample.disk_free_gb > 0
    assert sample.load is None or len(sample.load) == 3


# -- the coordinator side ----------------------------------------------------------------------
def heartbeat(worker_id: str, *, state: str = "online", running: Sequence[tuple[str, str, int]] = (),
              interval_s: float = 10.0, cpu: float = 12.0) -> dict[str, Any]:
    health = {"cpu_percent": cpu, "memory_percent": 40.0, "heartbeat_interval_s": interval_s,
              "running_tests": [{"run_id": r, "test_id": t, "attempt": a} for r, t, a in running]}
    return {"op": "heartbeat", "worker": {"worker_id": worker_id, "hostname": "h", "platform": "linux",
                                          "hardware": {}, "queues": ["dtf.cpu"], "state": state, "health": health,
                                          "last_seen": 1.0}}  # a worker clock far off: not used


@pytest.fixture
def coordinator(tmp_path: Path) -> Any:
    app = make_app(Settings(spool_dir=str(tmp_path / "spool")))
    store = Store(tmp_path / "c.duckdb")
    yield Coordinator(app, store)
    store.close()


def test_the_coordinator_keeps_the_latest_health_and_a_bounded_history(coordinator: Coordinator) -> None:
    for cpu in range(5):
        coordinator._on_heartbeat(heartbeat("w1", cpu=float(cpu)))
    [row] = coordinator.store.workers()
    assert row["state"] == "online" and row["health"]["cpu_percent"] == 4.0
    assert row["last_seen"] > time.time() - 60  # the coordinator's clock, not the worker's
    history = coordinator.store.worker_health("w1")
    assert [h["health"]["cpu_percent"] for h in history] == [0.0, 1.0, 2.0, 3.0, 4.0]
    for i in range(6):
        coordinator.store.record_worker_health("w1", 1e12 + i, "online", {"cpu_percent": 50.0 + i}, keep=3)
    assert [h["health"]["cpu_percent"] for h in coordinator.store.worker_health("w1")] == [53.0, 54.0, 55.0]


def test_a_silent_worker_is_marked_offline_after_the_documented_interval(coordinator: Coordinator) -> None:
    coordinator._on_heartbeat(heartbeat("quick", interval_s=1.0))
    coordinator._on_heartbeat(heartbeat("slow", interval_s=60.0))  # offline only after 3 x 60 s
    now = time.time()
    coordinator._reconcile(now + WORKER_OFFLINE_AFTER_S - 5)
    assert {w["worker_id"]: w["state"] for w in coordinator.store.workers()} == {"quick": "online", "slow": "online"}
    coordinator._reconcile(now + WORKER_OFFLINE_AFTER_S + 5)
    assert {w["worker_id"]: w["state"] for w in coordinator.store.workers()} == {"quick": "offline", "slow": "online"}
    coordinator._reconcile(now + 181)
    assert {w["state"] for w in coordinator.store.workers()} == {"offline"}


def test_a_worker_that_stops_cleanly_is_offline_at_once(coordinator: Coordinator) -> None:
    coordinator._on_heartbeat(heartbeat("w1"))
    coordinator._on_heartbeat(heartbeat("w1", state="offline"))
    assert coordinator.store.workers()[0]["state"] == "offline"
    assert "w1" not in coordinator.workers


def test_workers_only_the_database_remembers_are_marked_offline_too(tmp_path: Path) -> None:
    with Store(tmp_path / "old.duckdb") as store:
        store.upsert_worker({"worker_id": "ghost", "state": "online", "last_seen": time.time() - 3600})
        store.upsert_worker({"worker_id": "fresh", "state": "online", "last_seen": time.time()})
        assert store.mark_silent_workers(time.time(), WORKER_OFFLINE_AFTER_S) == ["ghost"]
        assert store.mark_silent_workers(time.time(), WORKER_OFFLINE_AFTER_S) == []


def test_a_dead_workers_running_test_is_published_again_with_the_same_attempt(coordinator: Coordinator) -> None:
    drain(coordinator.app, "dtf.cpu")
    spec = TestSpec("m/cpu/bs1/fp32", "m", "generic", "cpu", 1, "fp32", "generic/x")
    submit(coordinator, {"run_id": "run-d", "suite_name": "s"}, [RenderedTest(spec, "print(1)", "h")])
    assert len(drain(coordinator.app, "dtf.cpu")) == 1  # the first publish, taken by the worker
    coordinator._on_started({"run_id": "run-d", "test_id": spec.test_id, "attempt": 1, "worker_id": "dead"})
    coordinator._on_heartbeat(heartbeat("dead", running=[("run-d", spec.test_id, 1)]))
    coordinator._on_heartbeat(heartbeat("alive"))
    coordinator._reconcile(time.time() + WORKER_OFFLINE_AFTER_S + 5)
    [again] = drain(coordinator.app, "dtf.cpu")
    assert again.headers["id"] == f"run-d:{spec.test_id}:1"
    assert again.decode()[0][0]["attempt"] == 1


@pytest.mark.redis
def test_dtf_workers_shows_health_and_watch_keeps_refreshing_until_interrupted(
    tmp_path: Path, redis_server: Any, processes: Any
) -> None:
    import signal
    import subprocess

    from .conftest import dtf_cmd
    from .dtf_cluster import Cluster

    cluster = Cluster(tmp_path, redis_server, processes)
    cluster.start_coordinator()
    cluster.start_worker("healthy@test")
    proc = subprocess.run(dtf_cmd("workers"), env=cluster.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if "healthy@test" in line)
    assert "online" in row and "dtf.cpu" in row and "test" in row
    watch = subprocess.Popen(dtf_cmd("workers", "--watch", "--interval", "0.5"), env=cluster.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert watch.stdout is not None
        tables = 0
        for line in watch.stdout:  # a pipe: one whole table per refresh
            tables += "workers (" in line
            if tables >= 2:
                break
        watch.send_signal(signal.SIGINT)
        assert watch.wait(30) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
