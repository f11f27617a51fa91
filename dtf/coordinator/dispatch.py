"""Dispatch: publishing the tests that are ready, a bounded window per hardware queue."""

from __future__ import annotations

import logging
import time
from typing import Sequence

from ..bus import TestTask, dumps, task_id_for, task_payload
from ..errors import PayloadTooLarge
from ..requirements import queue_of
from ..model import Status
from .state import RESEND_WINDOW_S, CoordinatorState, from_json

__all__ = ["DispatchPolicy"]

log = logging.getLogger("dtf.coordinator")


class DispatchPolicy(CoordinatorState):
    def _outstanding(self) -> dict[str, int]:
        """Tests queued or running per hardware kind, across every active run."""
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
            # Queued is never final, so no finished_at: the rows update_row would build, minus its work.
            rows = [{"run_id": graph.run_id, "test_id": u.test_id, "status": u.status, "attempts": u.attempts,
                     "reason": u.reason, "queued_at": now, "finished_at": None} for u in updates]
            self.store.update_tests(rows, token=self.token())
            self._publish(graph.run_id, [(u.test_id, u.attempts) for u in updates])

    def _publish(self, run_id: str, items: Sequence[tuple[str, int]], *, recheck: bool = False) -> None:
        """Publish run_test tasks; the source comes from the store, not from memory.

        One keyed DuckDB read for all of them, the stored spec JSON passed through as is
        (no dataclass round trip), every payload checked against the cap before the first
        is sent, and the sends pipelined by the port. Each is noted in ``carry.sent`` first: if
        the broker goes away mid-batch, the next serve loop publishes them again with
        ``recheck``, which makes a worker ask the coordinator whether the test already ran
        before it runs a copy (``_publish_again_after_loss``)."""
        self._mark_published(run_id, items)
        stored = self.store.test_sources(run_id, [tid for tid, _ in items])
        tasks: list[TestTask] = []
        for test_id, attempt in items:
            spec, source, template_hash = stored[test_id]
            spec = from_json(spec)
            payload = task_payload(run_id, attempt, {"spec": spec, "source": source, "template_hash": template_hash})
            if recheck:
                payload["recheck"] = True
            size = len(dumps(payload))
            if size > self.max_payload:
                raise PayloadTooLarge(f"test {test_id}: payload is {size} bytes, over the {self.max_payload}-byte cap")
            tasks.append((payload, queue_of(spec), task_id_for(run_id, test_id, attempt)))
        # Noted before the send: a send the broker cuts off falls in the window before the loss.
        now = time.monotonic()
        self.carry.sent.extend((now, run_id, test_id, attempt) for test_id, attempt in items)
        self.port.send_tests(tasks)

    def _publish_again_after_loss(self) -> None:
        """After a lost broker connection: publish again, at once and with ``recheck``, what
        may not have survived it: the tests sent from RESEND_WINDOW_S before it on, a send the
        loss cut off included (a Sentinel failover can drop the old master's last writes).
        Only tests still queued at the attempt that was sent: a started one was delivered."""
        carry = self.carry
        if carry.lost_at is None:
            return
        since, carry.lost_at = carry.lost_at - RESEND_WINDOW_S, None
        again: dict[str, set[tuple[str, int]]] = {}
        for sent_at, run_id, test_id, attempt in carry.sent:
            if sent_at >= since:
                again.setdefault(run_id, set()).add((test_id, attempt))
        count = 0
        for run_id, items in again.items():
            graph = self.runs.get(run_id)
            if graph is None:
                continue
            queued = sorted((test_id, attempt) for test_id, attempt in items
                            if (t := graph.tests.get(test_id)) is not None and t.status == Status.QUEUED.value
                            and t.attempts == attempt)
            if queued:
                count += len(queued)
                self._publish(run_id, queued, recheck=True)
        if count:
            log.warning("re-publishing %d queued tests the lost broker connection may have dropped "
                        "(workers check each copy against the run before running it)", count)

    def _mark_published(self, run_id: str, items: Sequence[tuple[str, int]]) -> None:
        """Start the silence clock reconciliation watches (dtf/coordinator/liveness.py)."""
        now = time.time()
        for test_id, _ in items:
            self._silent_since[(run_id, test_id)] = now
