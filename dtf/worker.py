"""The worker side: what `dtf worker` adds around a Celery worker.

``WorkerRuntime.handle`` is the body of the run_test task: say the test started, run it
in a subprocess, write the result to a local spool file, publish it to ``dtf.results``,
then delete the spool file. If the broker is down when the result is ready, the spool
keeps it and ``replay_spool`` publishes it at the next start, so a finished result is
never lost. A heartbeat thread registers the worker's profile and queues with the
coordinator.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

from celery import Celery
from kombu import Producer

from . import runner
from .app import CONTROL_QUEUE, RESULTS_QUEUE, result_body
from .coordinator import control_queue, results_queue
from .model import HardwareProfile, RenderedTest, TestResult

__all__ = ["WorkerRuntime"]

log = logging.getLogger("dtf.worker")

HEARTBEAT_INTERVAL_S = 10.0


class WorkerRuntime:
    """Per-process worker state: identity, spool, and how results leave the machine."""

    def __init__(
        self,
        app: Celery,
        *,
        worker_id: str,
        queues: Sequence[str],
        profile: HardwareProfile | None = None,
        spool_dir: str | Path | None = None,
        test_env: Mapping[str, str] | None = None,
    ) -> None:
        self.app = app
        self.worker_id = worker_id
        self.hostname = socket.gethostname()
        self.queues = tuple(queues)
        self.profile = profile
        settings = app.dtf_settings  # type: ignore[attr-defined]
        self.spool = Path(spool_dir or settings.spool_dir) / _safe(worker_id)
        self.spool.mkdir(parents=True, exist_ok=True)
        self.test_env = dict(test_env) if test_env is not None else None
        self.running = 0
        self.state = "online"
        self._lock = threading.Lock()

    def install(self) -> None:
        """Make this runtime the handler of the app's run_test task."""
        self.app.dtf_handler = self.handle  # type: ignore[attr-defined]

    # -- the task body ------------------------------------------------------------------
    def handle(self, payload: Mapping[str, Any], request: Any = None) -> None:
        try:
            test = RenderedTest.from_dict(payload["test"])
            run_id, attempt = str(payload["run_id"]), int(payload["attempt"])
        except (KeyError, TypeError, ValueError) as exc:
            log.error("dropping malformed run_test payload: %s", exc)
            return
        self._send_control({"op": "started", "run_id": run_id, "test_id": test.spec.test_id,
                            "attempt": attempt, "worker_id": self.worker_id})
        with self._lock:
            self.running += 1
        try:
            result = runner.execute(test, run_id=run_id, attempt=attempt, worker_id=self.worker_id,
                                    hostname=self.hostname, env=self.test_env)
        finally:
            with self._lock:
                self.running -= 1
        self.publish_result(result)

    # -- results: spool first, then publish ------------------------------------------------
    def publish_result(self, result: TestResult) -> None:
        path = self.spool / f"{uuid.uuid4().hex}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result_body(result)), encoding="utf-8")
        os.replace(tmp, path)  # atomic: a crash leaves either nothing or a whole file
        self._publish_results_file(path)

    def _publish_results_file(self, path: Path) -> None:
        body = json.loads(path.read_text(encoding="utf-8"))
        with self.app.producer_or_acquire() as producer:
            producer.publish(body, exchange="", routing_key=RESULTS_QUEUE, serializer="json",
                             declare=[results_queue()], retry=True,
                             retry_policy={"max_retries": 5, "interval_start": 0.2, "interval_step": 0.5})
        path.unlink(missing_ok=True)

    def replay_spool(self) -> int:
        """Publish results left in the spool by an earlier run of this worker."""
        sent = 0
        for path in sorted(self.spool.glob("*.json")):
            try:
                self._publish_results_file(path)
                sent += 1
            except (OSError, ValueError) as exc:
                log.warning("cannot replay spooled result %s: %s", path.name, exc)
        return sent

    # -- coordinator messages ----------------------------------------------------------------
    def _send_control(self, body: Mapping[str, Any]) -> None:
        try:
            with self.app.producer_or_acquire() as producer:
                producer.publish(dict(body), exchange="", routing_key=CONTROL_QUEUE, serializer="json",
                                 declare=[control_queue()], retry=True, retry_policy={"max_retries": 2})
        except Exception as exc:  # noqa: BLE001 - a lost notice must not fail the test
            log.warning("cannot notify coordinator: %s", exc)

    def heartbeat_body(self) -> dict[str, Any]:
        profile = self.profile.to_dict() if self.profile else {}
        return {"op": "heartbeat", "worker": {
            "worker_id": self.worker_id, "hostname": self.hostname,
            "platform": profile.get("platform"), "hardware": profile, "queues": list(self.queues),
            "state": self.state, "health": {"running": self.running}, "last_seen": time.time(),
        }}

    def heartbeat_forever(self, stop: threading.Event, interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
        while not stop.is_set():
            self._send_control(self.heartbeat_body())
            stop.wait(interval_s)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
