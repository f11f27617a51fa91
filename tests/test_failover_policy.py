"""Failover policy on the in-memory bus: a worker's death re-publishes a test it said it
started after its last heartbeat, once; `test_state` tells a worker handed a redelivered
task whether running it would repeat work."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from dtf.bus import MemoryMessage, MemoryPort, task_id_for
from dtf.store import Store

from .test_coordinator_policy import make, rendered, result, send_submit

REPLIES = "dtf.reply.state"


@pytest.fixture
def port() -> MemoryPort:
    return MemoryPort()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "failover.duckdb") as s:
        yield s


def heartbeat(worker_id: str, running: list[tuple[str, str, int]] = ()) -> dict:  # type: ignore[assignment]
    return {"op": "heartbeat", "worker": {
        "worker_id": worker_id, "hostname": "h", "queues": ["dtf.cpu"], "state": "online",
        "health": {"heartbeat_interval_s": 1.0,
                   "running_tests": [{"run_id": r, "test_id": t, "attempt": a} for r, t, a in running]},
    }}


def ask_state(c, run_id: str, test_id: str, attempt: int = 1) -> dict:  # type: ignore[no-untyped-def]
    c.on_control({"op": "test_state", "run_id": run_id, "test_id": test_id, "attempt": attempt,
                  "reply_to": REPLIES, "correlation_id": "s"}, MemoryMessage())
    c.tick()
    answer = c.port.replies[REPLIES].pop()
    assert answer["ok"], answer
    return answer["data"]


def test_a_test_started_after_the_last_heartbeat_is_published_again_once_when_its_worker_goes_silent(
    store: Store, port: MemoryPort, tmp_path: Path,
) -> None:
    c = make(store, port, tmp_path, grace_s=600)
    send_submit(c, "run-d", [rendered("slow", timeout_s=3600)])
    port.take("dtf.cpu")
    c.on_control(heartbeat("w1"), MemoryMessage())  # nothing running yet
    c.on_control({"op": "started", "run_id": "run-d", "test_id": "slow", "attempt": 1, "worker_id": "w1"}, MemoryMessage())
    assert ask_state(c, "run-d", "slow") == {"status": "running", "final": False, "running_on": ["w1"]}
    seen = c.workers["w1"]
    c._reconcile(seen.last_seen + seen.offline_after_s / 2)  # still within offline_after: nothing
    assert port.task_ids == [task_id_for("run-d", "slow", 1)]
    c._reconcile(seen.last_seen + seen.offline_after_s + 1)  # silent: offline, its test published again
    assert port.task_ids == [task_id_for("run-d", "slow", 1)] * 2
    assert [t["attempt"] for t in port.take("dtf.cpu")] == [1]
    c._reconcile(seen.last_seen + seen.offline_after_s + 2)  # once, not at every reconciliation
    assert port.task_ids == [task_id_for("run-d", "slow", 1)] * 2
    assert "w1" not in c.workers


def test_test_state_says_final_once_the_result_is_in_and_for_an_attempt_that_was_superseded(
    store: Store, port: MemoryPort, tmp_path: Path,
) -> None:
    c = make(store, port, tmp_path)
    send_submit(c, "run-s", [rendered("a"), rendered("b")])
    assert ask_state(c, "run-s", "a") == {"status": "queued", "final": False, "running_on": []}
    c.on_result(*result("run-s", "a"))
    c.tick(now=time.time() + 3600)
    assert ask_state(c, "run-s", "a")["final"] is True
    assert ask_state(c, "run-s", "b", attempt=7)["final"] is True  # not the attempt the coordinator waits for
    assert ask_state(c, "no-such-run", "a") == {"status": None, "final": False, "running_on": []}


def test_after_a_lost_connection_queued_tests_sent_just_before_it_or_cut_off_mid_send_go_out_again_with_recheck(
    store: Store, port: MemoryPort, tmp_path: Path,
) -> None:
    # A Sentinel failover can drop the old master's last writes, and a send the loss cuts off
    # may or may not have reached it: the next serve loop of the term publishes those tests
    # again at once (not after the reconciliation grace), flagged so a worker checks first.
    from dtf.coordinator.state import RESEND_WINDOW_S, Carry

    carry = Carry()
    c = make(store, port, tmp_path, grace_s=600, carry=carry)
    send_submit(c, "run-l", [rendered("old"), rendered("started"), rendered("recent")])
    assert len(port.take("dtf.cpu")) == 3
    c.on_control({"op": "started", "run_id": "run-l", "test_id": "started", "attempt": 1, "worker_id": "w1"},
                  MemoryMessage())
    c.tick()
    # All three were sent just now: say "old" went out well before the window.
    carry.sent = type(carry.sent)(((t - 2 * RESEND_WINDOW_S, r, i, a) if i == "old" else (t, r, i, a))
                                  for t, r, i, a in carry.sent)
    carry.lost_at = max(t for t, *_ in carry.sent) + 0.5
    carry.sent.append((carry.lost_at, "run-l", "cut-off", 1))  # a test the run does not have is skipped

    again = make(store, port, tmp_path, grace_s=600, carry=carry)
    again.start_term()
    tasks = port.take("dtf.cpu")
    assert [t["test"]["spec"]["test_id"] for t in tasks] == ["recent"]  # "started" was delivered; "old" is too old
    assert all(t["recheck"] is True for t in tasks)
    assert carry.lost_at is None
    again.start_term()  # a second loop without a new loss sends nothing
    assert port.take("dtf.cpu") == []


def test_a_dead_workers_test_taken_before_it_reported_started_is_published_again_with_recheck(
    store: Store, port: MemoryPort, tmp_path: Path,
) -> None:
    # A test reports itself started after 0.25 s: a worker killed sooner leaves it "queued"
    # to the coordinator, its message unacked in the broker. When the worker goes offline, the
    # still-queued tests whose messages workers hold unacked are published again at once.
    c = make(store, port, tmp_path, grace_s=600)
    send_submit(c, "run-h", [rendered("held"), rendered("waiting"), rendered("done")])
    port.take("dtf.cpu")
    c.on_control(heartbeat("w1"), MemoryMessage())
    c.on_result(*result("run-h", "done"))
    c.tick(idle=True)
    port.held = [task_id_for("run-h", "held", 1), task_id_for("run-h", "done", 1), task_id_for("run-h", "held", 2),
                 task_id_for("other-run", "held", 1)]
    seen = c.workers["w1"]
    c._reconcile(seen.last_seen + seen.offline_after_s / 2)  # w1 still counts as alive: nothing
    assert port.take("dtf.cpu") == []
    c._reconcile(seen.last_seen + seen.offline_after_s + 1)
    [task] = port.take("dtf.cpu")
    assert (task["test"]["spec"]["test_id"], task["attempt"], task["recheck"]) == ("held", 1, True)
