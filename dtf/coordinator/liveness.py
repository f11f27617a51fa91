"""Liveness and reconciliation: worker heartbeats and started notices, what a new leader
restores and reconciles, and re-publishing tests that went silent.

Same attempt number, same task id whenever a test is published again: the coordinator
cannot tell a lost task from a slow one, and if both run, both results have the key
(run, test, attempt) and the second write is a no-op. A new attempt number would store
both and spend a retry.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping, Sequence

from ..bus import task_id_for
from ..model import Status, TestSpec
from ..requirements import queue_of
from ..schedule import RunGraph
from ..wire import heartbeat_from_wire, started_from_wire
from .history import HistoryPolicy
from .state import WORKER_OFFLINE_AFTER_S, WorkerSeen, from_json
from .submits import STALE_SUBMIT_AFTER_S

__all__ = ["LivenessPolicy", "RECONCILE_EVERY_S"]

log = logging.getLogger("dtf.coordinator")

RECONCILE_EVERY_S = 5.0
# A test a worker took and did not report started within this is not running on a live worker
# (it reports after dtf.worker.STARTED_NOTICE_AFTER_S, 0.25 s; the rest is room for load).
HELD_UNSTARTED_AFTER_S = 3.0


class LivenessPolicy(HistoryPolicy):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_reconcile = 0.0
        self._last_stale_sweep = 0.0

    # -- a new term --------------------------------------------------------------------------
    def _restore_active_runs(self) -> None:
        """After a restart or a failover, rebuild the graphs of runs that were still running."""
        for run in self.store.query("SELECT run_id FROM runs WHERE status = 'running'"):
            rows = self.store.tests(run["run_id"])
            specs = [TestSpec.from_dict(from_json(row["spec"])) for row in rows]
            graph = RunGraph.restore(run["run_id"], specs, {row["test_id"]: row for row in rows},
                                     **self._graph_options(run["run_id"], specs))
            self.runs[run["run_id"]] = graph
            log.info("restored run %s (%d tests)", run["run_id"], len(specs))
        now = time.time()
        for row in self.store.workers():
            if row.get("state") != "offline" and now - float(row.get("last_seen") or 0) < WORKER_OFFLINE_AFTER_S:
                self.workers[str(row["worker_id"])] = WorkerSeen(tuple(row.get("queues") or ()), now)

    def reconcile_on_election(self, *, republish: bool = False) -> None:
        """What a new leader does before consuming: close runs that are done, give every
        in-flight test a fresh silence clock, publish what is ready and was never published.

        In-flight tests are not re-published at once: their tasks are most likely still in
        the queues or running, and the started notices and results the old leader had taken
        come back after the control visibility timeout. ``_reconcile`` re-publishes those
        still silent after the grace period (queued) or their timeout plus grace (running).
        With ``republish`` (the broker came back without its data, so those tasks are gone)
        every in-flight test is published again at once, same attempt: a result that does
        arrive from the old task is keyed the same, and the second write is a no-op."""
        now = time.time()
        lost: dict[str, list[tuple[str, int]]] = {}
        for graph in list(self.runs.values()):
            for test_id, t in graph.tests.items():
                if t.status in (Status.QUEUED.value, Status.RUNNING.value):
                    self._silent_since[(graph.run_id, test_id)] = now
                    lost.setdefault(graph.run_id, []).append((test_id, t.attempts))
            self._finish_if_done(graph)
        if republish:
            count = sum(len(items) for run_id, items in lost.items() if run_id in self.runs)
            (log.warning if count else log.info)(
                "the broker lost its data (new, or restarted without persistence): queues re-created; "
                "re-publishing %d in-flight tests from the database", count)
            for run_id, items in lost.items():
                if run_id in self.runs:
                    self._publish(run_id, items)
        self._dispatch()

    # -- what workers say ---------------------------------------------------------------------
    def _on_heartbeat(self, body: Mapping[str, Any]) -> None:
        """Store the worker's latest state and health, and append the health to its history.

        last_seen is this coordinator's clock, not the worker's: clocks across hosts differ.
        A worker silent for WORKER_OFFLINE_AFTER_S (or three of its heartbeat intervals, if
        longer) is marked offline by _reconcile; a worker that stops cleanly says so itself."""
        info = heartbeat_from_wire(body)
        worker_id = str(info["worker_id"])
        health = info["health"]
        now = time.time()
        info.update(state=str(info.get("state") or "online"), last_seen=now, health=health)
        if info["state"] == "offline":
            self.workers.pop(worker_id, None)
        else:
            interval = _float(health.get("heartbeat_interval_s"))
            self.workers[worker_id] = WorkerSeen(tuple(info.get("queues") or ()), now, _running_keys(health),
                                                 max(WORKER_OFFLINE_AFTER_S, 3 * interval), str(health.get("stack") or ""))
        self.store.upsert_worker(info, token=self.token())
        self.store.record_worker_health(worker_id, now, info["state"], health, token=self.token())

    def _on_started(self, body: Mapping[str, Any]) -> None:
        run_id, test_id, attempt = started_from_wire(body)
        graph = self.runs.get(run_id)
        if graph is None:
            return
        worker_id = body.get("worker_id")
        seen = self.workers.get(worker_id) if isinstance(worker_id, str) else None
        if seen is not None and (run_id, test_id, attempt) not in seen.running:
            # Known as this worker's from now, not from its next heartbeat: if it dies, the
            # test is published again once the worker is offline, not after its timeout.
            seen.running = (*seen.running, (run_id, test_id, attempt))
        update = graph.mark_running(test_id, attempt)
        if update is not None:
            self._silent_since[(graph.run_id, update.test_id)] = time.time()
            self._started.append((graph.run_id, update))

    # -- reconciliation ------------------------------------------------------------------------
    def _reconcile_due(self, now: float) -> None:
        if now - self._last_reconcile >= RECONCILE_EVERY_S:
            self._last_reconcile = now
            self._reconcile(time.time())

    def _reconcile(self, now: float) -> None:
        """Re-publish tests that went silent: running ones for longer than their timeout plus
        grace (the worker died or the result was lost), queued ones for longer than the grace
        while their queue is empty (the task was lost with a Redis master or never sent)."""
        depth: dict[str, int | None] = {}
        for (run_id, test_id), since in list(self._silent_since.items()):
            graph = self.runs.get(run_id)
            t = graph.tests.get(test_id) if graph is not None else None
            if t is None or t.final or t.status not in (Status.QUEUED.value, Status.RUNNING.value):
                self._silent_since.pop((run_id, test_id), None)
                continue
            if t.status == Status.RUNNING.value:
                if now - since <= t.spec.timeout_s + self.grace_s:
                    continue
            else:
                queue = queue_of(t.spec)
                if queue not in depth:
                    depth[queue] = self.port.queue_depth(queue)
                if now - since <= self.grace_s or depth[queue] != 0:
                    continue
            log.warning("test %s/%s %s and silent for %.0f s; re-publishing attempt %d",
                        run_id, test_id, t.status, now - since, t.attempts)
            self._publish(run_id, [(test_id, t.attempts)])
        # Workers silent too long are offline, including ones only the database remembers
        # (seen by an earlier leader). Tests a dead worker was running are published again
        # now rather than after their timeout: same attempt, so a late result is a no-op.
        if now - self._last_stale_sweep >= STALE_SUBMIT_AFTER_S / 10:
            self._last_stale_sweep = now
            self.store.drop_stale_submits(now - STALE_SUBMIT_AFTER_S, token=self.token())
        stale = [w for w, seen in self.workers.items() if now - seen.last_seen > seen.offline_after_s]
        self.store.mark_silent_workers(now, WORKER_OFFLINE_AFTER_S, token=self.token())
        for step in self.store.housekeeping(now, token=self.token()):  # a lake: compaction, snapshot expiry
            log.info("store housekeeping: %s", step)
        if stale:
            self.store.mark_workers(stale, "offline")
        for w in stale:
            for run_id, test_id, attempt in self.workers.pop(w).running:
                graph = self.runs.get(run_id)
                t = graph.tests.get(test_id) if graph is not None else None
                if t is not None and t.status == Status.RUNNING.value and t.attempts == attempt:
                    log.warning("worker %s went silent while running %s/%s; re-publishing attempt %d",
                                w, run_id, test_id, attempt)
                    self._publish(run_id, [(test_id, attempt)])
        if stale:
            self._publish_held_unstarted(stale)

    def _publish_held_unstarted(self, stale: Sequence[str]) -> None:
        """A dead worker may have held tests it had not yet reported started (a test reports
        itself after STARTED_NOTICE_AFTER_S): taken off the queue, unacked, unknown to the
        coordinator as the worker's. Publish again, flagged ``recheck``, the still-queued
        tests whose messages some worker has held unacked for longer than a started notice
        takes: a live worker would have reported them by now (with prefetch beyond its
        concurrency, a live worker's waiting test is sent too; its copy asks first)."""
        held = set(self.port.held_tasks(HELD_UNSTARTED_AFTER_S))
        if not held:
            return
        again: dict[str, list[tuple[str, int]]] = {}
        for run_id, graph in self.runs.items():
            for test_id, t in graph.tests.items():
                if t.status == Status.QUEUED.value and task_id_for(run_id, test_id, t.attempts) in held:
                    again.setdefault(run_id, []).append((test_id, t.attempts))
        for run_id, items in again.items():
            log.warning("worker %s went silent; re-publishing %d tests of run %s it may have taken before "
                        "reporting them started", ", ".join(stale), len(items), run_id)
            self._publish(run_id, sorted(items), recheck=True)


def _running_keys(health: Mapping[str, Any]) -> tuple[tuple[str, str, int], ...]:
    keys = []
    for item in health.get("running_tests") or ():
        try:
            keys.append((str(item["run_id"]), str(item["test_id"]), int(item["attempt"])))
        except (KeyError, TypeError, ValueError):
            continue  # an older or foreign worker's heartbeat
    return tuple(keys)


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0
