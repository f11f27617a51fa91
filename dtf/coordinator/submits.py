"""Submits: a run arrives in chunks, each stored as it comes (dtf.store stages them), and
starts when the last chunk is in: memory holds one chunk at a time, however large the run."""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

from ..errors import HardwareError
from ..model import HARDWARE_KINDS, RenderedTest, TestSpec
from ..requirements import RequirementError, check_requires, describe, queue_of
from ..schedule import RunGraph
from .history import HistoryPolicy, run_info

__all__ = ["SubmitPolicy", "STALE_SUBMIT_AFTER_S"]

log = logging.getLogger("dtf.coordinator")

STALE_SUBMIT_AFTER_S = 3600.0  # a submit whose chunks stopped coming this long ago is dropped


class SubmitPolicy(HistoryPolicy):
    def _on_submit_chunk(self, body: Mapping[str, Any], message: Any) -> None:
        """Store one chunk of a submit as it arrives, ack it, and start the run when the last
        chunk is in."""
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
            _check_requires(tests)
            tests = self._with_history(tests, submit_id)
            error = None
        except HardwareError as exc:
            error = str(exc)
        except (KeyError, TypeError, ValueError) as exc:
            error = f"malformed submit: {exc}"
        staged, expected = self.store.stage_submit_chunk(submit_id, run_id, chunk, chunks, tests, run=body.get("run"),
                                               reply=reply, error=error, token=self.token())
        message.ack()
        if staged < expected:
            return
        done = self.store.finish_submit(submit_id, token=self.token())
        self._predictor_for = None  # the submit's indexed history: not needed any more
        if done["error"] is None:
            self._start_run(run_id, [TestSpec.from_dict(spec) for spec in self.store.iter_specs(run_id)])
        else:
            log.warning("submit of run %s refused: %s", run_id, done["error"])
        if done["reply"]:
            outcome = {"ok": True, "data": {"run_id": run_id}} if done["error"] is None else {"ok": False, "error": done["error"]}
            self._reply(done["reply"], outcome)

    def _start_run(self, run_id: str, specs: Sequence[TestSpec]) -> None:
        """Build a stored run's graph, skip what no worker can serve, publish what is ready."""
        graph = self._new_graph(run_id, specs)
        self.runs[run_id] = graph
        if self.servable is not None:
            missing = graph.unservable(self.servable)
            if missing:
                kinds = sorted({graph.tests[t].spec.hardware for t in missing})
                reason = f"no worker here serves {', '.join(kinds)} (this machine has {', '.join(sorted(self.servable))})"
                self._commit([], graph, graph.skip(missing, reason))
        else:
            self._skip_requested(graph)
        self._skip_unserved_routes(graph)
        self._reuse_cached(graph)
        self._dispatch()
        self._finish_if_done(graph)

    def _skip_unserved_routes(self, graph: RunGraph) -> None:
        """Skip the requirement sets the submitter found no live worker for (``skip_routes`` in
        the run's info: `dtf submit --skip-unserved`, and `dtf run` for what this machine lacks)."""
        routes = run_info(self.store.run(graph.run_id)).get("skip_routes")
        if not isinstance(routes, list) or not routes:
            return
        wanted = {str(q) for q in routes}
        by_queue: dict[str, list[str]] = {}
        for tid, t in graph.tests.items():
            if not t.final and t.spec.requires and queue_of(t.spec) in wanted:
                by_queue.setdefault(queue_of(t.spec), []).append(tid)
        for queue, missing in sorted(by_queue.items()):
            spec = graph.tests[missing[0]].spec
            reason = f"unserved: no live worker offers {describe(spec.requires)} on {spec.hardware} ({queue})"
            self._commit([], graph, graph.skip(missing, reason))

    def _skip_requested(self, graph: RunGraph) -> None:
        """Skip the hardware the submitter found no live worker for (`dtf submit --wait`
        without --wait-unserved puts it in the run's info as ``skip_hardware``)."""
        kinds = run_info(self.store.run(graph.run_id)).get("skip_hardware")
        if not isinstance(kinds, list) or not kinds:
            return
        kinds = sorted({str(k) for k in kinds})
        missing = [tid for tid, t in graph.tests.items() if t.spec.hardware in kinds and not t.final]
        if missing:
            reason = f"no live worker served {', '.join(kinds)} at submit (dtf submit --wait-unserved waits for one)"
            self._commit([], graph, graph.skip(missing, reason))


def _check_hardware(tests: Sequence[RenderedTest]) -> None:
    unknown = sorted({t.spec.hardware for t in tests} - set(HARDWARE_KINDS))
    if unknown:  # the CLI refuses these; a forged submit must not reach the store either
        raise HardwareError(f"unknown hardware {', '.join(map(repr, unknown))} "
                            f"(expected one of {', '.join(HARDWARE_KINDS)})")


def _check_requires(tests: Sequence[RenderedTest]) -> None:
    """A forged submit's requires: must be what a suite could have said (dtf.requirements)."""
    for t in tests:
        if t.spec.requires:
            try:
                check_requires(t.spec.requires)
            except RequirementError as exc:
                raise HardwareError(f"test {t.spec.test_id}: requires: {exc}") from None
