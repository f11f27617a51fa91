"""How the coordinator and workers keep per-test chatter low: a status query with
``wait_s`` is held until its run finishes (or the wait ends), and a worker reports a test
as started only when it is still running after STARTED_NOTICE_AFTER_S."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from kombu import Queue

from dtf.app import make_app
from dtf.bus import CONTROL_QUEUE, RESULTS_QUEUE
from dtf.bus import task_payload as payload_for
from dtf.coordinator import Coordinator
from dtf.model import RenderedTest, TestResult, TestSpec
from dtf.settings import Settings
from dtf.store import Store
from dtf.worker import WorkerRuntime

from .memory_broker import FakeMessage, attach, drain_bodies, empty, submit

REPLIES = "dtf.reply.test"
SPEC = TestSpec("m/cpu/bs1/fp32", "m", "generic", "cpu", 1, "fp32", "generic/x")


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    app = make_app(Settings(spool_dir=str(tmp_path / "spool")))
    empty(app, "dtf.cpu", RESULTS_QUEUE, CONTROL_QUEUE, REPLIES)
    store = Store(tmp_path / "c.duckdb")
    c = Coordinator(app, store)
    with app.connection_for_write() as conn:
        Queue(REPLIES)(conn.default_channel).declare()
        attach(c, conn.default_channel)
        yield c
    store.close()


def _ask_status(c: Coordinator, run_id: str, wait_s: float) -> FakeMessage:
    message = FakeMessage()
    c.on_control({"op": "status", "run_id": run_id, "wait_s": wait_s, "reply_to": REPLIES,
                   "correlation_id": "c1"}, message)
    return message


def test_a_held_status_query_is_answered_when_its_run_finishes(coordinator: Coordinator) -> None:
    submit(coordinator, {"run_id": "run-w", "suite_name": "s"}, [RenderedTest(SPEC, "print(1)", "h")])
    asked = _ask_status(coordinator, "run-w", 30.0)
    assert asked.acked  # held in memory, not in the queue
    coordinator.tick()
    assert drain_bodies(coordinator.app, REPLIES) == []  # still running: no answer yet

    coordinator._on_result_message({"result": TestResult("run-w", SPEC.test_id, 1, "passed").to_dict()},
                                   FakeMessage())
    coordinator._flush_results()
    coordinator.tick()
    [reply] = drain_bodies(coordinator.app, REPLIES)
    assert reply["ok"] and reply["correlation_id"] == "c1"
    assert reply["data"]["finished"] is True and reply["data"]["counts"] == {"cpu": {"passed": 1}}


def test_a_held_status_query_is_answered_when_its_wait_ends(coordinator: Coordinator) -> None:
    submit(coordinator, {"run_id": "run-x", "suite_name": "s"}, [RenderedTest(SPEC, "print(1)", "h")])
    _ask_status(coordinator, "run-x", 5.0)
    coordinator.tick(time.monotonic() + 6.0)
    [reply] = drain_bodies(coordinator.app, REPLIES)
    assert reply["ok"] and reply["data"]["finished"] is False


def test_a_status_query_without_a_wait_or_for_a_finished_run_is_answered_at_once(coordinator: Coordinator) -> None:
    submit(coordinator, {"run_id": "run-y", "suite_name": "s"}, [RenderedTest(SPEC, "print(1)", "h")])
    _ask_status(coordinator, "run-y", 0.0)
    assert len(drain_bodies(coordinator.app, REPLIES)) == 1
    _ask_status(coordinator, "no-such-run", 10.0)
    [reply] = drain_bodies(coordinator.app, REPLIES)
    assert not reply["ok"] and "unknown run" in reply["error"]


def _runtime(app: Any, tmp_path: Path) -> WorkerRuntime:
    return WorkerRuntime(app, worker_id="w@test", queues=["dtf.cpu"], spool_dir=tmp_path)


def _run(runtime: WorkerRuntime, source: str) -> None:
    runtime.handle(payload_for("run-n", 1, RenderedTest(SPEC, source, "h")))
    assert runtime.flush_results()  # results leave on the sender's thread


def test_a_quick_test_sends_its_result_and_no_started_notice(
    coordinator: Coordinator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dtf.worker.STARTED_NOTICE_AFTER_S", 60.0)  # "quick", however loaded the machine
    _run(_runtime(coordinator.app, tmp_path), "from dtf import harness\nharness.run(lambda h: h.metric('ok', 1))\n")
    [result] = drain_bodies(coordinator.app, RESULTS_QUEUE)
    assert result["result"]["status"] == "passed"
    assert drain_bodies(coordinator.app, CONTROL_QUEUE) == []


def test_a_test_still_running_after_the_notice_delay_is_reported_started(
    coordinator: Coordinator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dtf.worker.STARTED_NOTICE_AFTER_S", 0.05)
    source = "import time\nfrom dtf import harness\nharness.run(lambda h: time.sleep(2.0))\n"
    _run(_runtime(coordinator.app, tmp_path), source)
    [notice] = drain_bodies(coordinator.app, CONTROL_QUEUE)
    assert notice == {"op": "started", "run_id": "run-n", "test_id": SPEC.test_id, "attempt": 1, "worker_id": "w@test"}
    assert [r["result"]["status"] for r in drain_bodies(coordinator.app, RESULTS_QUEUE)] == ["passed"]


def test_delayed_notices_send_in_due_order_and_never_a_cancelled_one() -> None:
    import threading

    from dtf.worker import DelayedNotices

    sent: list[Any] = []
    done = threading.Event()

    def send(body: Any) -> None:
        sent.append(body["n"])
        if body["n"] == 3:
            done.set()

    notices = DelayedNotices(send, 0.05)
    notices.add("a", {"n": 1})
    notices.add("b", {"n": 2})
    notices.cancel("a")  # ended in time: no notice
    notices.add("c", {"n": 3})
    assert done.wait(30)
    assert sent == [2, 3]  # due in order, so a notice for "a" would have come first


def test_a_demoted_coordinator_drops_held_queries_and_leaves_new_messages_for_the_next_leader(
    coordinator: Coordinator,
) -> None:
    submit(coordinator, {"run_id": "run-z", "suite_name": "s"}, [RenderedTest(SPEC, "print(1)", "h")])
    _ask_status(coordinator, "run-z", 0.5)
    coordinator.store.close()  # what losing the lease does first
    coordinator.tick(time.monotonic() + 5.0)
    assert drain_bodies(coordinator.app, REPLIES) == []  # no error sent: the client asks the next leader
    late = _ask_status(coordinator, "run-z", 0.0)
    assert not late.acked and drain_bodies(coordinator.app, REPLIES) == []


def test_a_query_the_lease_runs_out_under_gets_no_error_and_stays_unacked(
    coordinator: Coordinator, monkeypatch: pytest.MonkeyPatch
) -> None:
    submit(coordinator, {"run_id": "run-q", "suite_name": "s"}, [RenderedTest(SPEC, "print(1)", "h")])
    real_status = coordinator.status

    def status_while_demoted(run_id: str) -> Any:
        coordinator.store.close()  # the lock's thread, mid-query
        return real_status(run_id)

    monkeypatch.setattr(coordinator, "status", status_while_demoted)
    asked = _ask_status(coordinator, "run-q", 0.0)
    assert not asked.acked and drain_bodies(coordinator.app, REPLIES) == []


def test_a_held_query_the_lease_runs_out_under_is_dropped_without_an_error(
    coordinator: Coordinator, monkeypatch: pytest.MonkeyPatch
) -> None:
    submit(coordinator, {"run_id": "run-h", "suite_name": "s"}, [RenderedTest(SPEC, "print(1)", "h")])
    _ask_status(coordinator, "run-h", 0.5)
    real_status = coordinator.status

    def status_while_demoted(run_id: str) -> Any:
        coordinator.store.close()
        return real_status(run_id)

    monkeypatch.setattr(coordinator, "status", status_while_demoted)
    coordinator._answer_waiting(time.monotonic() + 5.0)
    assert drain_bodies(coordinator.app, REPLIES) == [] and coordinator._waiting == []
