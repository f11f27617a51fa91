"""Coordinator policy for routing and cancel on the in-memory bus (dtf.bus.MemoryPort): a
real Coordinator and DuckDB file; what was published where, stored and replied."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from dtf.bus import MemoryMessage, MemoryPort
from dtf.model import RenderedTest, TestSpec
from dtf.requirements import route_queue
from dtf.store import Store

from .test_coordinator_policy import make, result, send_submit, stored

REPLIES = "dtf.reply.routing"


def rendered(test_id: str, requires: dict[str, object] | None = None) -> RenderedTest:
    spec = TestSpec(test_id, "m", "generic", "cpu", 1, "fp32", "generic/x", requires=requires or {})
    return RenderedTest(spec, f"print({test_id!r})", "h")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "routing.duckdb") as s:
        yield s


def ask(c: object, op: str, **params: object) -> object:
    body = {"op": op, "reply_to": REPLIES, "correlation_id": f"c-{op}", **params}
    c.on_control(body, MemoryMessage())  # type: ignore[attr-defined]
    return body


def test_tests_with_requirements_go_to_their_sets_queue_and_the_routes_query_names_it(store: Store, tmp_path: Path) -> None:
    port = MemoryPort()
    c = make(store, port, tmp_path)
    big = {"tags": ["a100"], "gpu_memory_gb": 40.0}
    send_submit(c, "run-r", [rendered("plain"), rendered("big1", big), rendered("big2", big)])
    queue = route_queue("cpu", big)
    assert [t["test"]["spec"]["test_id"] for t in port.take("dtf.cpu")] == ["plain"]
    assert [t["test"]["spec"]["test_id"] for t in port.take(queue)] == ["big1", "big2"]
    assert c.status("run-r")["idle_queues"] == ["dtf.cpu", queue]  # no worker yet: both named
    ask(c, "routes")
    answer = port.replies[REPLIES][-1]
    assert answer["ok"] and answer["data"] == {"routes": [{"queue": queue, "hardware": "cpu", "requires": big,
                                                           "label": "tags=a100 gpu_memory_gb>=40"}], "cancelled": []}


def test_cancel_keeps_finished_results_skips_the_rest_and_tells_workers(store: Store, tmp_path: Path) -> None:
    port = MemoryPort()
    c = make(store, port, tmp_path)
    send_submit(c, "run-c", [rendered("a"), rendered("b"), rendered("c", {"ram_gb": 1.0})])
    ask(c, "routes")  # what workers ask at each heartbeat: the run's sets are known from here on
    body, message = result("run-c", "a")
    c.on_result(body, message)  # received, not yet written: the cancel writes it first
    ask(c, "cancel", run_id="run-c")
    reply = port.replies[REPLIES][-1]
    assert reply["ok"] and reply["data"] == {"run_id": "run-c", "status": "cancelled", "dropped": 2, "stopped": 0, "kept": 1,
                                             "already_over": False}
    assert stored(store, "run-c") == [("a", 1, "passed")] and message.acked
    rows = {r["test_id"]: (r["status"], r["reason"]) for r in store.tests("run-c")}
    assert rows == {"a": ("passed", None), "b": ("skipped", "cancelled"), "c": ("skipped", "cancelled")}
    assert store.run("run-c")["status"] == "cancelled"
    ask(c, "routes")
    assert port.replies[REPLIES][-1]["data"]["cancelled"] == ["run-c"]
    assert port.replies[REPLIES][-1]["data"]["routes"] == [{"queue": route_queue("cpu", {"ram_gb": 1.0}), "hardware": "cpu",
                                                             "requires": {"ram_gb": 1.0}, "label": "ram_gb>=1"}]  # drained
    late, late_message = result("run-c", "b")
    c.on_result(late, late_message)
    c.tick(time.monotonic() + 60)  # past any batch delay: the batch is handled
    assert late_message.acked
    assert stored(store, "run-c") == [("a", 1, "passed")]  # a result after the cancel is not stored
    ask(c, "cancel", run_id="nope")
    assert port.replies[REPLIES][-1] == {"ok": False, "error": "unknown run 'nope'", "correlation_id": "c-cancel"}
