"""A submit arrives in chunks and each is stored as it comes: the run appears whole when the
last chunk is in, in any order, once however often a chunk is redelivered; a bad chunk
fails the whole submit and leaves nothing behind; a submit that never completes is dropped."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from kombu import Queue

from dtf.app import make_app
from dtf.bus import RESULTS_QUEUE
from dtf.coordinator import Coordinator
from dtf.model import RenderedTest, TestSpec
from dtf.settings import Settings
from dtf.store import Store

from .conftest import StoreSpec
from .memory_broker import FakeMessage, attach, drain, empty

REPLIES = "dtf.reply.staged"


def rendered(test_id: str, hardware: str = "cpu") -> RenderedTest:
    return RenderedTest(TestSpec(test_id, "m", "generic", hardware, 1, "fp32", "generic/x"), f"print({test_id!r})\n", "h")


def count(store: Store, sql: str, params: list[Any] | None = None) -> int:
    return int(store.query(sql, params or [])[0]["n"])


@pytest.fixture
def store(store_spec: StoreSpec) -> Iterator[Store]:
    with store_spec.open() as s:
        yield s


def test_chunks_in_any_order_and_redelivered_make_one_run_when_the_last_is_in(store: Store) -> None:
    run = {"run_id": "run-a", "suite_name": "s"}
    assert store.stage_submit_chunk("sub", "run-a", 2, 3, [rendered("c")]) == (1, 3)
    assert store.stage_submit_chunk("sub", "run-a", 2, 3, [rendered("c")]) == (1, 3)  # redelivered
    assert store.stage_submit_chunk("sub", "run-a", 0, 3, [rendered("a")], run=run, reply={"reply_to": "q"}) == (2, 3)
    assert store.run("run-a") is None  # not visible until complete
    assert store.stage_submit_chunk("sub", "run-a", 1, 3, [rendered("b")]) == (3, 3)
    done = store.finish_submit("sub")
    assert (done["run_id"], done["error"], done["total"], done["reply"]) == ("run-a", None, 3, {"reply_to": "q"})
    stored = store.run("run-a")
    assert stored is not None and (stored["status"], stored["total"]) == ("running", 3)
    assert [s["test_id"] for s in store.iter_specs("run-a", batch=2)] == ["a", "b", "c"]
    assert count(store, "SELECT count(*) AS n FROM staged_chunks") == 0


def test_chunks_that_announce_one_more_complete_only_with_the_last_in_any_order(store: Store) -> None:
    # A sender cutting chunks by bytes while it renders says "chunk + 2" until its last chunk,
    # which carries the true total (dtf.bus.protocol.submit_body). Chunks 0-3, arriving 0, 2, 1, 3:
    # after 0, 2 and 1 three are in and the largest total announced is 4, so it is not complete.
    assert store.stage_submit_chunk("one-more", "run-m", 0, 2, [rendered("a")], run={"run_id": "run-m"}) == (1, 2)
    assert store.stage_submit_chunk("one-more", "run-m", 2, 4, [rendered("c")]) == (2, 4)
    assert store.stage_submit_chunk("one-more", "run-m", 1, 3, [rendered("b")]) == (3, 4)
    assert store.stage_submit_chunk("one-more", "run-m", 3, 4, [rendered("d")]) == (4, 4)
    assert store.finish_submit("one-more")["total"] == 4


def test_a_chunk_with_an_error_fails_the_submit_and_removes_its_tests(store: Store) -> None:
    store.stage_submit_chunk("bad", "run-b", 0, 2, [rendered("a")], run={"run_id": "run-b"})
    store.stage_submit_chunk("bad", "run-b", 1, 2, [], error="unknown hardware 'tpu'")
    done = store.finish_submit("bad")
    assert done["error"] == "unknown hardware 'tpu'"
    assert store.run("run-b") is None
    assert count(store, "SELECT count(*) AS n FROM tests WHERE run_id = 'run-b'") == 0


def test_a_submit_that_never_completes_is_dropped_after_the_stale_age(store: Store) -> None:
    store.stage_submit_chunk("gone", "run-c", 0, 5, [rendered("a")], run={"run_id": "run-c"})
    assert store.drop_stale_submits(time.time() - 3600) == 0  # still fresh
    assert store.drop_stale_submits(time.time() + 1) == 1
    assert count(store, "SELECT count(*) AS n FROM tests WHERE run_id = 'run-c'") == 0
    assert count(store, "SELECT count(*) AS n FROM staged_chunks") == 0


# -- through the coordinator ------------------------------------------------------------------
@pytest.fixture
def coordinator(tmp_path: Path, store: Store) -> Iterator[Coordinator]:
    app = make_app(Settings(spool_dir=str(tmp_path / "spool")))
    c = Coordinator(app, store)
    with app.connection_for_write() as conn:
        Queue(REPLIES)(conn.default_channel).declare()
        empty(app, "dtf.cpu", RESULTS_QUEUE, REPLIES)
        attach(c, conn.default_channel)
        yield c


def _chunks(run_id: str, tests: list[RenderedTest], size: int) -> list[dict[str, Any]]:
    parts = [tests[i:i + size] for i in range(0, len(tests), size)]
    return [{"op": "submit", "submit_id": f"s-{run_id}", "run_id": run_id, "chunk": i, "chunks": len(parts),
             "tests": [t.to_dict() for t in part],
             **({"run": {"run_id": run_id, "suite_name": "s"}, "reply_to": REPLIES, "correlation_id": "c"} if i == 0 else {})}
            for i, part in enumerate(parts)]


def test_the_coordinator_acks_each_chunk_when_stored_and_starts_the_run_after_the_last(coordinator: Coordinator) -> None:
    bodies = _chunks("run-d", [rendered(f"t{i:02d}") for i in range(25)], 10)
    for body in reversed(bodies):  # the reply-carrying chunk 0 last: order does not matter
        message = FakeMessage()
        coordinator.on_control(body, message)
        assert message.acked
        if body is not bodies[0]:
            assert "run-d" not in coordinator.runs and drain(coordinator.app, REPLIES) == []
    [reply] = [m.decode() for m in drain(coordinator.app, REPLIES)]
    assert reply == {"ok": True, "data": {"run_id": "run-d"}, "correlation_id": "c"}
    assert len(coordinator.runs["run-d"].tests) == 25
    assert len(drain(coordinator.app, "dtf.cpu")) == 25  # all ready, all published

    coordinator.on_control(bodies[1], FakeMessage())  # a late redelivery
    assert count(coordinator.store, "SELECT count(*) AS n FROM staged_chunks") == 0
    assert drain(coordinator.app, "dtf.cpu") == []


def test_a_chunk_naming_unknown_hardware_fails_the_submit_with_one_error_and_stores_nothing(
    coordinator: Coordinator,
) -> None:
    bodies = _chunks("run-e", [rendered("a"), rendered("b", hardware="tpu")], 1)
    for body in bodies:
        coordinator.on_control(body, FakeMessage())
    [reply] = [m.decode() for m in drain(coordinator.app, REPLIES)]
    assert not reply["ok"] and "unknown hardware 'tpu'" in reply["error"]
    assert coordinator.store.run("run-e") is None and "run-e" not in coordinator.runs
    assert count(coordinator.store, "SELECT count(*) AS n FROM tests WHERE run_id = 'run-e'") == 0


def test_the_client_cuts_chunks_by_bytes_and_the_store_completes_the_run_with_the_last(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Chunks of at most 200 tests and dtf.bus.protocol.chunk_cap bytes: with the cap just over
    # two tests' payloads, five tests of 2 KB make three chunks, cut while they are rendered.
    from dtf import client as client_module
    from dtf.client import CoordinatorClient

    big = [RenderedTest(rendered(f"t{i}").spec, "x = 1  # " + "p" * 2000 + "\n", "h") for i in range(5)]
    one = len(client_module.dumps(client_module.task_payload("run-big", 1, big[0].to_dict())))
    monkeypatch.setattr(client_module, "chunk_cap", lambda max_payload: 2 * one + 10)
    sent: list[dict[str, Any]] = []

    def record(self: CoordinatorClient, bodies: Iterator[dict[str, Any]], *, timeout_s: float | None = None) -> Any:
        for body in bodies:
            sent.append(body)
            staged, expected = store.stage_submit_chunk(body["submit_id"], body["run_id"], body["chunk"],
                                                        body["chunks"], [RenderedTest.from_dict(t) for t in body["tests"]],
                                                        run=body.get("run"))
            if staged == expected:
                store.finish_submit(body["submit_id"])
        return {"run_id": "run-big"}

    monkeypatch.setattr(CoordinatorClient, "_call_many", record)
    client = CoordinatorClient.for_settings(Settings(broker_url="redis://127.0.0.1:9/0"))
    assert client.submit({"run_id": "run-big", "suite_name": "s"}, big) == "run-big"
    assert [(b["chunk"], b["chunks"], len(b["tests"])) for b in sent] == [(0, 2, 2), (1, 3, 2), (2, 3, 1)]
    stored = store.run("run-big")
    assert stored is not None and stored["total"] == 5
