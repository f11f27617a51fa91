"""A copy of a task that the coordinator sent again after losing the broker connection
("recheck") asks where its test stands before running it: dropped when the result is in or
another live worker runs it, asked once more after a moment (the original's started notice
may be on its way), run when still nobody has it. A redelivered task keeps waiting for a
worker that says it runs the test. The coordinator's answers are scripted here; the real
query is exercised in tests/ha/test_inflight_failover.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dtf import worker as worker_module
from dtf.app import make_app
from dtf.client import CoordinatorClient
from dtf.settings import Settings
from dtf.worker import RECHECK_SETTLE_S, WorkerRuntime


def runtime_with_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answers: list[dict[str, Any]]) -> tuple[WorkerRuntime, list[float]]:
    asked: list[dict[str, Any]] = list(answers)
    slept: list[float] = []
    monkeypatch.setattr(CoordinatorClient, "call", lambda self, op, **kw: asked.pop(0))
    monkeypatch.setattr(worker_module.time, "sleep", slept.append)
    app = make_app(Settings(spool_dir=str(tmp_path / "spool")))
    return WorkerRuntime(app, worker_id="w1@test", queues=["dtf.cpu"], spool_dir=tmp_path), slept


QUEUED = {"status": "queued", "final": False, "running_on": []}


@pytest.mark.parametrize(("answers", "handled", "sleeps"), [
    ([{"status": "passed", "final": True, "running_on": []}], True, []),
    ([QUEUED, {"status": "queued", "final": False, "running_on": ["w2@test"]}], True, [RECHECK_SETTLE_S]),
    ([QUEUED, {"status": "passed", "final": True, "running_on": []}], True, [RECHECK_SETTLE_S]),
    ([QUEUED, QUEUED], False, [RECHECK_SETTLE_S]),
    ([{"status": "running", "final": False, "running_on": ["w2@test"]}], True, []),
])
def test_a_recheck_copy_runs_only_when_nobody_has_its_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answers: list[dict[str, Any]], handled: bool, sleeps: list[float],
) -> None:
    runtime, slept = runtime_with_answers(tmp_path, monkeypatch, answers)
    assert runtime._already_handled("r", "t", 1, wait_for_others=False) is handled
    assert slept == sleeps


def test_a_redelivered_task_waits_for_the_worker_that_runs_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    running = {"status": "running", "final": False, "running_on": ["w2@test"]}
    runtime, slept = runtime_with_answers(tmp_path, monkeypatch, [running, running, {"status": "passed", "final": True}])
    assert runtime._already_handled("r", "t", 1) is True
    assert slept == [1.0, 1.0]
