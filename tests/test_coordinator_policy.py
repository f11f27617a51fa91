"""Coordinator policy on the in-memory bus (dtf.bus.MemoryPort): the real Coordinator and a
real DuckDB file, with every message it sends kept in lists instead of on a broker.

Submits, dependency-ordered dispatch within the window, result batching and its acks,
duplicates, held status queries, reconciliation of a lost task, refused messages and a
demoted leader: each asserted on what was stored, published, replied and acked."""

from __future__ import annotations

import dataclasses

from pathlib import Path
from typing import Any, Iterator

import pytest

from dtf.cache import cache_key
from dtf.app import make_app
from dtf.bus import MemoryMessage, MemoryPort, submit_bodies, task_id_for, task_payload
from dtf.coordinator import Coordinator
from dtf.model import RenderedTest, TestResult, TestSpec
from dtf.settings import Settings
from dtf.store import Store

REPLIES = "dtf.reply.policy"


def rendered(test_id: str, *, depends_on: tuple[str, ...] = (), timeout_s: float = 300.0) -> RenderedTest:
    spec = TestSpec(test_id, "m", "generic", "cpu", 1, "fp32", "generic/x", depends_on=depends_on, timeout_s=timeout_s)
    return RenderedTest(spec, f"print({test_id!r})", "h")


@pytest.fixture
def port() -> MemoryPort:
    return MemoryPort()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "policy.duckdb") as s:
        yield s


def make(store: Store, port: MemoryPort, tmp_path: Path, **options: Any) -> Coordinator:
    app = make_app(Settings(spool_dir=str(tmp_path / "spool")))
    return Coordinator(app, store, port=port, **options)


def send_submit(c: Coordinator, run_id: str, tests: list[RenderedTest], *, chunk_size: int = 200) -> list[MemoryMessage]:
    bodies = submit_bodies(f"s-{run_id}", {"run_id": run_id, "suite_name": "s"}, [t.to_dict() for t in tests], chunk_size)
    bodies[0].update(reply_to=REPLIES, correlation_id="c-submit")
    messages = []
    for body in bodies:
        messages.append(MemoryMessage())
        c.on_control(body, messages[-1])
    return messages


def stored(store: Store, run_id: str) -> list[tuple[str, int, str]]:
    """(test, attempt, status) of every result row written for the run."""
    rows = store.query("SELECT test_id, attempt, status FROM results WHERE run_id = ? ORDER BY test_id, attempt", [run_id])
    return [(r["test_id"], r["attempt"], r["status"]) for r in rows]


def result(run_id: str, test_id: str, status: str = "passed", attempt: int = 1) -> tuple[dict[str, Any], MemoryMessage]:
    return {"result": TestResult(run_id, test_id, attempt, status).to_dict()}, MemoryMessage()


def test_a_chunked_submit_is_stored_answered_and_only_ready_tests_are_published(
    store: Store, port: MemoryPort, tmp_path: Path,
) -> None:
    c = make(store, port, tmp_path)
    tests = [rendered("a"), rendered("b"), rendered("c", depends_on=("a",))]
    messages = send_submit(c, "run-1", tests, chunk_size=2)
    assert [m.acked for m in messages] == [True, True]
    assert port.replies[REPLIES] == [{"ok": True, "data": {"run_id": "run-1"}, "correlation_id": "c-submit"}]
    # The task is the one payload dtf.bus builds, from the stored test (with the cache key
    # the coordinator computed at submit, dtf/cache.py); c waits for a.
    tasks = port.take("dtf.cpu")
    keyed = [dataclasses.replace(t, spec=dataclasses.replace(t.spec, cache_key=cache_key(t))) for t in tests[:2]]
    assert tasks == [task_payload("run-1", 1, t) for t in keyed]
    assert port.task_ids == [task_id_for("run-1", t, 1) for t in ("a", "b")]
    assert {r["test_id"]: r["status"] for r in store.tests("run-1")} == {"a": "queued", "b": "queued", "c": "pending"}

    body, message = result("run-1", "a")
    c.on_result(body, message)
    c.tick(now=1e12)  # the batch delay is over
    assert message.acked
    assert [t["test"]["spec"]["test_id"] for t in port.take("dtf.cpu")] == ["c"]  # its dependency passed


def test_the_window_bounds_what_is_queued_per_hardware_and_results_open_it(
    store: Store, port: MemoryPort, tmp_path: Path,
) -> None:
    c = make(store, port, tmp_path, window=2)
    send_submit(c, "run-w", [rendered(f"t{i}") for i in range(5)])
    assert len(port.take("dtf.cpu")) == 2
    body, message = result("run-w", "t0")
    c.on_result(body, message)
    c.tick(now=1e12)
    assert len(port.take("dtf.cpu")) == 1  # one finished, one more fits


def test_results_wait_for_their_batch_and_a_duplicate_is_counted_not_stored(
    store: Store, port: MemoryPort, tmp_path: Path,
) -> None:
    c = make(store, port, tmp_path, batch_size=10, batch_ms=60_000)
    send_submit(c, "run-b", [rendered("x"), rendered("y"), rendered("z")])
    first, again = result("run-b", "x"), result("run-b", "x")
    c.on_result(*first)
    c.on_result(*again)  # the same attempt delivered twice
    c.tick()  # the batch is neither full nor old: nothing written, nothing acked
    assert not first[1].acked and stored(store, "run-b") == []
    c.tick(now=1e12)
    assert first[1].acked and again[1].acked
    assert stored(store, "run-b") == [("x", 1, "passed")]
    assert (c.ingested, c.duplicates) == (1, 1)


def test_an_idle_coordinator_writes_a_batch_at_once_a_busy_one_waits_for_the_idle_gap(
    store: Store, port: MemoryPort, tmp_path: Path,
) -> None:
    c = make(store, port, tmp_path, batch_size=10, batch_ms=60_000)
    send_submit(c, "run-i", [rendered(f"t{i}") for i in range(4)])
    first = result("run-i", "t0")
    c.on_result(*first)
    c.tick(idle=False)  # more messages waiting: the batch stays open
    assert not first[1].acked and stored(store, "run-i") == []
    assert c._drain_timeout(0.05, 0.002) == 0.002  # no write for a while: look briefly for more, then write
    # nothing waiting: written at once (one idle gap after the last write; the clock is given,
    # not read, so the test does not depend on how fast it runs), long before the 60 s batch delay
    c.tick(now=c._last_flush + c._idle_gap_s() + 1e-3, idle=True)
    assert first[1].acked and stored(store, "run-i") == [("t0", 1, "passed")]

    second = result("run-i", "t1")
    c.on_result(*second)
    assert c._drain_timeout(0.05, 0.002) > 0.002  # just written: wait out the idle gap first
    c.tick(now=c._last_flush + c._idle_gap_s() / 2, idle=True)
    assert not second[1].acked  # within the gap since the last write
    c.tick(now=c._last_flush + c._idle_gap_s() + 1e-3, idle=True)  # just past the gap (no float-equality edge)
    assert second[1].acked and [r[0] for r in stored(store, "run-i")] == ["t0", "t1"]


def test_a_held_status_query_is_answered_the_moment_its_run_finishes(
    store: Store, port: MemoryPort, tmp_path: Path,
) -> None:
    c = make(store, port, tmp_path)
    send_submit(c, "run-h", [rendered("only")])
    asked = MemoryMessage()
    c.on_control({"op": "status", "run_id": "run-h", "wait_s": 30, "reply_to": "dtf.reply.held", "correlation_id": "q"},
                 asked)
    c.tick()
    assert asked.acked and "dtf.reply.held" not in port.replies
    c.on_result(*result("run-h", "only"))  # the last outstanding result: written at once
    c.tick()
    [answer] = port.replies["dtf.reply.held"]
    assert answer["ok"] and answer["correlation_id"] == "q"
    assert answer["data"]["finished"] and answer["data"]["run"]["status"] == "passed"


def test_a_queued_test_whose_task_was_lost_is_published_again_with_the_same_attempt(
    store: Store, port: MemoryPort, tmp_path: Path,
) -> None:
    c = make(store, port, tmp_path, grace_s=10)
    send_submit(c, "run-r", [rendered("lost")])
    published_at = c._silent_since[("run-r", "lost")]
    c._reconcile(published_at + 60)
    assert port.task_ids == [task_id_for("run-r", "lost", 1)]  # still in its queue: not lost
    port.take("dtf.cpu")  # gone from the queue, and no worker said it started
    c._reconcile(published_at + 5)
    assert port.task_ids == [task_id_for("run-r", "lost", 1)]  # within the grace
    c._reconcile(published_at + 60)
    assert port.task_ids == [task_id_for("run-r", "lost", 1)] * 2
    assert [t["attempt"] for t in port.take("dtf.cpu")] == [1]


def test_a_malformed_result_is_dead_lettered_acked_and_counted(store: Store, port: MemoryPort, tmp_path: Path) -> None:
    c = make(store, port, tmp_path)
    send_submit(c, "run-m", [rendered("t")])
    message = MemoryMessage()
    c.on_result({"result": {"run_id": "run-m", "test_id": "t", "attempt": 1, "status": "great"}}, message)
    assert message.acked and stored(store, "run-m") == []
    [(queue, reason, _)] = port.dead
    assert queue == "dtf.results" and "status" in reason
    assert c.status("run-m")["refused_messages"] == 1


def test_a_demoted_leader_neither_answers_nor_acks(store: Store, port: MemoryPort, tmp_path: Path) -> None:
    c = make(store, port, tmp_path)
    store.close()  # what the leader lock's thread does the moment the lease lapses
    message = MemoryMessage()
    c.on_control({"op": "ping", "reply_to": REPLIES, "correlation_id": "p"}, message)
    assert not message.acked and port.replies == {}
