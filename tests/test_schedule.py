"""The pure scheduling logic over one run's test graph: ready order, metered dispatch,
results to final states or retries, skipping what depends on a failure, and restore."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from dtf.model import HARDWARE_KINDS, TestResult, TestSpec
from dtf.schedule import RunGraph, Update

RUN = "run"


def spec(test_id: str, hardware: str = "cpu", **kw: Any) -> TestSpec:
    return TestSpec(test_id, "bert-base", "encoder", hardware, 1, "fp32", "encoder/latency", **kw)


def ids(specs: list[TestSpec]) -> list[str]:
    return [s.test_id for s in specs]


ROOM = {kind: 100 for kind in HARDWARE_KINDS}


def dispatch(graph: RunGraph, room: dict[str, int] | None = None) -> list[str]:
    """Take what is ready and mark it queued, as the coordinator does."""
    taken = ids(graph.take_ready(room or ROOM))
    for test_id in taken:
        graph.mark_queued(test_id)
    return taken


def finish(graph: RunGraph, test_id: str, status: str, attempt: int | None = None) -> list[Update]:
    attempt = graph.tests[test_id].attempts if attempt is None else attempt
    return graph.apply_result(TestResult(RUN, test_id, attempt, status, error=f"{test_id} {status}"))


def statuses(graph: RunGraph) -> dict[str, str]:
    return {tid: t.status for tid, t in graph.tests.items()}


# -- ready order and metered dispatch ------------------------------------------------------------

def test_ready_tests_come_highest_priority_first_then_in_suite_order() -> None:
    graph = RunGraph(RUN, [spec("a", priority=1), spec("b", priority=9), spec("c", priority=5), spec("d", priority=9)])
    assert ids(graph.take_ready(ROOM)) == ["b", "d", "c", "a"]


def test_a_test_is_not_ready_until_its_parent_passes() -> None:
    graph = RunGraph(RUN, [spec("parent"), spec("child", depends_on=("parent",))])
    assert dispatch(graph) == ["parent"]
    assert graph.take_ready(ROOM) == []
    finish(graph, "parent", "passed")
    assert dispatch(graph) == ["child"]


def test_a_test_with_two_parents_waits_for_both() -> None:
    graph = RunGraph(RUN, [spec("a"), spec("b"), spec("child", depends_on=("a", "b"))])
    dispatch(graph)
    finish(graph, "a", "passed")
    assert graph.take_ready(ROOM) == []
    finish(graph, "b", "passed")
    assert dispatch(graph) == ["child"]


def test_a_parent_named_twice_does_not_dispatch_its_child_twice() -> None:
    graph = RunGraph(RUN, [spec("a"), spec("child", depends_on=("a", "a"))])
    dispatch(graph)
    finish(graph, "a", "passed")
    assert dispatch(graph) == ["child"]


def test_take_ready_stops_at_the_room_each_hardware_has() -> None:
    graph = RunGraph(RUN, [spec("c1"), spec("g1", "cuda"), spec("c2"), spec("g2", "cuda"), spec("c3")])
    assert ids(graph.take_ready({"cpu": 2, "cuda": 1})) == ["c1", "g1", "c2"]
    assert ids(graph.take_ready({"cpu": 5, "cuda": 5})) == ["g2", "c3"]


def test_tests_for_hardware_without_room_stay_ready_for_later() -> None:
    graph = RunGraph(RUN, [spec("g1", "cuda"), spec("c1")])
    assert ids(graph.take_ready({"cpu": 1})) == ["c1"]
    assert graph.take_ready({"cpu": 1}) == []
    assert ids(graph.take_ready({"cuda": 1})) == ["g1"]


def test_take_ready_with_no_room_takes_nothing() -> None:
    graph = RunGraph(RUN, [spec("a")])
    assert graph.take_ready({}) == [] and graph.take_ready({"cpu": 0}) == []
    assert ids(graph.take_ready({"cpu": 1})) == ["a"]


def test_a_taken_test_is_never_taken_again() -> None:
    graph = RunGraph(RUN, [spec("a"), spec("b")])
    first = ids(graph.take_ready({"cpu": 1}))
    second = ids(graph.take_ready({"cpu": 5}))
    assert first == ["a"] and second == ["b"]
    assert graph.take_ready({"cpu": 5}) == []


@given(
    st.lists(st.tuples(st.sampled_from(HARDWARE_KINDS), st.integers(0, 9)), max_size=30),
    st.dictionaries(st.sampled_from(HARDWARE_KINDS), st.integers(0, 5)),
)
def test_take_ready_never_exceeds_room_and_keeps_priority_order_per_hardware(
    tests: list[tuple[str, int]], room: dict[str, int]
) -> None:
    specs = [spec(f"t{i}", hw, priority=p) for i, (hw, p) in enumerate(tests)]  # no dependencies: all ready
    graph = RunGraph(RUN, specs)
    taken = graph.take_ready(room)
    assert len({s.test_id for s in taken}) == len(taken)
    for kind in HARDWARE_KINDS:
        mine = [s for s in taken if s.hardware == kind]
        wanted = sorted((s for s in specs if s.hardware == kind),
                        key=lambda s: (-s.priority, int(s.test_id[1:])))
        assert mine == wanted[: room.get(kind, 0)]


# -- results ------------------------------------------------------------------------------------

def test_a_passing_result_is_final() -> None:
    graph = RunGraph(RUN, [spec("a")])
    dispatch(graph)
    assert finish(graph, "a", "passed") == [Update("a", "passed", 1, None)]
    assert graph.finished() and graph.verdict() == "passed"


def test_a_failure_with_retries_left_is_requeued_as_the_next_attempt() -> None:
    graph = RunGraph(RUN, [spec("a", retries=1)])
    dispatch(graph)
    (update,) = finish(graph, "a", "timeout")
    assert (update.status, update.attempts, update.requeue) == ("queued", 2, True)
    assert update.reason == "retry after attempt 1: timeout"
    (update,) = finish(graph, "a", "failed")
    assert (update.status, update.attempts, update.requeue) == ("failed", 2, False)
    assert graph.verdict() == "failed"


def test_a_retried_test_that_passes_is_flaky_and_passes_the_run() -> None:
    graph = RunGraph(RUN, [spec("a", retries=2)])
    dispatch(graph)
    finish(graph, "a", "error")
    finish(graph, "a", "passed")
    assert statuses(graph) == {"a": "flaky"} and graph.verdict() == "passed"


def test_a_stale_or_redelivered_result_changes_nothing() -> None:
    graph = RunGraph(RUN, [spec("a", retries=1)])
    dispatch(graph)
    finish(graph, "a", "failed")  # attempt 2 is now queued
    assert finish(graph, "a", "passed", attempt=1) == []  # a late copy of attempt 1
    finish(graph, "a", "passed")
    assert finish(graph, "a", "failed", attempt=2) == []  # attempt 2 delivered twice
    assert graph.apply_result(TestResult(RUN, "unknown", 1, "passed")) == []
    assert statuses(graph) == {"a": "flaky"}  # failed, then passed on the retry


def test_failed_parent_skips_its_dependants() -> None:
    graph = RunGraph(RUN, [spec("parent"), spec("child", depends_on=("parent",)), spec("other")])
    dispatch(graph)
    updates = finish(graph, "parent", "failed")
    assert Update("child", "skipped", 0, "dependency parent failed") in updates
    assert statuses(graph) == {"parent": "failed", "child": "skipped", "other": "queued"}


def test_failed_parent_skips_its_dependants_recursively() -> None:
    graph = RunGraph(RUN, [
        spec("root"), spec("mid", depends_on=("root",)), spec("leaf", depends_on=("mid",)),
        spec("diamond", depends_on=("root", "mid")),
    ])
    dispatch(graph)
    updates = finish(graph, "root", "timeout")
    assert statuses(graph) == {"root": "timeout", "mid": "skipped", "leaf": "skipped", "diamond": "skipped"}
    assert sorted(u.test_id for u in updates) == ["diamond", "leaf", "mid", "root"]  # each once
    assert graph.finished() and graph.verdict() == "failed"
    assert graph.take_ready(ROOM) == []


def test_a_skipped_parent_skips_its_dependants() -> None:
    graph = RunGraph(RUN, [spec("parent"), spec("child", depends_on=("parent",))])
    dispatch(graph)
    finish(graph, "parent", "skipped")
    assert graph.tests["child"].status == "skipped"
    assert graph.tests["child"].reason == "dependency parent skipped"


def test_skips_alone_do_not_fail_a_run() -> None:
    graph = RunGraph(RUN, [spec("a"), spec("b")])
    dispatch(graph)
    finish(graph, "a", "passed")
    finish(graph, "b", "skipped")
    assert graph.finished() and graph.verdict() == "passed"


def test_mark_running_ignores_an_attempt_that_is_not_current() -> None:
    graph = RunGraph(RUN, [spec("a")])
    dispatch(graph)
    assert graph.mark_running("a", 2) is None
    assert graph.mark_running("missing", 1) is None
    assert graph.mark_running("a", 1) == Update("a", "running", 1)


# -- hardware nobody serves ---------------------------------------------------------------------

def test_unservable_hardware_is_skipped_with_its_dependants() -> None:
    graph = RunGraph(RUN, [spec("cpu1"), spec("gpu1", "cuda"), spec("after-gpu", depends_on=("gpu1",))])
    missing = graph.unservable({"cpu"})
    assert missing == ["gpu1"]
    updates = graph.skip(missing, "no worker serves cuda")
    assert [u.test_id for u in updates] == ["gpu1", "after-gpu"]
    assert graph.tests["gpu1"].reason == "no worker serves cuda"
    assert graph.tests["after-gpu"].reason == "dependency gpu1 skipped"
    assert dispatch(graph) == ["cpu1"]


def test_skip_leaves_final_tests_alone() -> None:
    graph = RunGraph(RUN, [spec("a")])
    dispatch(graph)
    finish(graph, "a", "passed")
    assert graph.skip(["a"], "late") == [] and graph.tests["a"].status == "passed"
    assert graph.unservable(set()) == []


def test_counts_group_statuses_by_hardware() -> None:
    graph = RunGraph(RUN, [spec("a"), spec("b"), spec("g", "cuda")])
    dispatch(graph, {"cpu": 1})
    assert graph.counts() == {"cpu": {"queued": 1, "pending": 1}, "cuda": {"pending": 1}}


# -- restore after a restart ---------------------------------------------------------------------

def test_restore_rebuilds_states_and_readiness_from_stored_rows() -> None:
    specs = [spec("done"), spec("child", depends_on=("done",)), spec("inflight"), spec("waiting", priority=9)]
    graph = RunGraph.restore(RUN, specs, {
        "done": {"status": "passed", "attempts": 1, "reason": None},
        "inflight": {"status": "queued", "attempts": 2, "reason": "retry after attempt 1: error"},
        "child": {"status": "pending", "attempts": 0},
        "gone": {"status": "passed", "attempts": 1},  # a row for a test no longer in the specs
    })
    assert statuses(graph) == {"done": "passed", "child": "pending", "inflight": "queued", "waiting": "pending"}
    assert graph.tests["inflight"].attempts == 2
    assert dispatch(graph) == ["waiting", "child"]
    assert finish(graph, "inflight", "passed", attempt=2) == [
        Update("inflight", "flaky", 2, "passed on attempt 2 after a failing one (retry after attempt 1: error)")]


def test_restore_keeps_a_failed_parents_dependants_off_the_ready_list() -> None:
    graph = RunGraph.restore(RUN, [spec("p"), spec("c", depends_on=("p",))], {"p": {"status": "failed", "attempts": 1}})
    assert graph.take_ready(ROOM) == []
