"""Execution profiles: concurrency, prefetch and default timeouts per profile, and the
benchmark profile's one-test-per-device slots (a real test subprocess sees its device)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from dtf.app import make_app
from dtf.bus import RESULTS_QUEUE
from dtf.bus import task_payload as payload_for
from dtf.model import GpuInfo, HardwareProfile, RenderedTest, TestSpec
from dtf.settings import Settings
from dtf.worker import PROFILES, DeviceSlots, WorkerRuntime, devices_for

from .memory_broker import drain

CPU_AND_CUDA = ["dtf.cpu", "dtf.cuda"]


def host(gpus: int = 0, cores: int = 8, mig: bool = False) -> HardwareProfile:
    cards = tuple(
        GpuInfo("nvidia", "H100", memory_mb=81920, index=i, uuid=f"MIG-{i}" if mig else f"GPU-{i}", mig=mig)
        for i in range(gpus)
    )
    return HardwareProfile(platform="linux", logical_cores=cores, memory_total_mb=65536, gpus=cards,
                           hardware_kinds=("cpu", "cuda") if gpus else ("cpu",))


def spec(hardware: str = "cpu", timeout_s: float = 300.0) -> TestSpec:
    return TestSpec(f"m/{hardware}/bs1/fp32", "m", "generic", hardware, 1, "fp32", "generic/x", timeout_s=timeout_s)


def test_benchmark_runs_one_test_per_device() -> None:
    assert PROFILES["benchmark"].concurrency(host(gpus=4), CPU_AND_CUDA) == 5  # 4 GPUs + the CPU
    assert PROFILES["benchmark"].concurrency(host(gpus=4), ["dtf.cuda"]) == 4
    assert PROFILES["benchmark"].concurrency(host(), ["dtf.cpu"]) == 1
    assert PROFILES["benchmark"].prefetch_multiplier == 1


def test_test_profile_runs_two_at_a_time_or_one_per_gpu_if_more() -> None:
    assert PROFILES["test"].concurrency(host(), ["dtf.cpu"]) == 2
    assert PROFILES["test"].concurrency(host(gpus=8), CPU_AND_CUDA) == 8


def test_light_profile_runs_many_and_prefetches() -> None:
    light = PROFILES["light"]
    assert light.concurrency(host(cores=2), ["dtf.cpu"]) == 4
    assert light.concurrency(host(cores=8), ["dtf.cpu"]) == 16
    assert light.concurrency(host(cores=128), ["dtf.cpu"]) == 32
    assert light.prefetch_multiplier > 1


def test_a_profile_default_timeout_only_replaces_the_built_in_one_and_never_lengthens() -> None:
    light, benchmark = PROFILES["light"], PROFILES["benchmark"]
    assert light.timeout_for(spec()) == 60.0
    assert light.timeout_for(spec(timeout_s=30.0)) == 30.0
    assert light.timeout_for(spec(timeout_s=900.0)) == 900.0
    assert benchmark.timeout_for(spec()) == 300.0


def test_devices_are_gpu_indices_or_mig_instances_and_the_cpu_is_one_device() -> None:
    assert devices_for(host(gpus=2), CPU_AND_CUDA) == {"cpu": ["cpu"], "cuda": ["0", "1"]}
    assert devices_for(host(gpus=2, mig=True), ["dtf.cuda"]) == {"cuda": ["MIG-0", "MIG-1"]}
    assert devices_for(None, ["dtf.cpu", "dtf.tag.big"]) == {"cpu": ["cpu"]}


def test_device_slots_give_each_test_its_own_gpu_and_make_the_next_wait() -> None:
    slots = DeviceSlots({"cuda": ["0", "1"], "cpu": ["cpu"]})
    with slots.hold("cuda") as first, slots.hold("cuda") as second:
        assert {first["CUDA_VISIBLE_DEVICES"], second["CUDA_VISIBLE_DEVICES"]} == {"0", "1"}
        got: list[dict[str, str]] = []
        acquired = threading.Event()

        def third() -> None:
            with slots.hold("cuda") as env:
                got.append(env)
                acquired.set()

        waiter = threading.Thread(target=third)
        waiter.start()
        assert not acquired.wait(0.2)  # both GPUs are held
    waiter.join(10)
    assert acquired.is_set() and got[0]["CUDA_VISIBLE_DEVICES"] in {"0", "1"}
    with slots.hold("cpu") as env:
        assert env == {}
    with slots.hold("rocm") as env:  # a kind without slots is not held back
        assert env == {}


@pytest.mark.slow
def test_a_benchmark_worker_pins_each_gpu_test_to_its_device(tmp_path: Path) -> None:
    app = make_app(Settings(spool_dir=str(tmp_path / "spool")))
    drain(app, RESULTS_QUEUE)
    runtime = WorkerRuntime(app, worker_id="bench@test", queues=["dtf.cuda"], profile=host(gpus=1),
                            execution=PROFILES["benchmark"])
    source = ("import os\nfrom dtf import harness\n"
              "harness.run(lambda h: h.metric('device', os.environ.get('CUDA_VISIBLE_DEVICES')))\n")
    runtime.handle(payload_for("run-b", 1, RenderedTest(spec("cuda"), source, "h")))
    assert runtime.flush_results()  # results leave on the sender's thread
    [message] = drain(app, RESULTS_QUEUE)
    result = message.decode()["result"]
    assert result["status"] == "passed" and result["metrics"]["device"] == "0"


@pytest.mark.parametrize("args, message", [
    (["--profile", "turbo"], "--profile: unknown profile 'turbo' (expected one of benchmark, test, light)"),
    (["--max-memory-percent", "150"], "--max-memory-percent: expected a percentage in (0, 100], got 150"),
])
def test_bad_worker_options_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    import subprocess

    from .conftest import dtf_cmd, dtf_env, free_port

    proc = subprocess.run(dtf_cmd("worker", *args), env=dtf_env(DTF_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0"),
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
