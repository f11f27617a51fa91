"""Cancel: `dtf cancel RUN_ID` ends a run early and keeps what had finished.

Results already received are written first; then every test not yet final (pending,
queued or running) is ``skipped`` with the reason ``cancelled`` (dtf.model.CANCELLED_REASON)
and the run ends ``cancelled``. Workers learn the cancelled runs from the ``routes`` query
at their next heartbeat (dtf.worker_control): they kill the process group of a running test
of the run and drop its tests still in the queues. A result that arrives after the cancel
is for a run that is over, and is not stored (dtf/coordinator/results.py).
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from ..errors import DtfError
from ..model import CANCELLED_REASON, RunStatus, Status
from .results import ResultPolicy
from .state import update_row

__all__ = ["CancelPolicy"]


class CancelPolicy(ResultPolicy):
    def _on_cancel(self, body: Mapping[str, Any]) -> None:
        self._reply(body, {"ok": True, "data": self.cancel(str(body["run_id"]))})

    def cancel(self, run_id: str) -> dict[str, Any]:
        """Cancel one run: {run_id, status, dropped, stopped, kept} (dropped: pending or queued tests;
        stopped: running ones; kept: tests that had already finished)."""
        run = self.store.run(run_id)
        if run is None:
            raise DtfError(f"unknown run {run_id!r}")
        if self._results:
            self._flush_results()  # results already here are kept
        graph = self.runs.get(run_id)
        if graph is None:
            return {"run_id": run_id, "status": str((self.store.run(run_id) or run)["status"]), "dropped": 0, "stopped": 0,
                    "kept": None, "already_over": True}
        open_tests = [tid for tid, t in graph.tests.items() if not t.final]
        running = sum(1 for tid in open_tests if graph.tests[tid].status == Status.RUNNING.value)
        kept = len(graph.tests) - len(open_tests)
        updates = graph.skip(open_tests, CANCELLED_REASON)
        self.store.ingest_batch([], [update_row(run_id, u) for u in updates],
                                finished_runs=[(run_id, RunStatus.CANCELLED.value)], token=self.token())
        self.runs.pop(run_id, None)
        for key in [k for k in self._silent_since if k[0] == run_id]:
            self._silent_since.pop(key, None)
        self.cancelled[run_id] = time.time()
        self._dispatch()  # the window this run held goes to the others
        return {"run_id": run_id, "status": RunStatus.CANCELLED.value, "dropped": len(open_tests) - running,
                "stopped": running, "kept": kept, "already_over": False}
