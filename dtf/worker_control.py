"""What a worker asks of the coordinator and checks of itself between tests.

``WorkerControl.run_forever`` runs in a thread next to the heartbeat: every interval it
asks the coordinator for the requirement sets of the live runs and the runs cancelled
lately (the ``routes`` query; why the coordinator and not a Redis key: dtf.routing),
subscribes to the sets this worker satisfies, stops running tests of cancelled runs, and
re-runs the hardware health checks when they are due or after an infrastructure error
(dtf.healthcheck). ``initial_checks`` runs the checks once before the worker consumes.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from . import healthcheck
from .worker import WorkerRuntime

__all__ = ["WorkerControl", "initial_checks"]

log = logging.getLogger("dtf.worker")


def initial_checks(runtime: WorkerRuntime) -> dict[str, str | None]:
    """Check every hardware kind this worker serves; failed kinds are kept off their queues."""
    verdicts = healthcheck.check_kinds(runtime.routing.kinds)
    for kind, reason in verdicts.items():
        _apply(runtime, kind, reason)
    return verdicts


def _apply(runtime: WorkerRuntime, kind: str, reason: str | None) -> None:
    if runtime.routing.set_health(kind, reason):
        if reason:
            log.warning("%s: health check for %s failed, leaving its queues: %s", runtime.worker_id, kind, reason)
        else:
            log.warning("%s: health check for %s passes again; consuming its queues", runtime.worker_id, kind)


class WorkerControl:
    """The periodic half of routing, cancel and the health gate for one runtime."""

    def __init__(self, runtime: WorkerRuntime, client: Callable[[], Any], *, interval_s: float | None = None,
                 check_interval_s: float | None = None) -> None:
        self.runtime = runtime
        self._client = client
        self.interval_s = interval_s or runtime.heartbeat_interval_s
        self.check_interval_s = check_interval_s or healthcheck.interval_s()
        self._next_check = time.monotonic() + self.check_interval_s

    def step(self) -> None:
        """One round: routes and cancelled runs from the coordinator, then health checks when due."""
        try:
            answer = self._client().call("routes", timeout_s=max(2.0, self.interval_s))
        except Exception as exc:  # noqa: BLE001 - a coordinator away: keep what we have, ask again
            log.debug("routes query failed: %s", exc)
        else:
            if isinstance(answer, dict):
                self.runtime.routing.refresh(answer.get("routes") or [])
                cancelled = [str(r) for r in answer.get("cancelled") or []]
                if cancelled:
                    self.runtime.cancel_runs(cancelled)
        if self.runtime.health_checks and (self.runtime.recheck.is_set() or time.monotonic() >= self._next_check):
            self.runtime.recheck.clear()
            for kind in self.runtime.routing.kinds:
                _apply(self.runtime, kind, healthcheck.check_kind(kind))
            self._next_check = time.monotonic() + self.check_interval_s

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - never stop the worker over a control round
                log.warning("worker control round failed: %s", exc)
            stop.wait(self.interval_s)
