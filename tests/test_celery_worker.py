"""dtf.celery_worker: the one assembly of a Celery worker around a WorkerRuntime, used by
`dtf worker` (standalone) and the embedded cluster of `dtf run`. Real Celery apps and
workers on the in-memory transport; a spooled result is really replayed."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from celery.apps.worker import Worker
from celery.worker import WorkController

from dtf.app import make_app
from dtf.bus import RESULTS_QUEUE, result_body
from dtf.celery_worker import assemble_worker
from dtf.errors import DtfError
from dtf.guard import GuardLimits
from dtf.model import TestResult
from dtf.settings import Settings
from dtf.worker import PROFILES, WorkerRuntime

from .memory_broker import drain
from .test_worker_profiles import host


def runtime_for(tmp_path: Path, profile: str = "test", limits: GuardLimits | None = None) -> WorkerRuntime:
    app = make_app(Settings(spool_dir=str(tmp_path / "spool")))
    return WorkerRuntime(app, worker_id="w1@test", queues=["dtf.cpu"], profile=host(cores=4),
                         execution=PROFILES[profile], limits=limits)


def test_a_standalone_worker_takes_the_profiles_prefetch_the_guard_step_and_the_given_concurrency(tmp_path: Path) -> None:
    runtime = runtime_for(tmp_path, "light", GuardLimits(max_memory_percent=90.0))
    app = runtime.app
    assembled = assemble_worker(app, runtime, concurrency=3, pool="prefork", loglevel="info")
    assert app.conf.worker_prefetch_multiplier == PROFILES["light"].prefetch_multiplier == 4
    assert app.test_handler == runtime.handle
    assert "dtf.worker.ResourceGuardStep" in {step.name for step in app.steps["consumer"]}
    assert assembled.concurrency == runtime.concurrency == 3
    assert assembled.options == {"hostname": "w1@test", "queues": ["dtf.cpu"], "concurrency": 3, "pool": "prefork",
                                 "loglevel": "info", "without_mingle": True, "without_gossip": True, "quiet": True}
    assert assembled.controller is None  # Celery's full worker is built when it starts (it sets process-wide state)


def test_without_guard_limits_the_bootstep_still_routes_and_the_profile_decides_concurrency(tmp_path: Path) -> None:
    runtime = runtime_for(tmp_path, "light")
    expected = runtime.concurrency
    assembled = assemble_worker(runtime.app, runtime)
    # The step also takes requirement queues and applies the health gate (dtf.routing), so it is always there.
    assert any(step.name == "dtf.worker.ResourceGuardStep" for step in runtime.app.steps["consumer"])
    assert assembled.concurrency == expected == PROFILES["light"].concurrency(host(cores=4), ["dtf.cpu"])
    assert assembled.options["pool"] == "threads" and assembled.options["concurrency"] == expected


def test_the_embedded_worker_is_a_bare_thread_pool_controller_without_celery_heartbeats(tmp_path: Path) -> None:
    runtime = runtime_for(tmp_path)
    assembled = assemble_worker(runtime.app, runtime, concurrency=2, embedded=True)
    assert runtime.app.conf.worker_prefetch_multiplier == 1
    assert assembled.options["without_heartbeat"] is True and assembled.options["loglevel"] == "WARNING"
    controller = assembled.build()
    assert isinstance(controller, WorkController) and not isinstance(controller, Worker)
    assert controller.pool_cls.__module__.endswith("thread") and controller.concurrency == 2
    assert controller.loglevel == logging.WARNING and controller.hostname == "w1@test"


def test_assembly_replays_the_spool(tmp_path: Path) -> None:
    runtime = runtime_for(tmp_path)
    drain(runtime.app, RESULTS_QUEUE)
    left = TestResult("r", "a/cpu/bs1/fp32", 1, "passed")
    (runtime.spool / "left-by-a-crash.json").write_text(json.dumps(result_body(left)))  # as publish_result writes it
    assembled = assemble_worker(runtime.app, runtime)
    assert assembled.replayed == 1
    assert [m.decode()["result"]["test_id"] for m in drain(runtime.app, RESULTS_QUEUE)] == ["a/cpu/bs1/fp32"]
    assert list(runtime.spool.glob("*.json")) == []


@pytest.mark.parametrize(("options", "says"), [
    ({"pool": "nosuch"}, "--pool: unknown pool 'nosuch' (expected one of threads, prefork, solo)"),
    ({"loglevel": "LOUD"}, "--loglevel: unknown level 'LOUD'"),
    ({"concurrency": 0}, "--concurrency: expected at least 1, got 0"),
])
def test_options_celery_would_refuse_with_a_traceback_are_one_dtf_error(tmp_path: Path, options: dict, says: str) -> None:
    runtime = runtime_for(tmp_path)
    with pytest.raises(DtfError) as raised:
        assemble_worker(runtime.app, runtime, **options)
    assert str(raised.value).startswith(says)
