"""What every coordinator policy shares: the leader's in-memory state, its store and fencing
token, its port to the broker, and the few writes more than one policy makes."""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..app import DtfApp
from ..bus import CoordinatorPort, KombuPort
from ..model import FINAL_STATUSES, TestResult
from ..schedule import RunGraph, Update
from ..store import Store

__all__ = ["CoordinatorState", "Carry", "WorkerSeen", "WORKER_OFFLINE_AFTER_S", "RESEND_WINDOW_S", "update_row",
           "from_json"]

WORKER_OFFLINE_AFTER_S = 45.0
# Redis replicates asynchronously: a write the old master took in its last moments may never
# reach the replica the Sentinels promote. After a lost connection the leader publishes again
# the tests it sent this long before the loss that have not started (dtf/coordinator/dispatch.py).
RESEND_WINDOW_S = 10.0


@dataclass
class Carry:
    """What one term's serve loops hand to the next when the broker connection drops
    (dtf/coordinator/candidate.py): the tests sent lately (a send the loss cut off
    included), and when the connection was lost."""

    sent: deque[tuple[float, str, str, int]] = field(default_factory=lambda: deque(maxlen=50_000))
    lost_at: float | None = None  # time.monotonic() of the last connection loss


@dataclass
class WorkerSeen:
    queues: tuple[str, ...]
    last_seen: float
    running: tuple[tuple[str, str, int], ...] = ()  # (run, test, attempt) in its last heartbeat
    offline_after_s: float = WORKER_OFFLINE_AFTER_S
    stack: str = ""  # its stack fingerprint (dtf/cache.py), from its heartbeats


class CoordinatorState:
    """The leader's state. ``port`` is where messages go out: a KombuPort on the leader's
    producer once ``serve`` connects (before that, tasks go through the app's pool), or a
    dtf.bus.MemoryPort in tests of policy."""

    def __init__(
        self,
        app: DtfApp,
        store: Store,
        *,
        token: Callable[[], int] = lambda: 0,
        servable: set[str] | None = None,
        window: int = 1000,
        batch_size: int | None = None,
        batch_ms: int | None = None,
        grace_s: float | None = None,
        port: CoordinatorPort | None = None,
        carry: "Carry | None" = None,
    ) -> None:
        settings = app.settings
        self.app = app
        self.settings = settings
        self.store = store
        self.token = token
        self.port: CoordinatorPort = port if port is not None else KombuPort(app, embedded=settings.embedded)
        self.servable = servable  # fixed hardware kinds (embedded), or learned from heartbeats
        self.window = window
        self.batch_size = batch_size or settings.result_batch_size
        self.batch_s = (batch_ms if batch_ms is not None else settings.result_batch_ms) / 1000.0
        self.max_payload = settings.max_payload_bytes
        self.grace_s = float(grace_s if grace_s is not None else settings.reconcile_grace_s)
        self.runs: dict[str, RunGraph] = {}
        self.workers: dict[str, WorkerSeen] = {}
        # Wall time of the last sign of life of each published test (published or started).
        self._silent_since: dict[tuple[str, str], float] = {}
        # Started notices (dtf/coordinator/liveness.py), written with the next result batch.
        self._started: list[tuple[str, Update]] = []
        self.ingested = 0
        self.duplicates = 0  # results whose (run, test, attempt) was already stored: redeliveries
        self.refused = 0  # messages that failed their schema (dtf.wire): dead-lettered by this leader
        self.cancelled: dict[str, float] = {}  # run id -> when `dtf cancel` ended it (dtf/coordinator/cancel.py)
        self.carry = carry if carry is not None else Carry()

    @property
    def demoted(self) -> bool:
        """The lease lapsed: the leader lock's thread closed the store the moment it did.
        Whatever is in hand is then neither answered nor acked; the next leader gets it."""
        return self.store.closed

    def _reply(self, body: Mapping[str, Any], payload: Mapping[str, Any]) -> None:
        self.port.reply(body, payload)

    def _refuse(self, queue: str, exc: Exception, body: Any, message: Any) -> None:
        """A message that failed its schema: dead-lettered, counted, logged once, acked."""
        self.refused += 1
        self.port.dead_letter(queue, str(exc), body)
        message.ack()

    def _stored(self, run_id: str) -> bool:
        return run_id in self.runs or self.store.run(run_id) is not None

    def _commit(self, results: Sequence[TestResult], graph: RunGraph, updates: Sequence[Update]) -> None:
        self.store.ingest_batch(results, [update_row(graph.run_id, u) for u in updates], token=self.token())

    def _finish_if_done(self, graph: RunGraph) -> None:
        if graph.finished():
            self.store.ingest_batch([], finished_runs=[(graph.run_id, graph.verdict())], token=self.token())
            self.runs.pop(graph.run_id, None)


def update_row(run_id: str, u: Update) -> dict[str, Any]:
    final = u.status in FINAL_STATUSES
    return {"run_id": run_id, "test_id": u.test_id, "status": u.status, "attempts": u.attempts,
            "reason": u.reason, "queued_at": None, "finished_at": time.time() if final else None}


def from_json(text: Any) -> Any:
    return json.loads(text) if isinstance(text, str) else text
