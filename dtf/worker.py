"""The worker side: what `dtf worker` adds around a Celery worker.

``WorkerRuntime.handle`` is the body of the run_test task: check the test fits this
machine, run it in a subprocess (saying it started if it runs for more than a moment), write the result to a local spool file,
publish it to ``dtf.results`` (with backoff across a broker failover, dtf.resend), then
delete the spool file. If the broker is still away after that, the spool keeps it and the
spool replayer publishes it while the worker runs (and ``replay_spool`` at the next start),
so a finished result is never lost.

Around that: an execution profile (benchmark, test, light) sets concurrency, prefetch,
default timeouts and whether each test gets a device to itself; a heartbeat thread
samples the machine's health, feeds the resource guard and reports both to the
coordinator; and a consumer bootstep cancels and restores the queue consumers as the
guard says, so an overloaded worker takes no new tests while running ones finish.
A test that needs more memory than this machine has goes back to its queue for a bigger
worker, at most ``max_rejections`` times, then fails with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from celery import bootsteps
from celery.exceptions import Reject

from . import runner
from .app import DtfApp
from .bus import RESULTS_QUEUE, producer_batch, publish_control, result_body, results_queue, send_test, task_queue, \
    wire_format
from .guard import GuardLimits, GuardState, ResourceGuard
from .hardware import cpu_capacity, memory_capacity_gb
from .health import HealthSample, HealthSampler
from .stack import fingerprint as stack_fingerprint
from .model import HARDWARE_KINDS, HardwareProfile, RenderedTest, TestResult, TestSpec, queue_for
from .reservations import Reservations
from .routing import RouteTable
from .lognoise import one_line
from .resend import RecentResults, ResultSender, Spool, SpoolReplayer

__all__ = [
    "WorkerRuntime",
    "ExecutionProfile",
    "PROFILES",
    "DeviceSlots",
    "devices_for",
    "memory_capacity_for",
    "DEFAULT_MAX_REJECTIONS",
    "HEARTBEAT_INTERVAL_S",
]

log = logging.getLogger("dtf.worker")

HEARTBEAT_INTERVAL_S = 10.0
GUARD_SAMPLE_S = 2.0  # how often the guard looks at the machine when limits are set
CONSUMER_SYNC_S = 0.5  # how often the consumer bootstep applies the guard's verdict
DEFAULT_MAX_REJECTIONS = 5
STARTED_NOTICE_AFTER_S = 0.25  # a test still running by then is reported as started
REDELIVERY_CHECK_S = 5.0  # how long a redelivered task waits for the coordinator's word on it
RECHECK_SETTLE_S = 1.5  # a copy sent again after a lost connection asks twice, this far apart
_BUILTIN_TIMEOUT_S = next(f.default for f in dataclasses.fields(TestSpec) if f.name == "timeout_s")
_VISIBLE_DEVICES_ENV = {"cuda": "CUDA_VISIBLE_DEVICES", "rocm": "HIP_VISIBLE_DEVICES"}
_GPU_VENDOR = {"cuda": "nvidia", "rocm": "amd"}


# -- execution profiles --------------------------------------------------------------------
@dataclass(frozen=True)
class ExecutionProfile:
    """How a worker runs tests: how many at once, how many it prefetches, default timeout."""

    name: str
    prefetch_multiplier: int
    exclusive_devices: bool  # one test at a time per device (GPU, or the CPU as one device)
    default_timeout_s: float | None  # replaces the built-in default; never lengthens a timeout
    min_concurrency: int
    per_core: float = 0.0  # extra concurrency per usable CPU core

    def concurrency(self, hw: HardwareProfile | None, queues: Sequence[str]) -> int:
        if self.exclusive_devices:
            return max(1, sum(len(ids) for ids in devices_for(hw, queues).values()))
        gpus = sum(len(ids) for kind, ids in devices_for(hw, queues).items() if kind != "cpu")
        by_cores = int(self.per_core * cpu_capacity(hw)) if hw is not None else 0
        return min(32, max(self.min_concurrency, gpus, by_cores))

    def timeout_for(self, spec: TestSpec) -> float:
        """The spec's timeout, or this profile's default when the suite left the built-in one.

        Only ever shorter: the coordinator re-publishes a test silent past its spec's timeout.
        """
        if self.default_timeout_s is not None and spec.timeout_s == _BUILTIN_TIMEOUT_S:
            return min(spec.timeout_s, self.default_timeout_s)
        return spec.timeout_s


PROFILES: Mapping[str, ExecutionProfile] = {
    # Timing runs: nothing else on the device while a test measures it.
    "benchmark": ExecutionProfile("benchmark", prefetch_multiplier=1, exclusive_devices=True,
                                  default_timeout_s=None, min_concurrency=1),
    # Correctness tests: a couple at a time, no prefetch beyond what runs.
    "test": ExecutionProfile("test", prefetch_multiplier=1, exclusive_devices=False,
                             default_timeout_s=None, min_concurrency=2),
    # Many small tests: high concurrency, prefetch to hide broker round trips, short timeouts.
    "light": ExecutionProfile("light", prefetch_multiplier=4, exclusive_devices=False,
                              default_timeout_s=60.0, min_concurrency=4, per_core=2.0),
}


def devices_for(hw: HardwareProfile | None, queues: Sequence[str]) -> dict[str, list[str]]:
    """Device ids per hardware kind this worker serves: "cpu" for the CPU, GPU indices
    (MIG instance UUIDs where MIG is on) for cuda and rocm, one device for mps/webgpu."""
    kinds = [k for k in HARDWARE_KINDS if queue_for(k) in queues]
    devices: dict[str, list[str]] = {}
    for kind in kinds:
        vendor = _GPU_VENDOR.get(kind)
        if vendor is None:
            devices[kind] = [kind]
            continue
        gpus = [g for g in (hw.gpus if hw else ()) if g.vendor == vendor]
        ids = [str(g.uuid if g.mig and g.uuid else g.index) for g in gpus if g.index is not None or g.mig]
        devices[kind] = ids or [kind]
    return devices


class DeviceSlots:
    """Hands each test a device of its kind, waiting while all are busy (benchmark profile)."""

    def __init__(self, devices: Mapping[str, Sequence[str]]) -> None:
        self._free = {kind: list(ids) for kind, ids in devices.items()}
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, kind: str) -> Iterator[dict[str, str]]:
        """Environment that pins the test to its device, e.g. {"CUDA_VISIBLE_DEVICES": "1"}."""
        if kind not in self._free:
            yield {}
            return
        with self._cond:
            self._cond.wait_for(lambda: bool(self._free[kind]))
            device = self._free[kind].pop(0)
        try:
            var = _VISIBLE_DEVICES_ENV.get(kind)
            yield {var: device} if var and device != kind else {}
        finally:
            with self._cond:
                self._free[kind].append(device)
                self._cond.notify_all()


def memory_capacity_for(kind: str, hw: HardwareProfile | None) -> float | None:
    """GiB a test of this hardware kind may use here: the largest GPU's memory for cuda and
    rocm (TestSpec.memory_gb is device memory there), host memory otherwise; None if unknown."""
    if hw is None:
        return None
    vendor = _GPU_VENDOR.get(kind)
    if vendor is None:
        return memory_capacity_gb(hw)
    sizes = [g.memory_mb for g in hw.gpus if g.vendor == vendor and g.memory_mb]
    return max(sizes) / 1024 if sizes else None


class DelayedNotices:
    """Sends a message for a key unless the key is cancelled within ``delay_s``.

    One daemon thread for all keys: a timer thread per test cost about a millisecond of
    start-up handshake each, as much as forking the test."""

    def __init__(self, send: Callable[[Mapping[str, Any]], None], delay_s: float) -> None:
        self._send = send
        self._delay_s = delay_s
        self._due: dict[Any, tuple[float, Mapping[str, Any]]] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, key: Any, body: Mapping[str, Any]) -> None:
        with self._cond:
            self._due[key] = (time.monotonic() + self._delay_s, body)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True, name="dtf-notices")
                self._thread.start()
            self._cond.notify()

    def cancel(self, key: Any) -> None:
        with self._cond:
            self._due.pop(key, None)

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._due:
                    self._cond.wait()
                    continue
                key, (when, body) = min(self._due.items(), key=lambda item: item[1][0])
                left = when - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                del self._due[key]
            self._send(body)


# -- the runtime ---------------------------------------------------------------------------
class WorkerRuntime:
    """Per-process worker state: identity, spool, health, guard, and how results leave the machine."""

    def __init__(
        self,
        app: DtfApp,
        *,
        worker_id: str,
        queues: Sequence[str],
        profile: HardwareProfile | None = None,
        spool_dir: str | Path | None = None,
        test_env: Mapping[str, str] | None = None,
        execution: ExecutionProfile = PROFILES["test"],
        limits: GuardLimits | None = None,
        sampler: HealthSampler | None = None,
        max_rejections: int = DEFAULT_MAX_REJECTIONS,
        heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
        tags: Sequence[str] = (),
        health_checks: bool = False,
    ) -> None:
        self.app = app
        self.worker_id = worker_id
        self.hostname = socket.gethostname()
        self.queues = tuple(queues)
        self.profile = profile
        self.spool = Path(spool_dir or app.settings.spool_dir) / _safe(worker_id)
        self._spool = Spool(self.spool)
        self.recent = RecentResults()  # sent again after a reconnect (dtf.resend.RESEND_WINDOW_S)
        self.sender = ResultSender(self._spool, self._publish_bodies, sent=self.recent.add)
        self._consumer_starts = 0
        self.test_env = dict(test_env) if test_env is not None else None
        self.execution = execution
        self.concurrency = execution.concurrency(profile, self.queues)
        self.slots = DeviceSlots(devices_for(profile, self.queues) if execution.exclusive_devices else {})
        self.guard = ResourceGuard(limits or GuardLimits())
        self.sampler = sampler
        self.max_rejections = max(1, max_rejections)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.health: HealthSample | None = None
        self.consuming = True  # whether the queue consumers are on (the bootstep keeps it true)
        self._running: dict[tuple[str, str, int], float] = {}
        self._lock = threading.Lock()
        self._notices = DelayedNotices(self._send_control, STARTED_NOTICE_AFTER_S)
        # Routing, health gate, reservations and cancel (dtf.routing, dtf.healthcheck,
        # dtf.reservations; dtf.worker_control runs the periodic parts).
        self.routing = RouteTable(self.queues, profile, tags)
        self.reservations = Reservations(lambda kind: memory_capacity_for(kind, profile))
        self.health_checks = health_checks
        self.recheck = threading.Event()  # set after an infrastructure error: check the hardware again
        self.cancelled_runs: set[str] = set()
        self._cancel_events: dict[tuple[str, str, int], threading.Event] = {}
        self.consumed: set[str] = set(self.queues)

    def install(self) -> None:
        """Make this runtime the handler of the app's run_test task."""
        self.app.test_handler = self.handle

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def state(self) -> str:
        return "online" if self.guard.state.accepting else "constrained"

    # -- the task body ------------------------------------------------------------------
    def handle(self, payload: Mapping[str, Any], request: Any = None) -> None:
        try:
            test = RenderedTest.from_dict(payload["test"])
            run_id, attempt = str(payload["run_id"]), int(payload["attempt"])
        except (KeyError, TypeError, ValueError) as exc:
            log.error("dropping malformed run_test payload: %s", exc)
            return
        if not self.guard.state.accepting and not self.consuming:
            # Prefetched before the guard cancelled intake: back to the queue, for a worker
            # that still consumes it (this one no longer does, so it cannot come straight back).
            raise Reject("resource guard: worker constrained", requeue=True)
        if test.spec.hardware in self.routing.unhealthy():
            # Taken before the failed health check cancelled this kind's consumers: back to the queue.
            raise Reject(f"health check failed for {test.spec.hardware}", requeue=True)
        if run_id in self.cancelled_runs:
            log.info("dropping %s of cancelled run %s", test.spec.test_id, run_id)
            return
        if self._rejected_for_memory(payload, test, request):
            return
        # A redelivered task, or a copy the coordinator sent again after a publish was cut off
        # ("recheck"): ask whether it already ran before running it.
        recheck = payload.get("recheck") is True
        if (recheck or _redelivered(request)) and \
                self._already_handled(run_id, test.spec.test_id, attempt, wait_for_others=not recheck):
            return
        self._run(test, run_id, attempt)

    def _already_handled(self, run_id: str, test_id: str, attempt: int, *, wait_for_others: bool = True) -> bool:
        """For a task the broker redelivered (its consumer lost the connection, or died): True
        when running it would only repeat work, because this worker runs it now or the
        coordinator already has its result. The copy is then acked and dropped.

        While another worker says it runs the test (a connection lost in a broker failover
        sends the task back although its test goes on), wait for that result, up to one of
        our heartbeat intervals + 5 s: a live worker's result arrives, a dead worker's test
        runs here. When the coordinator does not answer, the test runs (a second result of
        the same attempt is a no-op). Without ``wait_for_others`` (a copy the coordinator sent
        again after losing the broker connection) a test another live worker runs is dropped
        at once: if that worker dies, its missing heartbeats bring the test back."""
        key = (run_id, test_id, attempt)
        with self._lock:
            if key in self._running:
                log.info("redelivered %s/%s attempt %d: running here already; dropped", run_id, test_id, attempt)
                return True
        from .client import CoordinatorClient  # the client imports the bus; only redeliveries need it

        client = CoordinatorClient(self.app, timeout_s=REDELIVERY_CHECK_S)
        deadline = time.monotonic() + self.heartbeat_interval_s + 5.0
        settled = False
        while True:
            try:
                state = client.call("test_state", run_id=run_id, test_id=test_id, attempt=attempt) or {}
            except Exception as exc:  # noqa: BLE001 - no answer: run it
                log.info("redelivered %s/%s attempt %d: coordinator did not answer (%s); running it", run_id, test_id,
                         attempt, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                return False
            if state.get("final"):
                log.info("redelivered %s/%s attempt %d: its result is in; dropped", run_id, test_id, attempt)
                return True
            others = [w for w in state.get("running_on") or () if w != self.worker_id]
            if not wait_for_others:
                if others:
                    log.info("copy of %s/%s attempt %d: %s runs it; dropped", run_id, test_id, attempt, others[0])
                    return True
                if not settled:
                    # The original may have started a moment ago on another worker: its started
                    # notice (or that worker's heartbeat after the reconnect) comes within this.
                    settled = True
                    time.sleep(RECHECK_SETTLE_S)
                    continue
                return False
            if not others or time.monotonic() >= deadline:
                return False
            time.sleep(1.0)

    def _run(self, test: RenderedTest, run_id: str, attempt: int) -> None:
        spec = test.spec
        key = (run_id, spec.test_id, attempt)
        with self.reservations.hold(spec.hardware, spec.memory_gb), self.slots.hold(spec.hardware) as device_env:
            # Most tests end within milliseconds, and their result says they ran: only a test
            # still running after STARTED_NOTICE_AFTER_S costs the coordinator a started notice.
            self._notices.add(key, {"op": "started", "run_id": run_id, "test_id": spec.test_id, "attempt": attempt,
                                    "worker_id": self.worker_id})
            timeout = self.execution.timeout_for(spec)
            if timeout != spec.timeout_s:
                test = dataclasses.replace(test, spec=dataclasses.replace(spec, timeout_s=timeout))
            env = self._env_with(device_env)
            cancel = threading.Event()
            with self._lock:
                self._running[key] = time.time()
                self._cancel_events[key] = cancel
                if run_id in self.cancelled_runs:
                    cancel.set()
            try:
                result = runner.execute(test, run_id=run_id, attempt=attempt, worker_id=self.worker_id,
                                        hostname=self.hostname, env=env, cancel=cancel)
            finally:
                self._notices.cancel(key)
                with self._lock:
                    self._running.pop(key, None)
                    self._cancel_events.pop(key, None)
        if result.status == "error" and not cancel.is_set():
            self.recheck.set()  # an infrastructure error: check the hardware again before more tests
        self.publish_result(result)

    def cancel_runs(self, run_ids: Sequence[str]) -> int:
        """Stop every running test of these runs (their process groups are killed); later
        deliveries of their tests are dropped. Returns how many running tests were stopped."""
        stopped = 0
        with self._lock:
            self.cancelled_runs.update(run_ids)
            for (run_id, _, _), event in self._cancel_events.items():
                if run_id in run_ids and not event.is_set():
                    event.set()
                    stopped += 1
        if stopped:
            log.warning("%s: stopped %d running tests of cancelled runs %s", self.worker_id, stopped, ", ".join(run_ids))
        return stopped

    def _env_with(self, device_env: Mapping[str, str]) -> dict[str, str] | None:
        """The test's environment plus its device pinning (None: inherit the worker's)."""
        if not device_env:
            return self.test_env
        return {**(self.test_env if self.test_env is not None else os.environ), **device_env}

    # -- memory requirement ---------------------------------------------------------------
    def _rejected_for_memory(self, payload: Mapping[str, Any], test: RenderedTest, request: Any) -> bool:
        """True when the test needs more memory than this machine has: it then went back to
        its queue for a bigger worker, or (after max_rejections) failed with the reason."""
        spec = test.spec
        capacity = memory_capacity_for(spec.hardware, self.profile)
        if capacity is None or not spec.memory_gb or spec.memory_gb <= capacity:
            return False
        rejections = [*_rejections(payload), {"worker_id": self.worker_id, "capacity_gb": round(capacity, 2)}]
        if len(rejections) >= self.max_rejections:
            log.warning("test %s needs %.1f GB; failing it after %d rejections", spec.test_id, spec.memory_gb, len(rejections))
            self.publish_result(self._too_big_result(payload, spec, rejections))
        else:
            log.info("test %s needs %.1f GB, this worker has %.1f GB: back to the queue (%d/%d)",
                     spec.test_id, spec.memory_gb, capacity, len(rejections), self.max_rejections)
            self._republish(dict(payload, rejections=rejections), spec, request)
        return True

    def _republish(self, payload: Mapping[str, Any], spec: TestSpec, request: Any) -> None:
        delivery = getattr(request, "delivery_info", None) or {}
        queue = str(delivery.get("routing_key") or queue_for(spec.hardware))
        task_id = getattr(request, "id", None) or uuid.uuid4().hex
        send_test(self.app, None, payload, queue, task_id)

    def _too_big_result(self, payload: Mapping[str, Any], spec: TestSpec, rejections: Sequence[Mapping[str, Any]]) -> TestResult:
        what = "device memory" if spec.hardware in _GPU_VENDOR else "memory"
        largest = max(float(r.get("capacity_gb") or 0.0) for r in rejections)
        seen = ", ".join(dict.fromkeys(str(r.get("worker_id")) for r in rejections))
        now = time.time()
        return TestResult(
            run_id=str(payload["run_id"]), test_id=spec.test_id, attempt=int(payload["attempt"]), status="error",
            error=(f"needs {spec.memory_gb:g} GB of {what}, more than any worker that took it (largest "
                   f"{largest:g} GB); rejected {len(rejections)} times (limit {self.max_rejections}) by {seen}"),
            worker_id=self.worker_id, hostname=self.hostname, hardware=spec.hardware, started_at=now, finished_at=now,
        )

    # -- results: spool first, then publish ---------------------------------------------
    def publish_result(self, result: TestResult) -> None:
        """Spool the result and publish it (dtf.resend.ResultSender): at once when the broker
        takes it, else on the sender's thread with backoff across a broker failover, while
        the test's slot goes on to its next test; a result still unpublished stays spooled
        for the replayer."""
        result = dataclasses.replace(result, metrics={**dict(result.metrics), "stack_fingerprint": stack_fingerprint()})
        path = self._spool.new_path()
        body = result_body(result)
        self._spool.write(path, body)
        self._spool.try_claim(path)  # a new file: nobody else holds it
        self.sender.send(path, body, f"{result.run_id}/{result.test_id}")

    @property
    def publish_deadline_s(self) -> float:
        """How long the sender retries a publish before the spool's replayer takes over."""
        return self.sender.deadline_s

    @publish_deadline_s.setter
    def publish_deadline_s(self, seconds: float) -> None:
        self.sender.deadline_s = seconds

    def flush_results(self, timeout_s: float = 30.0) -> bool:
        """Wait until every finished result is published (or left to the spool's replayer)."""
        return self.sender.flush(timeout_s)

    def _publish_bodies(self, bodies: Sequence[Mapping[str, Any]], fresh: bool = False) -> None:
        """Publish results in one pipelined batch: on the app's pooled producer, or (``fresh``)
        on a new connection, which asks the Sentinels for the current master."""
        options: dict[str, Any] = dict(exchange="", routing_key=RESULTS_QUEUE, serializer=wire_format(self.app)[0],
                                       declare=[results_queue()])
        if not fresh:
            with self.app.producer_or_acquire() as producer, producer_batch(producer, len(bodies)):
                for body in bodies:
                    producer.publish(body, retry=True, retry_policy={"max_retries": 1, "interval_start": 0.2}, **options)
            return
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=5)
            producer = conn.Producer()
            with producer_batch(producer, len(bodies)):
                for body in bodies:
                    producer.publish(body, retry=False, **options)

    def consumer_started(self) -> None:
        """Celery's consumer (re)started; every start after the first follows a lost connection."""
        self._consumer_starts += 1
        if self._consumer_starts > 1:
            self.recent.mark_lost()
            self.after_reconnect()

    def after_reconnect(self) -> int:
        """The consumer is connected again after losing the broker: publish again, through
        the spool and its replayer, the results sent shortly before the loss (a Sentinel
        failover can drop the old master's last writes; a copy that did arrive is a no-op)."""
        # Which tests run here, at once: started notices sent as the connection dropped are lost.
        threading.Thread(target=lambda: self._send_control(self.heartbeat_body()), name="dtf-beat", daemon=True).start()
        bodies = self.recent.since_loss()
        for body in bodies:
            self._spool.write(self._spool.new_path(), body)
        if bodies:
            log.warning("broker reconnected: publishing again %d results sent just before the connection dropped",
                        len(bodies))
            threading.Thread(target=self._replay_quietly, name="dtf-resend", daemon=True).start()
        return len(bodies)

    def replay_spool(self) -> int:
        """Publish results left in the spool (by an earlier run of this worker, or by a publish
        that gave up while the broker was away); files another thread is publishing are skipped.
        Stops at the first broker error: the rest wait for the next replay."""
        sent = 0
        for path in self._spool.waiting():
            with self._spool.claim(path) as held:
                if not held or not path.exists():
                    continue
                try:
                    body = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    log.warning("cannot replay spooled result %s: %s", path.name, exc)
                    continue
                self._publish_bodies([body], fresh=True)
                path.unlink(missing_ok=True)
                sent += 1
        return sent

    def spool_replayer(self) -> SpoolReplayer:
        """The thread that replays the spool while this worker runs (not started)."""
        return SpoolReplayer(self._replay_quietly)

    def _replay_quietly(self) -> int:
        return self.replay_spool() if self._spool.waiting() else 0

    # -- health, guard and heartbeats --------------------------------------------------------
    def observe(self, sample: HealthSample, now: float) -> bool:
        """Record a health sample and feed it to the guard; True when intake should change."""
        before = self.guard.state.accepting
        self.health = sample
        state: GuardState = self.guard.observe(sample, now)
        if state.accepting != before:
            if state.accepting:
                log.warning("%s: resources back below limits; taking tests again", self.worker_id)
            else:
                log.warning("%s: resource-constrained (%s); taking no new tests", self.worker_id, "; ".join(state.reasons))
        return state.accepting != before

    def heartbeat_body(self, *, state: str | None = None) -> dict[str, Any]:
        profile = self.profile.to_dict() if self.profile else {}
        return {"op": "heartbeat", "worker": {
            "worker_id": self.worker_id, "hostname": self.hostname,
            "platform": profile.get("platform"), "hardware": {**profile, "tags": list(self.routing.tags)},
            "queues": [q for q in self.routing.desired()],
            "state": state or self.state, "health": self.health_report(), "last_seen": time.time(),
        }}

    def health_report(self) -> dict[str, Any]:
        with self._lock:
            running = [{"run_id": r, "test_id": t, "attempt": a, "since": s} for (r, t, a), s in self._running.items()]
        return {
            **(self.health.to_dict() if self.health else {}),
            "running": len(running), "running_tests": running,
            "guard": {**self.guard.state.to_dict(), "limits": self.guard.limits.to_dict(), "consuming": self.consuming},
            "profile": self.execution.name, "concurrency": self.concurrency,
            "routing": self.routing.report(), "reservations": self.reservations.report(),
            "heartbeat_interval_s": self.heartbeat_interval_s, "sent_at": time.time(),
            "stack": stack_fingerprint(),  # what the result cache matches stored results against (dtf/cache.py)
        }

    def heartbeat_forever(self, stop: threading.Event) -> None:
        """Sample health, judge it, and heartbeat: at once when the guard's verdict changes,
        else every heartbeat interval. A last heartbeat says "offline" on a clean stop."""
        sampler = self.sampler or HealthSampler(self.profile, disk_path=str(self.spool))
        tick = min(GUARD_SAMPLE_S, self.heartbeat_interval_s) if self.guard.limits.active else self.heartbeat_interval_s
        next_beat = 0.0
        while not stop.is_set():
            now = time.monotonic()
            changed = self._observe_safely(sampler, now)
            if changed or now >= next_beat:
                self._send_control(self.heartbeat_body())
                next_beat = now + self.heartbeat_interval_s
            stop.wait(tick)
        self._send_control(self.heartbeat_body(state="offline"))

    def _observe_safely(self, sampler: HealthSampler, now: float) -> bool:
        try:
            return self.observe(sampler.sample(), now)
        except Exception as exc:  # noqa: BLE001 - a failed sample must not stop heartbeats
            log.warning("health sample failed: %s", exc)
            return False

    def sync_consumers(self, consumer: Any) -> None:
        """Consume what routing wants (requirement queues taken, kinds with a failed health
        check left), nothing while the guard says overloaded (runs in the consumer's loop)."""
        if consumer.task_consumer is None:
            return
        accepting = self.guard.state.accepting
        want = set(self.routing.desired()) if accepting else set()
        queues = consumer.app.amqp.queues
        for queue in sorted(want - self.consumed):
            if queue not in queues:
                queues.add(task_queue(queue))  # a requirement queue: on the dtf exchange, by its name
            consumer.add_task_queue(queue)
        for queue in sorted(self.consumed - want):
            consumer.cancel_task_queue(queue)
        self.consumed = want
        self.consuming = accepting

    def consumer_step(self) -> type[bootsteps.StartStopStep]:
        """A Celery consumer bootstep that applies the guard's verdict from the event loop,
        where kombu consumers may be touched (`app.steps["consumer"].add(...)`)."""
        return _guard_step(self)

    # -- coordinator messages ----------------------------------------------------------------
    def _send_control(self, body: Mapping[str, Any]) -> None:
        try:
            with self.app.producer_or_acquire() as producer:
                publish_control(producer, body, serializer=wire_format(self.app)[0], retry_policy={"max_retries": 2})
        except Exception as exc:  # noqa: BLE001 - a lost notice must not fail the test
            log.warning("cannot notify coordinator: %s", one_line(str(exc)) or type(exc).__name__)


def _guard_step(runtime: WorkerRuntime) -> type[bootsteps.StartStopStep]:
    class ResourceGuardStep(bootsteps.StartStopStep):
        """Polls the runtime's guard verdict and routing, and cancels or adds task consumers."""

        requires = ("celery.worker.consumer.tasks:Tasks",)

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.tref: Any = None

        def start(self, c: Any) -> None:
            # After a reconnect the consumer restarts from app.amqp.queues.consume_from,
            # which cancel_task_queue edits too: the verdict survives the restart.
            self.tref = c.timer.call_repeatedly(CONSUMER_SYNC_S, runtime.sync_consumers, (c,))
            runtime.consumer_started()

        def stop(self, c: Any) -> None:
            runtime.recent.mark_lost()  # Celery stops the steps when the connection drops (and at shutdown)
            if self.tref is not None:
                self.tref.cancel()
                self.tref = None

    ResourceGuardStep.name = "dtf.worker.ResourceGuardStep"
    return ResourceGuardStep


def _redelivered(request: Any) -> bool:
    """Whether the broker delivered this task before (kombu's Redis transport marks restored messages)."""
    info = getattr(request, "delivery_info", None) or {}
    return bool(info.get("redelivered"))


def _rejections(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = payload.get("rejections")
    return [dict(r) for r in raw if isinstance(r, Mapping)] if isinstance(raw, list) else []


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
