"""The resource guard's logic (pure: samples and times in, a verdict out) and how the
worker runtime applies the verdict to its Celery consumer. The real worker with a real
memory hog is in test_worker_guard.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from celery.exceptions import Reject
from hypothesis import given
from hypothesis import strategies as st

from dtf.app import make_app
from dtf.bus import task_payload as payload_for
from dtf.guard import GuardLimits, ResourceGuard, crossed_limits
from dtf.health import GpuHealth, HealthSample
from dtf.model import RenderedTest, TestSpec
from dtf.settings import Settings
from dtf.worker import WorkerRuntime


def sample(cpu: float = 10.0, memory: float = 10.0, gpu_used_mb: float | None = None) -> HealthSample:
    gpus = () if gpu_used_mb is None else (GpuHealth("nvidia", "H100", 0, 5.0, gpu_used_mb, 1000.0),)
    return HealthSample(cpu_percent=cpu, memory_percent=memory, gpus=gpus)


def test_no_limits_means_the_guard_is_inactive_and_always_accepts() -> None:
    guard = ResourceGuard(GuardLimits())
    assert not guard.limits.active
    assert guard.observe(sample(cpu=100, memory=100), now=0.0).accepting


def test_crossing_a_limit_stops_intake_at_once_and_names_the_reason() -> None:
    guard = ResourceGuard(GuardLimits(max_memory_percent=80, cooldown_s=30))
    state = guard.observe(sample(memory=93.14), now=5.0)
    assert not state.accepting
    assert state.reasons == ("memory 93.1% > 80%",)
    assert state.changed_at == 5.0


def test_intake_resumes_only_after_a_whole_cool_down_below_every_limit() -> None:
    guard = ResourceGuard(GuardLimits(max_cpu_percent=90, cooldown_s=30))
    guard.observe(sample(cpu=95), now=0.0)
    assert not guard.observe(sample(cpu=50), now=10.0).accepting  # below since 10
    assert not guard.observe(sample(cpu=50), now=39.0).accepting
    assert guard.observe(sample(cpu=50), now=40.0).accepting


def test_a_spike_during_the_cool_down_restarts_it() -> None:
    guard = ResourceGuard(GuardLimits(max_cpu_percent=90, cooldown_s=30))
    guard.observe(sample(cpu=95), now=0.0)
    guard.observe(sample(cpu=50), now=10.0)
    assert not guard.observe(sample(cpu=99), now=35.0).accepting
    assert not guard.observe(sample(cpu=50), now=50.0).accepting
    assert guard.observe(sample(cpu=50), now=80.0).accepting


def test_gpu_memory_counts_the_fullest_gpu_and_is_ignored_when_not_measurable() -> None:
    limits = GuardLimits(max_gpu_memory_percent=90)
    assert crossed_limits(limits, sample(gpu_used_mb=950.0)) == ("gpu memory 95.0% > 90%",)
    assert crossed_limits(limits, sample(gpu_used_mb=None)) == ()


@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 100)), min_size=1, max_size=40))
def test_the_guard_never_accepts_while_a_limit_is_crossed(readings: list[tuple[float, float]]) -> None:
    guard = ResourceGuard(GuardLimits(max_cpu_percent=70, max_memory_percent=70, cooldown_s=3))
    for t, (cpu, memory) in enumerate(readings):
        state = guard.observe(sample(cpu=cpu, memory=memory), now=float(t))
        if cpu > 70 or memory > 70:
            assert not state.accepting


# -- the runtime applies the verdict ------------------------------------------------------------
class _Queues(dict):  # type: ignore[type-arg]
    """Stands in for the app's ``amqp.queues``: the queues declared so far, by name."""

    def add(self, queue: Any) -> None:
        self[queue.name] = queue


class RecordingConsumer:
    """Stands in for celery's Consumer: records queue cancels and adds."""

    def __init__(self) -> None:
        self.task_consumer = object()
        self.calls: list[tuple[str, str]] = []
        self.app = SimpleNamespace(amqp=SimpleNamespace(queues=_Queues()))

    def cancel_task_queue(self, queue: str) -> None:
        self.calls.append(("cancel", queue))

    def add_task_queue(self, queue: str) -> None:
        self.calls.append(("add", queue))


@pytest.fixture
def runtime(tmp_path: Path) -> WorkerRuntime:
    app = make_app(Settings(spool_dir=str(tmp_path / "spool")))
    return WorkerRuntime(app, worker_id="w@test", queues=["dtf.cpu", "dtf.tag.big"],
                         limits=GuardLimits(max_memory_percent=50, cooldown_s=0))


def test_the_runtime_cancels_every_queue_when_constrained_and_restores_them_after(runtime: WorkerRuntime) -> None:
    consumer = RecordingConsumer()
    runtime.sync_consumers(consumer)
    assert consumer.calls == []
    assert runtime.observe(sample(memory=60), now=0.0)
    runtime.sync_consumers(consumer)
    runtime.sync_consumers(consumer)  # idempotent
    assert consumer.calls == [("cancel", "dtf.cpu"), ("cancel", "dtf.tag.big")]
    assert runtime.state == "constrained" and runtime.consuming is False
    assert runtime.observe(sample(memory=40), now=1.0)
    runtime.sync_consumers(consumer)
    assert consumer.calls[2:] == [("add", "dtf.cpu"), ("add", "dtf.tag.big")]
    assert runtime.state == "online" and runtime.consuming is True


def test_a_test_prefetched_before_the_consumer_was_cancelled_goes_back_to_the_queue(runtime: WorkerRuntime) -> None:
    spec = TestSpec("m/cpu/bs1/fp32", "m", "generic", "cpu", 1, "fp32", "generic/cpu")
    payload = payload_for("run-1", 1, RenderedTest(spec, "print('never runs')", "h"))
    runtime.observe(sample(memory=60), now=0.0)
    runtime.sync_consumers(RecordingConsumer())
    with pytest.raises(Reject) as caught:
        runtime.handle(payload)
        assert runtime.flush_results()  # results leave on the sender's thread
    assert caught.value.requeue is True
    assert runtime.running == 0


def test_heartbeats_carry_health_guard_state_and_running_tests(runtime: WorkerRuntime) -> None:
    runtime.observe(sample(cpu=12.5, memory=60), now=0.0)
    body: dict[str, Any] = runtime.heartbeat_body()
    worker = body["worker"]
    assert body["op"] == "heartbeat" and worker["state"] == "constrained"
    health = worker["health"]
    assert health["cpu_percent"] == 12.5 and health["memory_percent"] == 60
    assert health["guard"]["reasons"] == ["memory 60.0% > 50%"]
    assert health["guard"]["limits"]["max_memory_percent"] == 50
    assert health["running"] == 0 and health["running_tests"] == []
    assert health["profile"] == "test" and health["heartbeat_interval_s"] == 10.0
    assert runtime.heartbeat_body(state="offline")["worker"]["state"] == "offline"
