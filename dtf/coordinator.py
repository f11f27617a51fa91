"""The coordinator: the one process that owns the results database.

It consumes two queues: ``dtf.coordinator`` (submits, status queries, worker heartbeats,
test-started notices) and ``dtf.results`` (test results). Results are ingested in
batches: up to N messages or T ms (or at once when the batch holds every result still
outstanding), one DuckDB transaction, then the whole batch is acked in one round trip, so
a crash before the ack redelivers and the (run, test, attempt) key makes the second write
a no-op. After each batch it publishes the tests whose dependencies have now passed, a
bounded window per hardware queue at a time. A submit is stored chunk by chunk as it
arrives; status queries may be held until their run finishes.

In a high-availability group every `dtf coordinator` is a ``Candidate``: it stands by until
it holds the leader lease (dtf.ha.LeaderLock), and only then opens the DuckDB file
read-write and consumes the two queues. A new leader restores the running runs from DuckDB
and reconciles: ready tests that were never published are published, and tests that went
silent are published again. On losing the lease, or on a write refused by the fence, it
stops consuming, closes the file and stands by again.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from celery import Celery
from kombu import Consumer, Message, Producer, Queue
from kombu.exceptions import ChannelError

from .acks import ack_all
from .app import CONTROL_QUEUE, RESULTS_QUEUE, send_test, task_id_for, wire_format
from .client import (
    QUERY_OPS, _drop_undecodable, _dumps, _first_line, control_queue, control_transport_options,
    results_queue,
)
from .errors import DtfError, FencingError, HardwareError, PayloadTooLarge, StoreError
from .model import HARDWARE_KINDS, RenderedTest, Status, TestResult, TestSpec, queue_for
from .schedule import RunGraph, Update
from .ha import LeaderLock, NotLeader
from .store import Store
from .wire import (
    MessageRefused, check_control, dead_letter, dead_letter_count, heartbeat_from_wire, result_from_wire,
    started_from_wire,
)

__all__ = ["Candidate", "Coordinator"]

log = logging.getLogger("dtf.coordinator")

WORKER_OFFLINE_AFTER_S = 45.0
RUNNING_GRACE_S = 60.0
RECONCILE_EVERY_S = 5.0
STALE_SUBMIT_AFTER_S = 3600.0  # a submit whose chunks stopped coming this long ago is dropped
MAX_STATUS_WAIT_S = 30.0  # longest a status query with wait_s is held before it is answered
# One message nobody consumes: when it is missing, the broker lost its data (dtf.coordinator
# re-creates the queues and re-publishes in-flight tests from DuckDB).
MARKER_QUEUE = "dtf.coordinator.marker"


class _Demoted(Exception):
    """The lease lapsed while a message was handled: it is left for the next leader."""


@dataclass
class _WorkerSeen:
    queues: tuple[str, ...]
    last_seen: float
    running: tuple[tuple[str, str, int], ...] = ()  # (run, test, attempt) in its last heartbeat
    offline_after_s: float = WORKER_OFFLINE_AFTER_S


class Coordinator:
    """The event loop of the leader: moves messages between the broker, the schedule and the store."""

    def __init__(
        self,
        app: Celery,
        store: Store,
        *,
        token: Callable[[], int] = lambda: 0,
        servable: set[str] | None = None,
        window: int = 1000,
        batch_size: int | None = None,
        batch_ms: int | None = None,
        grace_s: float | None = None,
    ) -> None:
        settings = app.dtf_settings  # type: ignore[attr-defined]
        self.app = app
        self.store = store
        self.token = token
        self.servable = servable  # fixed hardware kinds (embedded), or learned from heartbeats
        self.window = window
        self.batch_size = batch_size or settings.result_batch_size
        self.batch_s = (batch_ms if batch_ms is not None else settings.result_batch_ms) / 1000.0
        self.max_payload = settings.max_payload_bytes
        self.grace_s = float(grace_s if grace_s is not None else getattr(settings, "reconcile_grace_s", RUNNING_GRACE_S))
        self.runs: dict[str, RunGraph] = {}
        self.workers: dict[str, _WorkerSeen] = {}
        # Wall time of the last sign of life of each published test (published or started).
        self._silent_since: dict[tuple[str, str], float] = {}
        self._results: list[tuple[TestResult, Message]] = []
        self._started: list[tuple[str, Update]] = []
        # Status queries held until their run finishes or their wait ends: (deadline, body).
        self._waiting: list[tuple[float, Mapping[str, Any]]] = []
        self._batch_started = 0.0
        self._last_reconcile = 0.0
        self._last_stale_sweep = 0.0
        self._producer: Producer | None = None
        self.ingested = 0
        self.duplicates = 0  # results whose (run, test, attempt) was already stored: redeliveries
        self.refused = 0  # messages that failed their schema (dtf.wire): dead-lettered by this leader

    # -- life cycle -----------------------------------------------------------------------
    def serve(
        self,
        stop: threading.Event,
        ready: threading.Event | None = None,
        poll_s: float = 0.05,
        leading: Callable[[], bool] | None = None,
    ) -> None:
        """Run until ``stop`` is set or ``leading()`` turns false.

        Raises FencingError if a write is refused (another leader, or this one's lease lapsed).
        Losing the lease ends the loop without acking what is unflushed: closing the channel
        gives those messages back, or the next leader's sweep does."""
        leading = leading or (lambda: True)
        settings = self.app.dtf_settings  # type: ignore[attr-defined]
        with self.app.connection_for_write(transport_options=control_transport_options(settings)) as conn:
            conn.ensure_connection(max_retries=3)
            serializer, accept = wire_format(self.app)
            ctrl = Consumer(conn.channel(), [control_queue()], callbacks=[self._on_control],
                            accept=accept, prefetch_count=0, on_decode_error=_drop_undecodable)
            res = Consumer(conn.channel(), [results_queue()], callbacks=[self._on_result_message],
                           accept=accept, prefetch_count=self.batch_size, on_decode_error=_drop_undecodable)
            self._producer = Producer(conn.channel(), serializer=serializer)
            lost = self._broker_lost_data()
            self._restore_active_runs()
            self.reconcile_on_election(republish=lost)
            if lost:
                self._put_marker()
            with ctrl, res:
                if ready is not None:
                    ready.set()
                while not stop.is_set() and leading():
                    try:
                        conn.drain_events(timeout=poll_s)
                    except socket.timeout:
                        pass
                    self.tick()
                if leading():
                    self._flush_results()

    def tick(self, now: float | None = None) -> None:
        if self.store.closed:
            # Demoted (the lease lapsed and the store was closed at once): the serve loop ends
            # at its next check; unflushed results and held queries are the next leader's.
            self._waiting = []
            return
        now = time.monotonic() if now is None else now
        if self._results and (len(self._results) >= self.batch_size or now - self._batch_started >= self.batch_s):
            self._flush_results()
        elif self._started and not self._results:
            self._flush_results()
        if self._waiting:
            self._answer_waiting(now)
        if now - self._last_reconcile >= RECONCILE_EVERY_S:
            self._last_reconcile = now
            self._reconcile(time.time())

    def _restore_active_runs(self) -> None:
        """After a restart or a failover, rebuild the graphs of runs that were still running."""
        for run in self.store.query("SELECT run_id FROM runs WHERE status = 'running'"):
            rows = self.store.tests(run["run_id"])
            specs = [TestSpec.from_dict(_json(row["spec"])) for row in rows]
            graph = RunGraph.restore(run["run_id"], specs, {row["test_id"]: row for row in rows})
            self.runs[run["run_id"]] = graph
            log.info("restored run %s (%d tests)", run["run_id"], len(specs))
        now = time.time()
        for row in self.store.workers():
            if row.get("state") != "offline" and now - float(row.get("last_seen") or 0) < WORKER_OFFLINE_AFTER_S:
                self.workers[str(row["worker_id"])] = _WorkerSeen(tuple(row.get("queues") or ()), now)

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

    def _broker_lost_data(self) -> bool:
        """Re-create the hardware queues (a Redis that restarted empty lost the exchange
        bindings too, and a publish to them would fail) and say whether the broker lost its
        data: dtf's marker message, put there by an earlier term, is gone with it."""
        from .app import hardware_queues

        settings = self.app.dtf_settings  # type: ignore[attr-defined]
        if settings.embedded or self._producer is None:
            return False
        channel = self._producer.channel
        for queue in hardware_queues():
            queue.bind(channel).declare()
        return self._queue_depth(MARKER_QUEUE) == 0

    def _put_marker(self) -> None:
        if self._producer is not None:
            self._producer.publish({"marker": "dtf", "at": time.time()}, exchange="", routing_key=MARKER_QUEUE,
                                   declare=[Queue(MARKER_QUEUE, durable=True)])

    # -- control messages -------------------------------------------------------------------
    def _on_control(self, body: Any, message: Message) -> None:
        if self.store.closed:
            # Demoted while this loop still drains (the lease lapsed: the store was closed at
            # once). Neither answer nor ack: closing the channel gives the message back, for
            # the next leader.
            return
        try:
            op = check_control(body, QUERY_OPS)
        except MessageRefused as exc:
            self._refuse(CONTROL_QUEUE, exc, body, message)
            return
        try:
            if op == "submit":
                self._on_submit_chunk(body, message)
                return  # acked there, once the chunk is stored
            if op == "status" and self._hold_status(body):
                pass  # answered by tick() when the run finishes or the wait ends
            elif op == "heartbeat":
                self._on_heartbeat(body)
            elif op == "started":
                self._on_started(body)
            elif op in _QUERIES:
                self._answer(body, op, lambda: _QUERIES[op](self, body))
            else:
                raise DtfError(f"unknown coordinator operation {op!r}")
        except FencingError:
            raise
        except MessageRefused as exc:
            self._refuse(CONTROL_QUEUE, exc, body, message)
            return
        except Exception as exc:  # noqa: BLE001 - a bad message must not stop the leader
            if self.store.closed:
                # Demoted while handling it (the lock's thread closes the store the moment the
                # lease lapses): neither answered nor acked, so the next leader gets it.
                return
            log.warning("control message %r failed: %s", op, _first_line(exc)[:300])
            self._reply(body, {"ok": False, "error": str(exc)})
        message.ack()

    def _answer(self, body: Mapping[str, Any], op: str, compute: Callable[[], Any]) -> None:
        """Reply with what ``compute`` returns, or with its error; a fencing error ends the term."""
        try:
            data = compute()
        except FencingError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bad query must not stop the leader
            if self.store.closed:
                # The lease lapsed while it ran (the store is closed from the lock's thread):
                # no error for the client, which asks again and reaches the next leader.
                raise _Demoted() from exc
            log.warning("control message %r failed: %s", op, exc)
            self._reply(body, {"ok": False, "error": str(exc)})
            return
        self._reply(body, {"ok": True, "data": data})

    def _hold_status(self, body: Mapping[str, Any]) -> bool:
        """A status query with ``wait_s`` for a running run is answered when the run finishes
        or the wait ends, whichever is first: the client learns the end at once without polling."""
        try:
            wait_s = min(float(body.get("wait_s") or 0.0), MAX_STATUS_WAIT_S)
        except (TypeError, ValueError):
            return False
        if wait_s <= 0 or str(body.get("run_id")) not in self.runs:
            return False
        self._waiting.append((time.monotonic() + wait_s, body))
        return True

    def _answer_waiting(self, now: float) -> None:
        still: list[tuple[float, Mapping[str, Any]]] = []
        for deadline, body in self._waiting:
            if now < deadline and str(body.get("run_id")) in self.runs:
                still.append((deadline, body))
                continue
            try:
                self._answer(body, "status", lambda body=body: self.status(str(body["run_id"])))
            except _Demoted:
                still = []  # the clients ask the next leader
                break
        self._waiting = still

    def _reply(self, body: Mapping[str, Any], payload: Mapping[str, Any]) -> None:
        reply_to = body.get("reply_to")
        if reply_to and self._producer is not None:
            self._producer.publish(dict(payload, correlation_id=body.get("correlation_id")),
                                   exchange="", routing_key=str(reply_to), retry=True)

    def _redis(self) -> Any:
        """The broker's redis-py client (None on the in-memory broker)."""
        channel = getattr(self._producer, "channel", None)
        return getattr(channel, "client", None) if not self.app.dtf_settings.embedded else None  # type: ignore[attr-defined]

    def _refuse(self, queue: str, exc: Exception, body: Any, message: Message) -> None:
        """A message that failed its schema: dead-lettered, counted, logged once, acked."""
        self.refused += 1
        dead_letter(self._redis(), queue, str(exc), body)
        message.ack()

    def _on_submit_chunk(self, body: Mapping[str, Any], message: Message) -> None:
        """Store one chunk of a submit as it arrives, ack it, and start the run when the last
        chunk is in: memory holds one chunk at a time, however large the run."""
        reply = {k: body.get(k) for k in ("reply_to", "correlation_id")} if body.get("reply_to") else None
        try:
            submit_id, chunk, chunks = str(body["submit_id"]), int(body["chunk"]), int(body["chunks"])
            run_id = str(body.get("run_id") or body["run"]["run_id"])
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("dropping a malformed submit chunk: %s", exc)
            if reply is not None:
                self._reply(reply, {"ok": False, "error": f"malformed submit: {exc}"})
            message.ack()
            return
        if self._stored(run_id):  # redelivered: stored already
            if reply is not None:
                self._reply(reply, {"ok": True, "data": {"run_id": run_id}})
            message.ack()
            return
        tests: list[RenderedTest] = []
        try:
            tests = [RenderedTest.from_dict(t) for t in body["tests"]]
            _check_hardware(tests)
            error = None
        except HardwareError as exc:
            error = str(exc)
        except (KeyError, TypeError, ValueError) as exc:
            error = f"malformed submit: {exc}"
        staged = self.store.stage_submit_chunk(submit_id, run_id, chunk, chunks, tests, run=body.get("run"),
                                               reply=reply, error=error, token=self.token())
        message.ack()
        if staged < chunks:
            return
        done = self.store.finish_submit(submit_id, token=self.token())
        if done["error"] is None:
            self._start_run(run_id, [TestSpec.from_dict(spec) for spec in self.store.iter_specs(run_id)])
        else:
            log.warning("submit of run %s refused: %s", run_id, done["error"])
        if done["reply"]:
            outcome = {"ok": True, "data": {"run_id": run_id}} if done["error"] is None else {"ok": False, "error": done["error"]}
            self._reply(done["reply"], outcome)

    def submit(self, run: Mapping[str, Any], tests: Sequence[RenderedTest]) -> str:
        """Store a run and its tests, skip what no worker can serve, publish what is ready."""
        run_id = str(run["run_id"])
        if self._stored(run_id):
            return run_id  # a redelivered submit: already stored
        _check_hardware(tests)
        self.store.insert_run(run, tests, token=self.token())
        self._start_run(run_id, [t.spec for t in tests])
        return run_id

    def _stored(self, run_id: str) -> bool:
        return run_id in self.runs or self.store.run(run_id) is not None

    def _start_run(self, run_id: str, specs: Sequence[TestSpec]) -> None:
        """Build a stored run's graph, skip what no worker can serve, publish what is ready."""
        graph = RunGraph(run_id, specs)
        self.runs[run_id] = graph
        if self.servable is not None:
            missing = graph.unservable(self.servable)
            if missing:
                kinds = sorted({graph.tests[t].spec.hardware for t in missing})
                reason = f"no worker here serves {', '.join(kinds)} (this machine has {', '.join(sorted(self.servable))})"
                self._commit([], graph, graph.skip(missing, reason))
        else:
            self._skip_requested(graph)
        self._dispatch()
        self._finish_if_done(graph)

    def _skip_requested(self, graph: RunGraph) -> None:
        """Skip the hardware the submitter found no live worker for (`dtf submit --wait`
        without --wait-unserved puts it in the run's info as ``skip_hardware``)."""
        info = (self.store.run(graph.run_id) or {}).get("info")
        try:
            info = json.loads(info) if isinstance(info, str) else info
        except ValueError:
            info = None
        kinds = info.get("skip_hardware") if isinstance(info, dict) else None
        if not isinstance(kinds, list) or not kinds:
            return
        kinds = sorted({str(k) for k in kinds})
        missing = [tid for tid, t in graph.tests.items() if t.spec.hardware in kinds and not t.final]
        if missing:
            reason = f"no live worker served {', '.join(kinds)} at submit (dtf submit --wait-unserved waits for one)"
            self._commit([], graph, graph.skip(missing, reason))

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
            self.workers[worker_id] = _WorkerSeen(tuple(info.get("queues") or ()), now, _running_keys(health),
                                                  max(WORKER_OFFLINE_AFTER_S, 3 * interval))
        self.store.upsert_worker(info, token=self.token())
        self.store.record_worker_health(worker_id, now, info["state"], health, token=self.token())

    def _on_started(self, body: Mapping[str, Any]) -> None:
        run_id, test_id, attempt = started_from_wire(body)
        graph = self.runs.get(run_id)
        if graph is None:
            return
        update = graph.mark_running(test_id, attempt)
        if update is not None:
            self._silent_since[(graph.run_id, update.test_id)] = time.time()
            self._started.append((graph.run_id, update))

    # -- results ----------------------------------------------------------------------------
    def _on_result_message(self, body: Any, message: Message) -> None:
        try:
            result = result_from_wire(body)
        except MessageRefused as exc:  # wrong types, sizes or an invented status: never stored
            self._refuse(RESULTS_QUEUE, exc, body, message)
            return
        if not self._results:
            self._batch_started = time.monotonic()
        self._results.append((result, message))
        # A full batch is written at once; so is the last result a run is waiting for, rather
        # than after the batch delay: the end of a run is seen as soon as it happens.
        if len(self._results) >= min(self.batch_size, sum(self._outstanding().values())):
            self._flush_results()

    def _expected(self, result: TestResult) -> bool:
        """Only a result for a test of an active run, for an attempt that was dispatched,
        is stored: a late or forged one must not rewrite a finished run."""
        graph = self.runs.get(result.run_id)
        state = graph.tests.get(result.test_id) if graph is not None else None
        return state is not None and 1 <= result.attempt <= state.attempts

    def _flush_results(self) -> None:
        """One transaction for the whole batch, then ack every message in it."""
        batch, self._results = self._results, []
        started, self._started = self._started, []
        # The run graph knows every active test's attempts, so a result for an attempt that
        # was never dispatched, or for a run that is over, is dropped here; a second result
        # for an attempt already stored (a task run twice: redelivered past the visibility
        # timeout, or re-published by reconciliation) changes no state in the graph and is
        # refused by the key on insert. Either way it is counted, never stored twice.
        fresh: dict[tuple[str, str, int], TestResult] = {}
        for result, _ in batch:
            if self._expected(result):
                fresh.setdefault((result.run_id, result.test_id, result.attempt), result)
        updates: list[dict[str, Any]] = [_update_row(run_id, u) for run_id, u in started]
        requeue: list[tuple[str, str, int]] = []
        touched: dict[str, RunGraph] = {}
        for result in fresh.values():
            graph = self.runs.get(result.run_id)
            if graph is None:
                continue
            touched[graph.run_id] = graph
            self._silent_since.pop((result.run_id, result.test_id), None)
            for u in graph.apply_result(result):
                updates.append(_update_row(graph.run_id, u))
                if u.requeue:
                    requeue.append((graph.run_id, u.test_id, u.attempts))
        finished = [(g.run_id, g.verdict()) for g in touched.values() if g.finished()]
        try:
            stored = self.store.commit_batch(list(fresh.values()), updates, finished_runs=finished, token=self.token())
        except FencingError:
            raise
        except Exception:
            for _, message in batch:
                message.requeue()
            raise
        self.ingested += stored
        if stored < len(batch):
            self.duplicates += len(batch) - stored
            log.info("ignored %d duplicate result(s); %d so far", len(batch) - stored, self.duplicates)
        ack_all([message for _, message in batch])
        for run_id, _ in finished:
            self.runs.pop(run_id, None)
        for run_id, test_id, attempt in requeue:
            self._publish(run_id, [(test_id, attempt)])
        self._dispatch()

    def _commit(self, results: Sequence[TestResult], graph: RunGraph, updates: Sequence[Update]) -> None:
        self.store.commit_batch(results, [_update_row(graph.run_id, u) for u in updates], token=self.token())

    def _finish_if_done(self, graph: RunGraph) -> None:
        if graph.finished():
            self.store.commit_batch([], finished_runs=[(graph.run_id, graph.verdict())], token=self.token())
            self.runs.pop(graph.run_id, None)

    # -- dispatch -----------------------------------------------------------------------------
    def _outstanding(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for graph in self.runs.values():
            for hw, per in graph.counts().items():
                counts[hw] = counts.get(hw, 0) + per.get("queued", 0) + per.get("running", 0)
        return counts

    def _dispatch(self) -> None:
        if not self.runs:
            return
        outstanding = self._outstanding()
        for graph in list(self.runs.values()):
            room = {hw: self.window - outstanding.get(hw, 0) for hw in graph.hardware_kinds}
            specs = graph.take_ready(room)
            if not specs:
                continue
            updates = [graph.mark_queued(s.test_id) for s in specs]
            for s in specs:
                outstanding[s.hardware] = outstanding.get(s.hardware, 0) + 1
            now = time.time()
            # Queued is never final, so no finished_at: the rows _update_row would build, minus its work.
            rows = [{"run_id": graph.run_id, "test_id": u.test_id, "status": u.status, "attempts": u.attempts,
                     "reason": u.reason, "queued_at": now, "finished_at": None} for u in updates]
            self.store.update_tests(rows, token=self.token())
            self._publish(graph.run_id, [(u.test_id, u.attempts) for u in updates])

    def _publish(self, run_id: str, items: Sequence[tuple[str, int]]) -> None:
        """Publish run_test tasks; the source comes from the store, not from memory.

        One keyed DuckDB read for all of them, the stored spec JSON passed through as is
        (no dataclass round trip), every payload checked against the cap before the first
        is sent, and the sends pipelined: inside kombu's ``Producer.batch`` the Redis
        transport buffers the LPUSHes and sends up to 1,000 in one round trip (transports
        without batching, like the in-memory one, publish each at once)."""
        from contextlib import nullcontext

        self._mark_published(run_id, items)
        stored = self.store.test_sources(run_id, [tid for tid, _ in items])
        messages = []
        for test_id, attempt in items:
            spec, source, template_hash = stored[test_id]
            spec = _json(spec)
            payload = {"run_id": run_id, "attempt": attempt,
                       "test": {"spec": spec, "source": source, "template_hash": template_hash}}
            size = len(_dumps(payload))
            if size > self.max_payload:
                raise PayloadTooLarge(f"test {test_id}: payload is {size} bytes, over the {self.max_payload}-byte cap")
            messages.append((payload, queue_for(spec["hardware"]), task_id_for(run_id, test_id, attempt)))
        batch = getattr(self._producer, "batch", None)  # kombu >= 5.7
        with batch(1000) if batch is not None else nullcontext():
            for payload, queue, task_id in messages:
                send_test(self.app, self._producer, payload, queue, task_id)

    # -- reconciliation ---------------------------------------------------------------------------
    def _mark_published(self, run_id: str, items: Sequence[tuple[str, int]]) -> None:
        now = time.time()
        for test_id, _ in items:
            self._silent_since[(run_id, test_id)] = now

    def _reconcile(self, now: float) -> None:
        """Re-publish tests that went silent: running ones for longer than their timeout plus
        grace (the worker died or the result was lost), queued ones for longer than the grace
        while their queue is empty (the task was lost with a Redis master or never sent).

        Same attempt number, same task id: the coordinator cannot tell a lost task from a slow
        one, and if both run, both results have the key (run, test, attempt) and the second
        write is a no-op. A new attempt number would store both and spend a retry.
        """
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
                queue = queue_for(t.spec.hardware)
                if queue not in depth:
                    depth[queue] = self._queue_depth(queue)
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

    def _queue_depth(self, queue: str) -> int | None:
        """Messages waiting in a queue; 0 when Redis has no such list; None when unknown."""
        if self._producer is None:
            return None
        try:
            return int(self._producer.channel.queue_declare(queue=queue, passive=True).message_count)
        except ChannelError:
            return 0
        except Exception as exc:  # noqa: BLE001 - a broker hiccup: decide next time
            log.info("cannot size queue %s: %s", queue, _first_line(exc))
            return None

    # -- queries -------------------------------------------------------------------------------------
    def idle_queues(self, run_id: str) -> list[str]:
        """Queues with tests waiting and no live worker consuming them."""
        if self.servable is not None:
            return []
        served = {q for w in self.workers.values() for q in w.queues}
        waiting = {
            queue_for(hw)
            for hw, per in self.store.status_counts(run_id).items()
            if per.get("queued", 0) or per.get("pending", 0)
        }
        return sorted(waiting - served)

    def status(self, run_id: str) -> dict[str, Any]:
        run = self.store.run(run_id)
        if run is None:
            raise DtfError(f"unknown run {run_id!r}")
        counts = self.store.status_counts(run_id)
        return {"run": run, "counts": counts, "idle_queues": self.idle_queues(run_id),
                "finished": run["status"] != "running", "ingested": self.ingested, "duplicates_ignored": self.duplicates,
                "refused_messages": max(self.refused, dead_letter_count(self._redis()))}


class Candidate:
    """One `dtf coordinator` of a high-availability group: stands by until the leader lock is
    granted, then leads (opens the DuckDB file, consumes, dispatches) until the lease is lost
    or a write is fenced, then stands by again.

    The lock runs in its own thread; the serve loop checks ``lock.is_leader()`` on every
    poll, and every write asks for the token through ``fenced_token``, which refuses it once
    the lease deadline has passed, before Redis or the database has said anything."""

    def __init__(
        self,
        app: Celery,
        lock: LeaderLock,
        db_path: str,
        *,
        open_store: Callable[[str], Store] = Store,
        retry_s: float = 0.2,
    ) -> None:
        self.app = app
        self.lock = lock
        self.db_path = db_path
        self.open_store = open_store
        self.retry_s = retry_s
        self.terms: list[int] = []  # fencing tokens of the terms this process led, in order
        self._store: Store | None = None
        # Close the results database the moment the lease is lost, not after the broker
        # connection has been torn down: with Redis unreachable that teardown retries for
        # seconds, and the next leader cannot open the file until this process lets go.
        previous = lock.on_demoted

        def on_demoted() -> None:
            self._release_store()
            if previous is not None:
                previous()

        lock.on_demoted = on_demoted

    def _release_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            store.close()
            log.warning("%s: lease lost; results database closed", self.lock.node_id)

    def run(self, stop: threading.Event) -> None:
        """Until ``stop``: stand by, lead while leader. Releases the lease on the way out."""
        lock_stop = threading.Event()
        lock_thread = threading.Thread(target=self.lock.run, args=(lock_stop,), name="dtf-leader-lock", daemon=True)
        lock_thread.start()
        try:
            while not stop.is_set():
                if self.lock.is_leader():
                    self._lead(stop)
                else:
                    stop.wait(0.05)
        finally:
            lock_stop.set()
            lock_thread.join(timeout=10)

    def fenced_token(self) -> int:
        """The token for a write, or FencingError once this node's lease has lapsed."""
        token = self.lock.token()
        if token is None:
            raise FencingError("the leader lease lapsed; write refused")
        return token

    def _lead(self, stop: threading.Event) -> None:
        store = self._open_store(stop)
        if store is None:
            return
        self._store = store
        try:
            token = self.lock.raise_token(store.max_token() + 1)
            self.terms.append(token)
            log.warning("%s: leading with fencing token %d, db %s", self.lock.node_id, token, self.db_path)
            # A new term (the lease was lost and won again, as after a Redis restart without
            # its data) closed this store: leave, and lead the new term with a fresh one.
            while not stop.is_set() and self.lock.is_leader() and self.lock.token() == token and not store.closed:
                self._serve_term(store, stop)
        except FencingError as exc:
            log.error("%s: %s; stepping down", self.lock.node_id, exc)
            self.lock.step_down("a write was fenced")
        except NotLeader:
            pass  # the lease lapsed between opening the file and claiming the token
        finally:
            self._store = None
            store.close()
            log.warning("%s: standing by (results database closed)", self.lock.node_id)

    def _serve_term(self, store: Store, stop: threading.Event) -> None:
        """One serve loop; a broker failure (say, a Redis failover) restarts it from the database."""
        coordinator = Coordinator(self.app, store, token=self.fenced_token)
        try:
            coordinator.serve(stop, leading=self.lock.is_leader)
        except (StoreError, NotLeader):  # FencingError included: the caller steps down
            raise
        except Exception as exc:  # noqa: BLE001 - kombu and redis raise many kinds
            if store.closed:
                return  # demoted mid-loop: the store was closed under it; the caller leaves this term
            log.warning("%s: broker connection lost (%s); reconnecting", self.lock.node_id, _first_line(exc))
            stop.wait(1.0)

    def _open_store(self, stop: threading.Event) -> Store | None:
        """Open the file read-write; it stays locked while a previous leader still has it open."""
        warned = False
        while not stop.is_set() and self.lock.is_leader():
            try:
                return self.open_store(self.db_path)
            except StoreError as exc:
                if not warned:
                    log.warning("%s: elected, waiting for the results database: %s", self.lock.node_id, exc)
                    warned = True
                stop.wait(self.retry_s)
        return None


def _status_op(c: Coordinator, body: Mapping[str, Any]) -> Any:
    return c.status(str(body["run_id"]))


def _results_op(c: Coordinator, body: Mapping[str, Any]) -> Any:
    run_id = str(body["run_id"])
    if c.store.run(run_id) is None:
        raise DtfError(f"unknown run {run_id!r}")
    return {"run": c.store.run(run_id), "tests": c.store.final_results(run_id)}


def _runs_op(c: Coordinator, body: Mapping[str, Any]) -> Any:
    return c.store.runs(int(body.get("limit", 20)))


def _report_op(c: Coordinator, body: Mapping[str, Any]) -> Any:
    """A run's tests, and with ``baseline`` (a run id or "latest") the baseline's tests
    and history, for `dtf report` and `submit --wait --output-dir`."""
    baseline = body.get("baseline")
    return c.store.report_data(
        str(body["run_id"]), baseline=str(baseline) if baseline else None,
        history=int(body.get("history", 5)), fast_quantile=float(body.get("fast_quantile", 0.1)),
    )


def _workers_op(c: Coordinator, body: Mapping[str, Any]) -> Any:
    return c.store.workers()


def _ping_op(c: Coordinator, body: Mapping[str, Any]) -> Any:
    return {"pong": True, "runs": len(c.runs), "token": c.token()}


def _worker_health_op(c: Coordinator, body: Mapping[str, Any]) -> Any:
    return c.store.worker_health(str(body["worker_id"]), int(body.get("limit", 360)))


def _run_progress_op(c: Coordinator, body: Mapping[str, Any]) -> Any:
    return c.store.run_progress(int(body.get("limit", 20)))


def _run_matrix_op(c: Coordinator, body: Mapping[str, Any]) -> Any:
    run_id = str(body["run_id"])
    if c.store.run(run_id) is None:
        raise DtfError(f"unknown run {run_id!r}")
    return c.store.run_matrix(run_id)


def _metric_trends_op(c: Coordinator, body: Mapping[str, Any]) -> Any:
    suite = body.get("suite_name")
    return c.store.metric_trends(int(body.get("runs", 30)), suite_name=str(suite) if suite else None)


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


_QUERIES: dict[str, Callable[[Coordinator, Mapping[str, Any]], Any]] = {
    "status": _status_op,
    "results": _results_op,
    "runs": _runs_op,
    "report": _report_op,
    "workers": _workers_op,
    "ping": _ping_op,
    "worker_health": _worker_health_op,
    "run_progress": _run_progress_op,
    "run_matrix": _run_matrix_op,
    "metric_trends": _metric_trends_op,
}

assert set(_QUERIES) == QUERY_OPS, "dtf.client.QUERY_OPS must name exactly the coordinator's queries"


def _check_hardware(tests: Sequence[RenderedTest]) -> None:
    unknown = sorted({t.spec.hardware for t in tests} - set(HARDWARE_KINDS))
    if unknown:  # the CLI refuses these; a forged submit must not reach the store either
        raise HardwareError(f"unknown hardware {', '.join(map(repr, unknown))} "
                            f"(expected one of {', '.join(HARDWARE_KINDS)})")


def _update_row(run_id: str, u: Update) -> dict[str, Any]:
    final = u.status in {s.value for s in (Status.PASSED, Status.FAILED, Status.ERROR, Status.TIMEOUT, Status.SKIPPED)}
    return {"run_id": run_id, "test_id": u.test_id, "status": u.status, "attempts": u.attempts,
            "reason": u.reason, "queued_at": None, "finished_at": time.time() if final else None}


def _json(text: Any) -> Any:
    return json.loads(text) if isinstance(text, str) else text


