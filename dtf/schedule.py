"""Pure scheduling over one run's test graph: which tests are ready, in what order, what
happens when a result arrives (final, retry, or skip the dependants), and what a worker
cannot serve. No I/O: the coordinator moves events between this and the outside.

Order (``ordering``): ``lpt`` (the default) dispatches ready tests by priority, then
longest predicted duration first (``TestSpec.predicted_s``; unknown counts as 0), then suite
order; ``priority`` by priority then suite order; ``fifo`` in suite order alone. Only ready
tests (every dependency passed) are ever ordered, so dependencies always hold.

Retries: a failing attempt is retried while the test's ``retries`` allow; an infrastructure
error (dtf/flaky.py ``infrastructure_error``) is retried up to ``INFRA_RETRIES`` more times
on top, after a backoff (``Update.delay_s``). A pass after a failed attempt makes the test
``flaky``; a test in ``quarantined`` that ends failing is ``quarantined`` (neither fails the run).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from .flaky import infrastructure_error
from .model import FAILING_STATUSES, FINAL_STATUSES, PASSING_STATUSES, Status, TestResult, TestSpec

__all__ = ["TestState", "Update", "RunGraph", "ORDERINGS", "INFRA_RETRIES", "infra_backoff_s"]

_FINAL = {s.value for s in FINAL_STATUSES}
_FAILING = {s.value for s in FAILING_STATUSES}
_PASSING = {s.value for s in PASSING_STATUSES}
ORDERINGS = ("lpt", "priority", "fifo")
INFRA_RETRIES = 2  # extra attempts after infrastructure errors, on top of a test's own retries
_BACKOFF_BASE_S, _BACKOFF_MAX_S = 2.0, 60.0


def infra_backoff_s(retry: int) -> float:
    """The wait before the ``retry``-th re-run after an infrastructure error: 2, 4, 8 ... s, at most 60."""
    return float(min(_BACKOFF_MAX_S, _BACKOFF_BASE_S * 2.0 ** max(0, retry - 1)))


@dataclass(slots=True)
class TestState:
    """The coordinator's view of one test of a run."""

    __test__ = False

    spec: TestSpec
    status: str = Status.PENDING.value
    attempts: int = 0
    reason: str | None = None
    dependants: list[str] = field(default_factory=list)
    infra_retries: int = 0

    @property
    def final(self) -> bool:
        return self.status in _FINAL


@dataclass(frozen=True)
class Update:
    """A change of one test's state, as the store records it."""

    test_id: str
    status: str
    attempts: int
    reason: str | None = None
    requeue: bool = False  # publish again with attempt = attempts
    delay_s: float = 0.0  # ... after this long (backoff after an infrastructure error)


class RunGraph:
    """The tests of one run and their dependency edges."""

    def __init__(self, run_id: str, specs: Sequence[TestSpec], *, ordering: str = "lpt",
                 quarantined: Mapping[str, str] | None = None) -> None:
        if ordering not in ORDERINGS:
            raise ValueError(f"ordering {ordering!r}: expected one of {', '.join(ORDERINGS)}")
        self.run_id = run_id
        self.ordering = ordering
        self.quarantined = dict(quarantined or {})  # test id -> why it is quarantined
        self.order = {s.test_id: i for i, s in enumerate(specs)}
        self.tests: dict[str, TestState] = {s.test_id: TestState(s) for s in specs}
        for spec in specs:
            for parent in dict.fromkeys(spec.depends_on):  # a repeated parent must not dispatch twice
                if parent in self.tests:
                    self.tests[parent].dependants.append(spec.test_id)
        # Ready tests in dispatch order; kept incrementally so a 100k-test run is not rescanned.
        self._heap: list[tuple[int, float, int, str]] = []
        self._rebuild_ready()

    def _move(self, t: TestState, status: str) -> None:
        """Change a test's status and the per-hardware counts with it (no rescans)."""
        per = self._counts[t.spec.hardware]
        per[t.status] -= 1
        t.status = status
        per[status] = per.get(status, 0) + 1

    def _recount(self) -> None:
        self._counts: dict[str, dict[str, int]] = {}
        for t in self.tests.values():
            per = self._counts.setdefault(t.spec.hardware, {})
            per[t.status] = per.get(t.status, 0) + 1

    def _rebuild_ready(self) -> None:
        self._recount()
        self._heap = []
        for t in self.tests.values():
            self._push_if_ready(t)

    def _push_if_ready(self, t: TestState) -> None:
        if t.status != Status.PENDING.value:
            return
        if all(self.tests[p].status in _PASSING for p in t.spec.depends_on if p in self.tests):
            heapq.heappush(self._heap, self._key(t.spec))

    def _key(self, spec: TestSpec) -> tuple[int, float, int, str]:
        priority = 0 if self.ordering == "fifo" else -spec.priority
        longest = -(spec.predicted_s or 0.0) if self.ordering == "lpt" else 0.0
        return (priority, longest, self.order[spec.test_id], spec.test_id)

    # -- queries ----------------------------------------------------------------------
    def take_ready(self, room: Mapping[str, int]) -> list[TestSpec]:
        """Pop ready tests in order while their hardware has room (room[hardware] slots)."""
        left = dict(room)
        taken: list[TestSpec] = []
        held: list[tuple[int, float, int, str]] = []
        while self._heap and any(v > 0 for v in left.values()):
            item = heapq.heappop(self._heap)
            t = self.tests[item[3]]
            if t.status != Status.PENDING.value:
                continue
            if left.get(t.spec.hardware, 0) <= 0:
                held.append(item)
                continue
            left[t.spec.hardware] -= 1
            taken.append(t.spec)
        for item in held:
            heapq.heappush(self._heap, item)
        return taken

    def finished(self) -> bool:
        return all(n == 0 or st in _FINAL for per in self._counts.values() for st, n in per.items())

    def verdict(self) -> str:
        """'passed' when nothing failed, else 'failed' (skips alone do not fail a run)."""
        failing = any(n and st in _FAILING for per in self._counts.values() for st, n in per.items())
        return "failed" if failing else "passed"

    def counts(self) -> dict[str, dict[str, int]]:
        """{hardware: {status: n}}, kept as statuses change: O(kinds), not O(tests)."""
        return {hw: {st: n for st, n in per.items() if n} for hw, per in self._counts.items()}

    @property
    def hardware_kinds(self) -> frozenset[str]:
        return frozenset(self._counts)

    # -- transitions --------------------------------------------------------------------
    def mark_queued(self, test_id: str) -> Update:
        t = self.tests[test_id]
        self._move(t, Status.QUEUED.value)
        t.attempts += 1
        return Update(test_id, t.status, t.attempts)

    def mark_running(self, test_id: str, attempt: int) -> Update | None:
        t = self.tests.get(test_id)
        if t is None or t.final or attempt != t.attempts:
            return None
        self._move(t, Status.RUNNING.value)
        return Update(test_id, t.status, t.attempts)

    def apply_result(self, result: TestResult) -> list[Update]:
        """The updates one result causes; a stale or duplicate result causes none."""
        t = self.tests.get(result.test_id)
        if t is None or t.final or result.attempt != t.attempts:
            return []
        infra = result.status in _FAILING and infrastructure_error(result.status, result.error) \
            and t.infra_retries < INFRA_RETRIES
        if infra:
            t.infra_retries += 1
        if result.status in _FAILING and t.attempts <= t.spec.retries + t.infra_retries:
            self._move(t, Status.QUEUED.value)
            t.attempts += 1
            delay = infra_backoff_s(t.infra_retries) if infra else 0.0
            t.reason = f"retry after attempt {result.attempt}: {result.status}" + (
                f" (infrastructure: {result.error}; after {delay:g} s)" if infra else "")
            return [Update(t.spec.test_id, t.status, t.attempts, t.reason, requeue=True, delay_s=delay)]
        status, reason = result.status, (result.error if result.status != Status.PASSED.value else None)
        if status == Status.PASSED.value and t.attempts > 1:
            status, reason = Status.FLAKY.value, f"passed on attempt {result.attempt} after a failing one ({t.reason})"
        elif status in _FAILING and t.spec.test_id in self.quarantined:
            status, reason = Status.QUARANTINED.value, (f"{result.status} while quarantined "
                                                        f"({self.quarantined[t.spec.test_id]}): {result.error or ''}".rstrip(": "))
        self._move(t, status)
        t.reason = reason
        updates = [Update(t.spec.test_id, t.status, t.attempts, t.reason)]
        if status in _PASSING:
            for child in t.dependants:
                self._push_if_ready(self.tests[child])
        else:
            updates += self._skip_dependants(t.spec.test_id, f"dependency {t.spec.test_id} {result.status}")
        return updates

    def mark_cached(self, test_id: str, reason: str) -> list[Update]:
        """A pending test whose result is reused from an earlier run (dtf/cache.py): final at
        once, and its dependants become ready as after a pass."""
        t = self.tests[test_id]
        if t.status != Status.PENDING.value:
            return []
        self._move(t, Status.CACHED.value)
        t.attempts = max(t.attempts, 1)  # the cached result is stored as attempt 1
        t.reason = reason
        for child in t.dependants:
            self._push_if_ready(self.tests[child])
        return [Update(test_id, t.status, t.attempts, reason)]

    def skip(self, test_ids: Iterable[str], reason: str) -> list[Update]:
        """Skip tests that cannot run (e.g. no worker serves their hardware), and their dependants."""
        updates: list[Update] = []
        skipped = []
        for test_id in test_ids:  # all of them first, so each carries the real reason
            t = self.tests[test_id]
            if t.final:
                continue
            self._move(t, Status.SKIPPED.value)
            t.reason = reason
            updates.append(Update(test_id, t.status, t.attempts, reason))
            skipped.append(test_id)
        for test_id in skipped:
            updates += self._skip_dependants(test_id, f"dependency {test_id} skipped")
        return updates

    def unservable(self, servable_kinds: Iterable[str]) -> list[str]:
        kinds = set(servable_kinds)
        return [tid for tid, t in self.tests.items() if not t.final and t.spec.hardware not in kinds]

    def _skip_dependants(self, test_id: str, reason: str) -> list[Update]:
        updates: list[Update] = []
        stack = list(self.tests[test_id].dependants)
        while stack:
            child = self.tests[stack.pop()]
            if child.final:
                continue
            self._move(child, Status.SKIPPED.value)
            child.reason = reason
            updates.append(Update(child.spec.test_id, child.status, child.attempts, reason))
            stack.extend(child.dependants)
        return updates

    @classmethod
    def restore(cls, run_id: str, specs: Sequence[TestSpec], states: Mapping[str, Mapping[str, object]], *,
                ordering: str = "lpt", quarantined: Mapping[str, str] | None = None) -> "RunGraph":
        """Rebuild a graph from stored test rows (status, attempts, reason) after a restart."""
        graph = cls(run_id, specs, ordering=ordering, quarantined=quarantined)
        for test_id, row in states.items():
            t = graph.tests.get(test_id)
            if t is not None:
                t.status = str(row.get("status") or Status.PENDING.value)
                t.attempts = int(row.get("attempts") or 0)  # type: ignore[call-overload]
                t.reason = row.get("reason")  # type: ignore[assignment]
        graph._rebuild_ready()
        return graph
