"""Queries: the read-only operations clients ask for (dtf.bus.QUERY_OPS), answered from the
store, and status queries held until their run finishes or their wait ends."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping

from ..bus import QUERY_OPS
from ..errors import DtfError, FencingError
from ..model import queue_for
from ..requirements import describe, queue_of
from .state import CoordinatorState

CANCEL_KEPT_S = 3600.0  # how long workers are told about a cancelled run (to drop its queued tests)

__all__ = ["QueryPolicy", "QUERIES", "MAX_STATUS_WAIT_S", "Demoted"]

log = logging.getLogger("dtf.coordinator")

MAX_STATUS_WAIT_S = 30.0  # longest a status query with wait_s is held before it is answered


class Demoted(Exception):
    """The lease lapsed while a message was handled: it is left for the next leader."""


class QueryPolicy(CoordinatorState):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Status queries held until their run finishes or their wait ends: (deadline, body).
        self._waiting: list[tuple[float, Mapping[str, Any]]] = []
        self._route_sets: dict[str, list[dict[str, Any]]] = {}  # run id -> its requirement sets (dtf.requirements)

    def routes(self) -> list[dict[str, Any]]:
        """The requirement sets of the active runs: what workers subscribe to (the `routes` query)."""
        # A cancelled run's sets stay named while workers are told of the cancel, so that
        # they drain its queued tests (dropped unrun) from the requirement queues.
        now = time.time()
        draining = {r for r, at in self.cancelled.items() if now - at < CANCEL_KEPT_S}
        self._route_sets = {r: sets for r, sets in self._route_sets.items() if r in self.runs or r in draining}
        seen: dict[str, dict[str, Any]] = {}
        for run_id in [*self.runs, *sorted(draining)]:
            for entry in self._sets_of(run_id) if run_id in self.runs else self._route_sets.get(run_id, []):
                seen.setdefault(entry["queue"], entry)
        return sorted(seen.values(), key=lambda e: e["queue"])

    def _sets_of(self, run_id: str) -> list[dict[str, Any]]:
        """One active run's requirement sets, found once per run."""
        graph = self.runs.get(run_id)
        if graph is None:
            return []
        if run_id not in self._route_sets:
            found: dict[str, dict[str, Any]] = {}
            for t in graph.tests.values():
                if t.spec.requires:
                    queue = queue_of(t.spec)
                    if queue not in found:
                        found[queue] = {"queue": queue, "hardware": t.spec.hardware, "requires": dict(t.spec.requires),
                                        "label": describe(t.spec.requires)}
            self._route_sets[run_id] = list(found.values())
        return self._route_sets[run_id]

    def _query(self, op: str, body: Mapping[str, Any]) -> None:
        """Answer one query, or hold a status query with ``wait_s``."""
        if op == "status" and self._hold_status(body):
            return  # answered by tick() when the run finishes or the wait ends
        self._answer(body, op, lambda: QUERIES[op](self, body))

    def _answer(self, body: Mapping[str, Any], op: str, compute: Callable[[], Any]) -> None:
        """Reply with what ``compute`` returns, or with its error; a fencing error ends the term."""
        try:
            data = compute()
        except FencingError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bad query must not stop the leader
            if self.demoted:
                # The lease lapsed while it ran: no error for the client, which asks again
                # and reaches the next leader.
                raise Demoted() from exc
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
            except Demoted:
                still = []  # the clients ask the next leader
                break
        self._waiting = still

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
        # Requirement queues (dtf.requirements) nobody consumes, while their tests are open.
        idle_sets = {e["queue"] for e in self._sets_of(run_id)} - served
        graph = self.runs.get(run_id)
        if idle_sets and graph is not None:
            waiting |= idle_sets & {queue_of(t.spec) for t in graph.tests.values() if not t.final and t.spec.requires}
        return sorted(waiting - served)

    def status(self, run_id: str) -> dict[str, Any]:
        run = self.store.run(run_id)
        if run is None:
            raise DtfError(f"unknown run {run_id!r}")
        counts = self.store.status_counts(run_id)
        return {"run": run, "counts": counts, "idle_queues": self.idle_queues(run_id),
                "finished": run["status"] != "running", "ingested": self.ingested, "duplicates_ignored": self.duplicates,
                "refused_messages": max(self.refused, self.port.dead_letters())}


def _status_op(c: QueryPolicy, body: Mapping[str, Any]) -> Any:
    return c.status(str(body["run_id"]))


def _results_op(c: QueryPolicy, body: Mapping[str, Any]) -> Any:
    run_id = str(body["run_id"])
    if c.store.run(run_id) is None:
        raise DtfError(f"unknown run {run_id!r}")
    return {"run": c.store.run(run_id), "tests": c.store.final_results(run_id)}


def _runs_op(c: QueryPolicy, body: Mapping[str, Any]) -> Any:
    return c.store.runs(int(body.get("limit", 20)))


def _report_op(c: QueryPolicy, body: Mapping[str, Any]) -> Any:
    """A run's tests, and with ``baseline`` (a run id or "latest") the baseline's tests
    and history, for `dtf report` and `submit --wait --output-dir`."""
    baseline = body.get("baseline")
    return c.store.report_data(
        str(body["run_id"]), baseline=str(baseline) if baseline else None,
        history=int(body.get("history", 5)), fast_quantile=float(body.get("fast_quantile", 0.1)),
    )


def _workers_op(c: QueryPolicy, body: Mapping[str, Any]) -> Any:
    return c.store.workers()


def _ping_op(c: QueryPolicy, body: Mapping[str, Any]) -> Any:
    return {"pong": True, "runs": len(c.runs), "token": c.token()}


def _worker_health_op(c: QueryPolicy, body: Mapping[str, Any]) -> Any:
    return c.store.worker_health(str(body["worker_id"]), int(body.get("limit", 360)))


def _run_progress_op(c: QueryPolicy, body: Mapping[str, Any]) -> Any:
    return c.store.run_progress(int(body.get("limit", 20)))


def _run_matrix_op(c: QueryPolicy, body: Mapping[str, Any]) -> Any:
    run_id = str(body["run_id"])
    if c.store.run(run_id) is None:
        raise DtfError(f"unknown run {run_id!r}")
    return c.store.run_matrix(run_id)


def _metric_trends_op(c: QueryPolicy, body: Mapping[str, Any]) -> Any:
    suite = body.get("suite_name")
    return c.store.metric_trends(int(body.get("runs", 30)), suite_name=str(suite) if suite else None)


def _routes_op(c: QueryPolicy, body: Mapping[str, Any]) -> Any:
    """What workers ask at each heartbeat: the live runs' requirement sets, and the runs
    cancelled lately (their running tests are stopped, their queued ones dropped)."""
    now = time.time()
    return {"routes": c.routes(), "cancelled": sorted(r for r, at in c.cancelled.items() if now - at < CANCEL_KEPT_S)}


def _scale_op(c: QueryPolicy, body: Mapping[str, Any]) -> Any:
    return c.store.scale_advice(time.time())


def _test_state_op(c: QueryPolicy, body: Mapping[str, Any]) -> Any:
    """Where one test attempt stands, for a worker handed a redelivered copy of its task:
    ``final`` (a result is stored, or its run ended) and ``running_on`` (live workers that
    said they run it)."""
    run_id, test_id, attempt = str(body["run_id"]), str(body["test_id"]), int(body["attempt"])
    graph = c.runs.get(run_id)
    if graph is None:
        run = c.store.run(run_id)
        return {"status": None, "final": run is not None and run.get("status") != "running", "running_on": []}
    t = graph.tests.get(test_id)
    if t is None:
        return {"status": None, "final": False, "running_on": []}
    key = (run_id, test_id, attempt)
    running_on = sorted(w for w, seen in c.workers.items() if key in seen.running)
    return {"status": t.status, "final": bool(t.final) or t.attempts != attempt, "running_on": running_on}


QUERIES: dict[str, Callable[[QueryPolicy, Mapping[str, Any]], Any]] = {
    "routes": _routes_op,
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
    "scale": _scale_op,
    "test_state": _test_state_op,
}

assert set(QUERIES) == QUERY_OPS, "dtf.bus.QUERY_OPS must name exactly the coordinator's queries"
