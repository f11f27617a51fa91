"""What the coordinator learns from the results history and applies to a run.

Applied here, in the coordinator, because it owns the store: the submitting side (``dtf
submit`` on a laptop, a CI job) may not be able to read it, and the embedded ``dtf run`` is
the same coordinator, so one place serves both.

- **At submit**, chunk by chunk before it is stored, each test gets its prediction
  (dtf/predict.py, over the store's passed attempts): ``predicted_s`` (the median, which
  orders dispatch longest-first), a timeout of ``Prediction.timeout_s`` when the test kept
  the built-in default (``DEFAULT_TIMEOUT_S``: a suite that set a timeout keeps its own),
  a memory requirement raised to the predicted peak when that is larger than the static
  estimate, and its result cache key (dtf/cache.py).
- **At start**, the run's graph gets its ordering (run info ``ordering``: lpt, priority or
  fifo), the quarantined tests (the store's quarantine list, plus, when
  ``DTF_AUTO_QUARANTINE`` sets a threshold, the flaky pairs dtf/flaky.py proposes, stored as
  added by ``auto`` for ``AUTO_QUARANTINE_DAYS``), and, when the run asked for ``reuse``,
  the cached tests (dtf/cache.py's rule; the live stacks from heartbeats, or this process's
  own stack in the embedded mode).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any, Mapping, Sequence

from ..cache import Candidate, cache_key, choose
from ..flaky import Attempt, flake_rates, to_quarantine
from ..model import RenderedTest, TestResult, TestSpec
from ..predict import Predictor, observations
from ..schedule import ORDERINGS, RunGraph
from ..stack import fingerprint
from ..suite import estimate_memory_gb
from .dispatch import DispatchPolicy
from .state import from_json, update_row

__all__ = ["HistoryPolicy", "DEFAULT_TIMEOUT_S", "AUTO_QUARANTINE_DAYS", "run_info"]

log = logging.getLogger("dtf.coordinator")

DEFAULT_TIMEOUT_S = 300.0  # dtf.suite's built-in timeout: a test with it gets the predicted one
AUTO_QUARANTINE_DAYS = 7.0


def run_info(row: Mapping[str, Any] | None) -> dict[str, Any]:
    info = (row or {}).get("info")
    try:
        info = json.loads(info) if isinstance(info, str) else info
    except ValueError:
        info = None
    return info if isinstance(info, dict) else {}


def _static_memory(spec: TestSpec, batch_size: int) -> float:
    return estimate_memory_gb(spec.family, batch_size, spec.precision, spec.hardware, spec.params)


class HistoryPolicy(DispatchPolicy):
    _predictor_for: tuple[str, Predictor] | None = None

    # -- at submit ------------------------------------------------------------------------------
    def _predictor(self, submit_id: str) -> Predictor:
        """The history indexed once per submit: its chunks share it."""
        held = self._predictor_for
        if held is not None and held[0] == submit_id:
            return held[1]
        try:
            history = observations(self.store.history_rows())
        except Exception as exc:  # noqa: BLE001 - a prediction must never refuse a submit
            log.warning("no predictions: reading the history failed: %s", exc)
            history = []
        predictor = Predictor(history, _static_memory)
        self._predictor_for = (submit_id, predictor)
        return predictor

    def _with_history(self, tests: Sequence[RenderedTest], submit_id: str = "") -> list[RenderedTest]:
        """The tests with their predictions and cache keys applied (see the module docstring)."""
        if not tests:
            return []
        predictions = self._predictor(submit_id).predict([t.spec for t in tests])
        out = []
        for test, p in zip(tests, predictions):
            spec = test.spec
            changes: dict[str, Any] = {"cache_key": cache_key(test) or "", "predicted_s": p.duration_s}
            if spec.timeout_s == DEFAULT_TIMEOUT_S and p.duration_p95_s is not None:
                changes["timeout_s"] = p.timeout_s(DEFAULT_TIMEOUT_S)
            if p.basis != "static" and p.memory_gb > spec.memory_gb:
                changes["memory_gb"] = p.memory_gb
            out.append(dataclasses.replace(test, spec=dataclasses.replace(spec, **changes)))
        return out

    # -- at start -------------------------------------------------------------------------------
    def _graph_options(self, run_id: str, specs: Sequence[TestSpec]) -> dict[str, Any]:
        """RunGraph's ordering and quarantined tests for one run."""
        info = run_info(self.store.run(run_id))
        ordering = str(info.get("ordering") or "lpt")
        if ordering not in ORDERINGS:
            ordering = "lpt"
        return {"ordering": ordering, "quarantined": self._quarantined(specs)}

    def _quarantined(self, specs: Sequence[TestSpec]) -> dict[str, str]:
        threshold = getattr(self.settings, "auto_quarantine", None)
        if threshold is not None:
            self._auto_quarantine(float(threshold))
        entries: dict[tuple[str, str], str] = {}
        for row in self.store.quarantined():
            expires = row.get("expires_at")
            until = f", until {time.strftime('%Y-%m-%d %H:%M', time.gmtime(float(expires)))} UTC" if expires else ""
            entries[(str(row["test_id"]), str(row["hardware"]))] = f"{row.get('reason') or 'quarantined'}{until}"
        out = {}
        for spec in specs:
            why = entries.get((spec.test_id, spec.hardware)) or entries.get((spec.test_id, "*"))
            if why is not None:
                out[spec.test_id] = why
        return out

    def _auto_quarantine(self, threshold: float) -> None:
        rows = self.store.attempt_rows()
        attempts = [Attempt(str(r["run_id"]), str(r["test_id"]), str(r["hardware"]), int(r["attempt"]),
                            str(r["status"]), float(r["finished_at"] or 0.0)) for r in rows]
        held = {(str(r["test_id"]), str(r["hardware"])) for r in self.store.quarantined()}
        expires = time.time() + AUTO_QUARANTINE_DAYS * 86400
        for rate in to_quarantine(flake_rates(attempts).values(), threshold=threshold):
            if (rate.test_id, rate.hardware) in held:
                continue
            reason = f"auto: flaky in {rate.flaky_runs} of its last {rate.runs} runs on {rate.hardware} ({rate.rate:.0%})"
            self.store.quarantine_add(rate.test_id, rate.hardware, reason, added_by="auto", expires_at=expires,
                                      token=self.token())
            log.warning("quarantined %s on %s: %s", rate.test_id, rate.hardware, reason)

    def _new_graph(self, run_id: str, specs: Sequence[TestSpec]) -> RunGraph:
        return RunGraph(run_id, specs, **self._graph_options(run_id, specs))

    def _live_stacks(self) -> dict[str, frozenset[str]]:
        """Hardware kind -> the stack fingerprints of live workers consuming its queue."""
        if self.servable is not None:  # embedded: the worker is this process
            return {kind: frozenset({fingerprint()}) for kind in self.servable}
        out: dict[str, set[str]] = {}
        now = time.time()
        for seen in self.workers.values():
            stack = getattr(seen, "stack", "")
            if not stack or now - seen.last_seen > seen.offline_after_s:
                continue
            for queue in seen.queues:
                if queue.startswith("dtf.") and queue.count(".") == 1:
                    out.setdefault(queue.split(".", 1)[1], set()).add(stack)
        return {k: frozenset(v) for k, v in out.items()}

    def _reuse_cached(self, graph: RunGraph) -> None:
        """Record as cached every pending test the run's ``reuse`` lets an earlier result stand for."""
        info = run_info(self.store.run(graph.run_id))
        if "reuse" not in info:
            return
        raw = info.get("reuse")
        max_age = float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else None
        keys = {tid: t.spec.cache_key for tid, t in graph.tests.items() if t.spec.cache_key and not t.final}
        if not keys:
            return
        candidates = [
            Candidate(str(r["key"]), str(r["run_id"]), str(r["test_id"]), int(r["attempt"]), str(r["hardware"]),
                      float(r["duration_s"] or 0.0), float(r["finished_at"] or 0.0),
                      str((from_json(r["metrics"]) or {}).get("stack_fingerprint") or ""), from_json(r["metrics"]) or {})
            for r in self.store.cache_candidates(sorted(set(keys.values())))
            if r["run_id"] != graph.run_id
        ]
        chosen = choose(keys, candidates, self._live_stacks(), now=time.time(), max_age_s=max_age)
        if not chosen:
            return
        now = time.time()
        results, updates = [], []
        for test_id in graph.order:  # suite order, so a dependant follows what it waits for
            source = chosen.get(test_id)
            if source is None:
                continue
            reason = (f"cached from run {source.run_id} (test {source.test_id}, attempt {source.attempt}); "
                      f"saved {source.duration_s:.3g} s")
            marked = graph.mark_cached(test_id, reason)
            if not marked:
                continue
            updates += marked
            spec = graph.tests[test_id].spec
            metrics = {**dict(source.metrics), "cached_from": source.link(), "saved_s": round(source.duration_s, 4)}
            results.append(TestResult(graph.run_id, test_id, 1, "cached", 0.0, 0.0, metrics, None, None,
                                      "", "", spec.hardware, now, now))
        self.store.ingest_batch(results, [update_row(graph.run_id, u) for u in updates], token=self.token())
        saved = sum(float(r.metrics["saved_s"]) for r in results)
        log.info("run %s: %d test(s) reused from earlier results, %.1f s saved", graph.run_id, len(results), saved)
