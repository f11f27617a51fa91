"""What dtf learns from history: predictions, longest-first ordering, flaky tests,
quarantine, the result cache and scaling advice.

The pure parts (ordering, retries, cache keys) are checked on their own; the rest through
the real pipeline: the embedded `dtf run` (real coordinator, real Celery worker, real test
processes) on a real DuckDB file, and the CLI on that file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dtf.cache import Candidate, cache_key, choose, parse_max_age, stack_fingerprint
from dtf.cli import app, optional_values
from dtf.model import RenderedTest, TestResult, TestSpec
from dtf.scale import advise, loads_from_rows
from dtf.schedule import INFRA_RETRIES, RunGraph
from dtf.store import Store

from .conftest import REPO, Processes, RedisServer, dtf_cmd, dtf_env

TEMPLATES = REPO / "tests" / "fixtures" / "history_templates"
RUN = "run"


def spec(test_id: str, **kw: Any) -> TestSpec:
    return TestSpec(test_id, "m", "hist", "cpu", 1, "fp32", "hist/sleep", **kw)


def take(graph: RunGraph, room: int = 100) -> list[str]:
    taken = [s.test_id for s in graph.take_ready({"cpu": room})]
    for test_id in taken:
        graph.mark_queued(test_id)
    return taken


def result(graph: RunGraph, test_id: str, status: str, error: str | None = None) -> list[Any]:
    return graph.apply_result(TestResult(RUN, test_id, graph.tests[test_id].attempts, status, error=error))


# -- ordering ------------------------------------------------------------------------------------
def test_lpt_dispatches_longest_predicted_first_within_a_priority() -> None:
    specs = [spec("short", predicted_s=1.0), spec("unknown"), spec("long", predicted_s=30.0),
             spec("urgent-short", priority=9, predicted_s=0.5), spec("mid", predicted_s=5.0)]
    assert take(RunGraph(RUN, specs)) == ["urgent-short", "long", "mid", "short", "unknown"]
    assert take(RunGraph(RUN, specs, ordering="priority")) == ["urgent-short", "short", "unknown", "long", "mid"]
    assert take(RunGraph(RUN, specs, ordering="fifo")) == ["short", "unknown", "long", "urgent-short", "mid"]


def test_lpt_never_starts_a_test_before_its_dependencies_passed() -> None:
    specs = [spec("parent", predicted_s=1.0), spec("child", predicted_s=100.0, depends_on=("parent",)),
             spec("other", predicted_s=10.0)]
    graph = RunGraph(RUN, specs)
    assert take(graph) == ["other", "parent"]
    result(graph, "parent", "passed")
    assert take(graph) == ["child"]


# -- flaky, infrastructure retries, quarantine ------------------------------------------------------
def test_a_pass_after_a_failed_attempt_is_flaky_and_does_not_fail_the_run() -> None:
    graph = RunGraph(RUN, [spec("a", retries=1), spec("b", depends_on=("a",))])
    take(graph)
    (retry,) = result(graph, "a", "failed", "boom")
    assert retry.requeue and retry.delay_s == 0.0
    (update,) = result(graph, "a", "passed")
    assert update.status == "flaky" and "attempt 2" in (update.reason or "")
    assert take(graph) == ["b"]  # a flaky parent lets its dependants run
    result(graph, "b", "passed")
    assert graph.verdict() == "passed"


def test_infrastructure_errors_are_retried_with_backoff_beyond_the_tests_retries() -> None:
    graph = RunGraph(RUN, [spec("a", retries=0)])
    take(graph)
    delays = []
    for _ in range(INFRA_RETRIES):
        (u,) = result(graph, "a", "error", "cannot start test: [Errno 24] Too many open files")
        assert u.requeue and u.status == "queued"
        delays.append(u.delay_s)
    assert delays == [2.0, 4.0]
    (last,) = result(graph, "a", "error", "cannot start test: again")
    assert (last.status, last.requeue, last.attempts) == ("error", False, INFRA_RETRIES + 1)
    # The test's own error is not the machinery's: no retry without retries.
    graph = RunGraph(RUN, [spec("b", retries=0)])
    take(graph)
    (own,) = result(graph, "b", "error", "KeyError: 'x'")
    assert (own.status, own.requeue) == ("error", False)


def test_a_quarantined_test_that_fails_is_reported_and_keeps_the_run_green() -> None:
    graph = RunGraph(RUN, [spec("q"), spec("after-q", depends_on=("q",)), spec("ok")],
                     quarantined={"q": "issue 42"})
    take(graph)
    updates = result(graph, "q", "failed", "assertion")
    assert [(u.test_id, u.status) for u in updates] == [("q", "quarantined"), ("after-q", "skipped")]
    assert "issue 42" in (updates[0].reason or "")
    result(graph, "ok", "passed")
    assert graph.finished() and graph.verdict() == "passed"


# -- the cache key -----------------------------------------------------------------------------------
def rendered(source: str = "print(1)", **kw: Any) -> RenderedTest:
    return RenderedTest(spec("t", **kw), source, "hash-1")


def test_the_cache_key_changes_with_exactly_what_determines_a_result() -> None:
    base = cache_key(rendered(params={"n": 1}))
    assert base is not None and base == cache_key(rendered(params={"n": 1}))
    assert cache_key(rendered(params={"n": 2})) != base  # a parameter
    assert cache_key(rendered("print(2)", params={"n": 1})) != base  # the rendered template
    assert cache_key(RenderedTest(spec("t", params={"n": 1}), "print(1)", "hash-2")) != base  # the template file
    assert cache_key(rendered(params={"n": 1}, timeout_s=12.0)) == base  # not an input of the result
    pinned = {"model_source": {"source": "hf", "id": "org/m", "revision": "abc"}}
    moved = {"model_source": {"source": "hf", "id": "org/m", "revision": "def"}}
    assert cache_key(rendered(params=pinned)) != cache_key(rendered(params=moved))  # the model revision
    assert cache_key(rendered(params={"model_source": {"source": "hf", "id": "org/m"}})) is None  # unpinned: never


def test_reuse_needs_a_live_worker_with_the_same_stack_and_a_young_enough_result() -> None:
    stack = stack_fingerprint("3.11.9", {"torch": "2.4.1", "dtf": "1.0"})
    assert stack != stack_fingerprint("3.11.9", {"torch": "2.5.0", "dtf": "1.0"})

    def cand(run: str, finished: float, fp: str = stack) -> Candidate:
        return Candidate("k", run, "t", 1, "cpu", 3.0, finished, fp, {})

    now = 10_000.0
    live = {"cpu": frozenset({stack})}
    assert choose({"t": "k"}, [cand("old", 1_000.0), cand("new", 9_000.0)], live, now=now, max_age_s=None)["t"].run_id == "new"
    assert choose({"t": "k"}, [cand("old", 1_000.0)], live, now=now, max_age_s=3600.0) == {}
    assert choose({"t": "k"}, [cand("x", 9_000.0, "other-stack")], live, now=now, max_age_s=None) == {}
    assert choose({"t": "k"}, [cand("x", 9_000.0)], {"cuda": frozenset({stack})}, now=now, max_age_s=None) == {}
    assert [parse_max_age(v) for v in ("any", "90", "90m", "7d")] == [None, 90.0, 5400.0, 604800.0]
    with pytest.raises(ValueError):
        parse_max_age("soon")
    assert optional_values(["run", "s.yaml", "--reuse"]) == ["run", "s.yaml", "--reuse=any"]


# -- through the real pipeline ---------------------------------------------------------------------
SUITE = """
name: hist
source: synthetic
defaults: {{timeout_s: 60, retries: 1}}
models:
  - {{name: sleepy, family: hist, template: hist/sleep, params: {{sleep_s: 0.2, tag: "{tag}"}}}}
  - {{name: steady, family: hist, template: hist/sleep, params: {{sleep_s: 0.1}}}}
  - {{name: echo-model, family: hist, template: hist/echo}}
  - {{name: flaky-model, family: hist, template: hist/flaky, params: {{state_dir: "{state}"}}}}
  - {{name: broken-model, family: hist, template: hist/quarantined}}
hardware: [cpu]
batch_sizes: [1]
precisions: [fp32]
"""


def write_suite(tmp_path: Path, tag: str = "a") -> Path:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    path = tmp_path / "hist.yaml"
    path.write_text(SUITE.format(tag=tag, state=state))
    return path


def dtf_run(tmp_path: Path, suite: Path, db: Path, templates: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        dtf_cmd("run", str(suite), "--db", str(db), "--workers", "2", "--format", "json", "--templates", str(templates),
                *extra),
        env=dtf_env(DTF_SPOOL_DIR=str(tmp_path / "spool"), DTF_STATE_DIR=str(tmp_path / "state-dir")),
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert "{" in proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout[proc.stdout.index("{"):])


def statuses(data: dict[str, Any]) -> dict[str, str]:
    return {t["test_id"]: t["status"] for t in data["tests"]}


@pytest.mark.slow
def test_flaky_quarantine_and_the_result_cache_through_the_embedded_pipeline(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    suite = write_suite(tmp_path)
    db = tmp_path / "hist.duckdb"

    # 1. The flaky fixture fails its first attempt and passes the retry: flaky, both attempts kept.
    code, first = dtf_run(tmp_path, suite, db, templates)
    assert code == 1  # broken-model fails: nothing is quarantined yet
    assert statuses(first) == {"sleepy/cpu/bs1/fp32": "passed", "steady/cpu/bs1/fp32": "passed",
                               "echo-model/cpu/bs1/fp32": "passed", "flaky-model/cpu/bs1/fp32": "flaky",
                               "broken-model/cpu/bs1/fp32": "failed"}
    run1 = first["run"]["run_id"]
    with Store(db, read_only=True) as store:
        attempts = [(r["attempt"], r["status"]) for r in store.results(run1) if r["test_id"] == "flaky-model/cpu/bs1/fp32"]
    assert sorted(attempts) == [(1, "failed"), (2, "passed")]

    # 2. Quarantined, the broken test still runs and is reported, and the run is green.
    runner = CliRunner()
    added = runner.invoke(app, ["quarantine", "add", "broken-model/cpu/bs1/fp32", "--reason", "issue 42",
                                "--expires", "7d", "--db", str(db)])
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["quarantine", "list", "--db", str(db), "--json"])
    assert [r["test_id"] for r in json.loads(listed.stdout)] == ["broken-model/cpu/bs1/fp32"]

    # 3. --reuse: every passed test of run 1 is cached, linked to its source; only the rest run.
    code, second = dtf_run(tmp_path, suite, db, templates, "--reuse=1d")
    assert code == 0
    done = statuses(second)
    assert done["broken-model/cpu/bs1/fp32"] == "quarantined"
    cached = {t["test_id"]: t for t in second["tests"] if t["status"] == "cached"}
    assert set(cached) == {"sleepy/cpu/bs1/fp32", "steady/cpu/bs1/fp32", "echo-model/cpu/bs1/fp32",
                           "flaky-model/cpu/bs1/fp32"}
    sleepy = cached["sleepy/cpu/bs1/fp32"]["metrics"]
    assert sleepy["cached_from"] == {"run_id": run1, "test_id": "sleepy/cpu/bs1/fp32", "attempt": 1}
    assert sleepy["saved_s"] >= 0.2 and sleepy["slept_s"] == 0.2
    assert cached["flaky-model/cpu/bs1/fp32"]["metrics"]["cached_from"]["attempt"] == 2

    # 4. A changed parameter reruns exactly that test.
    suite = write_suite(tmp_path, tag="b")
    code, third = dtf_run(tmp_path, suite, db, templates, "--reuse")
    assert code == 0
    ran = {tid for tid, st in statuses(third).items() if st not in ("cached", "quarantined")}
    assert ran == {"sleepy/cpu/bs1/fp32"}

    # 5. A changed template reruns exactly the tests that use it.
    echo = templates / "hist" / "echo.py.j2"
    echo.write_text(echo.read_text().replace('h.metric("echo", 1)', 'h.metric("echo", 2)'))
    code, fourth = dtf_run(tmp_path, suite, db, templates, "--reuse")
    assert {tid for tid, st in statuses(fourth).items() if st not in ("cached", "quarantined")} == {"echo-model/cpu/bs1/fp32"}

    # 6. A result made on another stack is not reused: the test whose stored stack differs reruns.
    with Store(db) as store:
        store.query("UPDATE results SET metrics = json_merge_patch(metrics, '{\"stack_fingerprint\": \"elsewhere\"}')"
                    " WHERE test_id = 'steady/cpu/bs1/fp32'")
    code, fifth = dtf_run(tmp_path, suite, db, templates, "--reuse")
    assert {tid for tid, st in statuses(fifth).items() if st not in ("cached", "quarantined")} == {"steady/cpu/bs1/fp32"}

    # 7. Without --reuse everything runs again (the flaky fixture now passes at once); the
    # flake rate over history: flaky in 1 of its 2 runs that ran it (cached runs do not count).
    code, sixth = dtf_run(tmp_path, suite, db, templates)
    assert code == 0 and "cached" not in statuses(sixth).values()
    rates = json.loads(runner.invoke(app, ["quarantine", "rates", "--db", str(db), "--json"]).stdout)
    assert rates == [{"test_id": "flaky-model/cpu/bs1/fp32", "hardware": "cpu", "runs": 2, "flaky_runs": 1,
                      "failed_runs": 0, "flake_rate": 0.5, "would_quarantine": False}]  # under 5 runs: never
    removed = runner.invoke(app, ["quarantine", "remove", "broken-model/cpu/bs1/fp32", "--db", str(db)])
    assert removed.exit_code == 0, removed.output
    assert json.loads(runner.invoke(app, ["quarantine", "list", "--db", str(db), "--json"]).stdout) == []


# -- predictions from a seeded history --------------------------------------------------------------
PREDICT_SUITE = """
name: predict
source: synthetic
models:
  - {name: known, family: hist, template: hist/sleep, params: {sleep_s: 0.05}}
  - {name: scaled, family: hist, template: hist/sleep, params: {sleep_s: 0.05}, batch_sizes: [2]}
hardware: [cpu]
batch_sizes: [1]
precisions: [fp32]
"""


def seed(db: Path) -> None:
    """Five passed runs of known/cpu/bs1/fp32 (100, 120, 90, 110, 500 s; peaks up to 2048 MB),
    and `scaled` at bs1 (1 s) and bs4 (4 s), plus a failed attempt that must not count."""
    rows = [("known", 1, d, m) for d, m in ((100.0, 1024.0), (120.0, 2048.0), (90.0, 512.0), (110.0, 1024.0),
                                             (500.0, 1536.0))]
    rows += [("scaled", 1, 1.0, 100.0), ("scaled", 4, 4.0, 400.0)]
    with Store(db) as store:
        store.migrate()
        for i, (model, bs, duration, peak) in enumerate(rows):
            run_id = f"seed-{i}"
            test = RenderedTest(TestSpec(f"{model}/cpu/bs{bs}/fp32", model, "hist", "cpu", bs, "fp32", "hist/sleep"),
                                "pass", "h")
            store.insert_run({"run_id": run_id, "suite_name": "predict", "submitted_at": 1.0 + i}, [test])
            store.ingest_batch([TestResult(run_id, test.spec.test_id, 1, "passed", duration, peak, finished_at=10.0 + i)],
                               [done(run_id, test.spec.test_id, "passed")], finished_runs=[(run_id, "passed")])
        test = RenderedTest(TestSpec("known/cpu/bs1/fp32", "known", "hist", "cpu", 1, "fp32", "hist/sleep"), "x", "h")
        store.insert_run({"run_id": "seed-failed", "suite_name": "predict", "submitted_at": 50.0}, [test])
        store.ingest_batch([TestResult("seed-failed", "known/cpu/bs1/fp32", 1, "failed", 9999.0, 1e6, finished_at=60.0)],
                           [done("seed-failed", "known/cpu/bs1/fp32", "failed")], finished_runs=[("seed-failed", "failed")])


def done(run_id: str, test_id: str, status: str) -> dict[str, Any]:
    return {"run_id": run_id, "test_id": test_id, "status": status, "attempts": 1, "reason": None,
            "queued_at": None, "finished_at": 70.0}


@pytest.mark.slow
def test_predictions_from_a_seeded_history_match_hand_computed_values_and_apply_at_submit(tmp_path: Path) -> None:
    db = tmp_path / "history.duckdb"
    seed(db)
    suite = tmp_path / "predict.yaml"
    suite.write_text(PREDICT_SUITE)
    out = CliRunner().invoke(app, ["predict", str(suite), "--db", str(db), "--templates", str(TEMPLATES), "--json"])
    assert out.exit_code == 0, out.output
    got = {p["test_id"]: p for p in json.loads(out.stdout)}
    known = got["known/cpu/bs1/fp32"]
    # median 110; MAD = median(|d - 110|) = median(10, 10, 20, 0, 390) = 10; p95 = 110 + 1.645 x 1.4826 x 10
    assert known["basis"] == "test" and known["samples"] == 5
    assert known["duration_s"] == 110.0
    assert known["duration_p95_s"] == pytest.approx(110 + 1.645 * 1.4826 * 10, abs=1e-3)
    assert known["memory_gb"] == 2.0  # the largest peak, 2048 MB
    assert known["timeout_s"] == round(3 * (110 + 1.645 * 1.4826 * 10), 1)  # 3 x p95, over the 60 s floor
    scaled = got["scaled/cpu/bs2/fp32"]
    # bs1 takes 1 s and bs4 4 s: the fitted exponent is 1, so bs2 takes 2 s; memory 100 MB/sample -> 200 MB
    assert scaled["basis"] == "batch-scaling" and scaled["duration_s"] == 2.0
    assert scaled["memory_gb"] == round(200 / 1024, 4)

    # At submit the coordinator applies them: the stored spec carries the timeout, the
    # predicted seconds that order dispatch and the larger memory requirement.
    code, data = dtf_run(tmp_path, suite, db, TEMPLATES)
    assert code == 0
    with Store(db, read_only=True) as store:
        specs = {r["test_id"]: json.loads(r["spec"]) for r in store.tests(data["run"]["run_id"])}
    assert specs["known/cpu/bs1/fp32"]["timeout_s"] == known["timeout_s"]
    assert specs["known/cpu/bs1/fp32"]["predicted_s"] == 110.0
    assert specs["known/cpu/bs1/fp32"]["memory_gb"] >= 2.0
    assert specs["scaled/cpu/bs2/fp32"]["predicted_s"] == 2.0


# -- scaling advice from the store ------------------------------------------------------------------
def test_scale_advice_reads_the_backlog_and_live_workers_from_the_store(tmp_path: Path) -> None:
    db = tmp_path / "scale.duckdb"
    with Store(db) as store:
        store.migrate()
        tests = [RenderedTest(TestSpec(f"t{i}", "m", "hist", "cpu", 1, "fp32", "hist/sleep", predicted_s=300.0), "x", "h")
                 for i in range(8)]
        store.insert_run({"run_id": "busy", "suite_name": "s", "submitted_at": 1.0, "status": "running"}, tests)
        store.upsert_worker({"worker_id": "w1", "queues": ["dtf.cpu"], "state": "online",
                             "health": {"concurrency": 1}, "last_seen": time.time()})
    out = CliRunner().invoke(app, ["scale", "--db", str(db), "--json"])
    assert out.exit_code == 0, out.output
    (cpu,) = json.loads(out.stdout)
    # 8 x 300 s on one slot drains in 2400 s > 600 x 1.25: ceil(2400 / 600) = 4 slots, so add 3
    assert (cpu["queue"], cpu["action"], cpu["count"], cpu["backlog_tests"], cpu["backlog_s"]) == ("dtf.cpu", "add", 3, 8, 2400.0)
    assert (cpu["workers"], cpu["slots"]) == (1, 1)
    stale = loads_from_rows([], [{"worker_id": "w", "queues": ["dtf.cpu"], "state": "online", "last_seen": 0.0}], now=1e6)
    assert stale == [] and advise(stale) == []


# -- the cache through Redis: the live workers' stacks come from their heartbeats ---------------------
@pytest.mark.slow
@pytest.mark.redis
def test_submit_reuse_matches_the_stack_live_workers_report_in_heartbeats(
    tmp_path: Path, redis_server: RedisServer, processes: Processes
) -> None:
    suite = write_suite(tmp_path)
    db = tmp_path / "central.duckdb"
    env = dtf_env(DTF_BROKER_URL=redis_server.url, DTF_SPOOL_DIR=str(tmp_path / "spool"),
                  DTF_STATE_DIR=str(tmp_path / "state-dir"), DTF_HEARTBEAT_INTERVAL="1")
    processes.start("coordinator", ["coordinator", "--db", str(db)], env, tmp_path)
    processes.start("worker", ["worker", "--name", "w1@test", "--queues", "dtf.cpu", "--concurrency", "2",
                               "--loglevel", "WARNING"], env, tmp_path)

    def submit(*extra: str) -> dict[str, Any]:
        proc = subprocess.run(dtf_cmd("submit", str(suite), "--wait", "--timeout", "300", "--format", "json",
                                      "--templates", str(TEMPLATES), *extra),
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400)
        assert "{" in proc.stdout, proc.stderr + processes.log("coordinator") + processes.log("worker")
        return dict(json.loads(proc.stdout[proc.stdout.index("{"):]))

    first = submit()
    assert statuses(first)["flaky-model/cpu/bs1/fp32"] == "flaky"
    second = submit("--reuse")
    cached = {t["test_id"] for t in second["tests"] if t["status"] == "cached"}
    assert cached == {"sleepy/cpu/bs1/fp32", "steady/cpu/bs1/fp32", "echo-model/cpu/bs1/fp32", "flaky-model/cpu/bs1/fp32"}
    assert statuses(second)["broken-model/cpu/bs1/fp32"] == "failed"  # never passed: nothing to reuse
    out = subprocess.run(dtf_cmd("scale", "--json"), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (cpu,) = [q for q in json.loads(out.stdout) if q["queue"] == "dtf.cpu"]
    # nothing waits or runs on the one live worker: utilisation 0 < 50%, so it could go
    assert (cpu["workers"], cpu["slots"], cpu["backlog_tests"], cpu["action"], cpu["count"]) == (1, 2, 0, "remove", 1)
