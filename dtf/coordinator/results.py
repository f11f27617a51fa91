"""Results: taken in batches (up to N messages or T ms, or at once when the batch holds every
result still outstanding or no message is waiting: adaptive batching, at most every
max(50 ms, 5x the last commit)), written in one DuckDB transaction, then acked in one round trip.

A crash before the ack redelivers, and the (run, test, attempt) key makes the second write
a no-op. After each batch the tests whose dependencies have now passed are dispatched."""

from __future__ import annotations

import logging
import time
from typing import Any

from ..acks import ack_all
from ..bus import RESULTS_QUEUE
from ..errors import FencingError
from ..model import TestResult
from ..schedule import RunGraph
from ..wire import MessageRefused, result_from_wire
from .dispatch import DispatchPolicy
from .state import update_row

__all__ = ["ResultPolicy"]

log = logging.getLogger("dtf.coordinator")

# The least time between two batches written because the coordinator was idle (raised to
# five times the last commit's time): a steady trickle of results makes at most 20 a second,
# and the first result after a quiet spell is written at once.
IDLE_FLUSH_GAP_S = 0.05


class ResultPolicy(DispatchPolicy):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._results: list[tuple[TestResult, Any]] = []  # (result, its message) awaiting the next flush
        self._delayed: list[tuple[float, str, str, int]] = []  # (due, run, test, attempt): retries after a backoff
        self._batch_started = 0.0
        self._last_flush = 0.0
        self._last_commit_s = 0.0

    def _on_result_message(self, body: Any, message: Any) -> None:
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

    def _idle_gap_s(self) -> float:
        """The least time between batches written because the coordinator was idle: 50 ms, or
        five times the last batch's commit, so that writing takes at most a fifth of the loop."""
        return min(self.batch_s, max(IDLE_FLUSH_GAP_S, 5 * self._last_commit_s))

    def _drain_timeout(self, poll_s: float, probe_s: float) -> float:
        """How long the loop may wait for a message: ``poll_s``, or with a result batch open
        ``probe_s`` once the idle gap has passed (a timeout then writes the batch), else until it passes."""
        if not self._results:
            return poll_s
        return min(poll_s, max(probe_s, self._last_flush + self._idle_gap_s() - time.monotonic()))

    def _flush_due(self, now: float, *, idle: bool = False) -> None:
        """Flush a batch that is full or old enough, or started notices with no batch to ride;
        publish the retries whose backoff is over.

        Adaptive batching: when no message is waiting (``idle``) a batch is written at once,
        at most once per ``IDLE_FLUSH_GAP_S``; when results keep arriving they gather until
        the batch is full or ``batch_s`` old, so a busy coordinator writes fewer, bigger batches."""
        if self._delayed:  # retries whose backoff is over
            due = [d for d in self._delayed if d[0] <= now]
            if due:
                self._delayed = [d for d in self._delayed if d[0] > now]
                for _, run_id, test_id, attempt in due:
                    if run_id in self.runs:
                        self._publish(run_id, [(test_id, attempt)])
        if self._results and (len(self._results) >= self.batch_size or now - self._batch_started >= self.batch_s
                              or (idle and now - self._last_flush >= self._idle_gap_s())):
            self._flush_results()
        elif self._started and not self._results:
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
        updates: list[dict[str, Any]] = [update_row(run_id, u) for run_id, u in started]
        requeue: list[tuple[str, str, int, float]] = []
        touched: dict[str, RunGraph] = {}
        for result in fresh.values():
            graph = self.runs.get(result.run_id)
            if graph is None:
                continue
            touched[graph.run_id] = graph
            self._silent_since.pop((result.run_id, result.test_id), None)
            for u in graph.apply_result(result):
                updates.append(update_row(graph.run_id, u))
                if u.requeue:
                    requeue.append((graph.run_id, u.test_id, u.attempts, u.delay_s))
        finished = [(g.run_id, g.verdict()) for g in touched.values() if g.finished()]
        t0 = time.monotonic()
        try:
            stored = self.store.ingest_batch(list(fresh.values()), updates, finished_runs=finished, token=self.token())
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
        self._last_flush = time.monotonic()
        self._last_commit_s = self._last_flush - t0
        for run_id, _ in finished:
            self.runs.pop(run_id, None)
        for run_id, test_id, attempt, delay in requeue:
            if delay > 0:  # an infrastructure error: again after the backoff (dtf/schedule.py)
                self._delayed.append((time.monotonic() + delay, run_id, test_id, attempt))
            else:
                self._publish(run_id, [(test_id, attempt)])
        self._dispatch()
