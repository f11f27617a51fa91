"""Every benchmark script runs at its tiny --quick size and prints the JSON it promises, so
the scripts cannot rot. No timing is asserted here: figures belong to the benchmarks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO, dtf_env, need_binary

BENCH = REPO / "bench"


def run_bench(script: str, *args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(BENCH / script), "--quick", *args], cwd=REPO, env=dtf_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads(proc.stdout)
    assert doc["benchmark"] == script.removesuffix(".py")
    assert doc["quick"] is True and doc["repeats"] is not None
    assert doc["command"].startswith(f"python bench/{script}")
    machine = doc["machine"]
    assert machine["cpus"] >= 1 and machine["memory_gb"] > 0
    assert machine["versions"]["python"] and machine["versions"]["dtf"]
    assert isinstance(doc["notes"], list) and doc["notes"]
    return doc["results"]


def assert_summary(s: dict[str, Any]) -> None:
    """A repeated measurement: median, min, max, spread and every run."""
    assert set(s) >= {"median", "min", "max", "spread_pct", "runs"}
    assert s["runs"] and s["min"] <= s["median"] <= s["max"]


@pytest.mark.slow
@pytest.mark.redis
def test_dispatch_bench_compares_dtf_with_raw_send_task() -> None:
    need_binary("redis-server")
    r = run_bench("dispatch.py")
    assert r["tests"] > 0
    for phase in ("expand_s", "render_s", "store_s", "dispatch_s", "total_s"):
        assert_summary(r["dtf"]["phases_s"][phase])
    assert r["dtf"]["publish_msgs_per_s"] > 0 and r["celery_send_task"]["msgs_per_s"] > 0
    assert_summary(r["celery_send_task"]["wall_s"])
    assert_summary(r["celery_send_task_in_producer_batch"]["wall_s"])
    assert set(r["ratios"]) == {"dtf_publish_vs_raw_send_task", "dtf_end_to_end_vs_raw_send_task",
                                "dtf_publish_vs_producer_batch", "dtf_end_to_end_vs_producer_batch"}


@pytest.mark.slow
def test_model_load_bench_runs_a_real_model_suite_with_and_without_reuse() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    r = run_bench("model_load.py")
    assert r["tests_per_run"] == 4
    own, reused = r["each_test_loads"]["last_run"], r["model_reused"]["last_run"]
    assert {t["model_reused"] for t in own["tests"]} == {False} and {t["model_reused"] for t in reused["tests"]} == {True}
    assert all(t["status"] == "passed" for t in own["tests"] + reused["tests"])
    assert reused["server_load_s"] > 0 and own["server_load_s"] is None
    assert set(r["ratios"]) == {"run_wall_reused_vs_each_loads", "test_wall_total_reused_vs_each_loads"}


@pytest.mark.slow
@pytest.mark.redis
def test_overhead_bench_reports_per_test_wall_for_every_variant() -> None:
    need_binary("redis-server")
    pytest.importorskip("xdist")
    r = run_bench("overhead.py")
    assert set(r["variants"]) == {"pytest_xdist", "dtf_embedded", "dtf_redis", "dtf_redis_spawn", "spawn_floor"}
    for name, variant in r["variants"].items():
        assert "error" not in variant, (name, variant["error"])
        assert_summary(variant["wall_s"])
        assert variant["per_test_ms"] > 0
    assert set(r["ratios"]) >= {"dtf_embedded_vs_pytest_xdist", "dtf_redis_vs_pytest_xdist", "dtf_redis_vs_spawn_floor"}


def test_ingest_bench_checks_that_reingesting_changes_nothing() -> None:
    r = run_bench("ingest.py")
    for method in ("dtf_ingest_batch",):
        assert_summary(r[method]["wall_s"])
        assert r[method]["rows_per_s"] > 0
        assert r[method]["reingest_same_batches"]["row_count_unchanged"] is True
        assert r[method]["reingest_same_batches"]["rows_added"] == 0
    per_row = r["per_row_transactions"]
    assert 0 < per_row["measured_on"] <= r["results"] and per_row["projected_wall_s_for_all"] > 0
    assert set(r["ratios"]) == {"dtf_ingest_batch_vs_per_row",
                                "dtf_ingest_batch_vs_duckdb_alone", "dtf_ingest_batch_vs_duckdb_alone_one_thread",
                                "dtf_ingest_batch_vs_duckdb_alone_rows_per_cpu_s",
                                "dtf_ingest_batch_vs_duckdb_alone_one_thread_rows_per_cpu_s"}
    for alone in ("duckdb_alone_prebuilt_arrow", "duckdb_alone_prebuilt_arrow_one_thread"):
        assert r[alone]["rows_per_s"] > 0 and r[alone]["rows_per_cpu_s"] > 0


@pytest.mark.slow
@pytest.mark.redis
def test_scale_bench_reports_rss_and_growth_exponents(tmp_path: Path) -> None:
    need_binary("redis-server")
    r = run_bench("scale.py")
    assert len(r["sizes"]) >= 2
    for row in r["sizes"]:
        assert_summary(row["submit_s"])
        assert_summary(row["run_s"])
        assert row["coordinator_peak_rss_mb"] > 0 and row["per_test_ms"] > 0
    assert set(r["exponents"]) == {"submit_time", "run_time"}
    assert all(isinstance(k, float) for k in r["exponents"].values())


@pytest.mark.slow
@pytest.mark.redis
def test_scale_bench_with_real_workers_reports_fixed_and_marginal_cost_beside_pytest_xdist() -> None:
    need_binary("redis-server")
    pytest.importorskip("xdist")
    r = run_bench("scale.py", "--workers", "real", "--pytest", "--sizes", "20,40")
    assert r["workers"] == "real" and [row["tests"] for row in r["sizes"]] == [20, 40]
    for row in r["sizes"]:
        assert_summary(row["pytest_xdist"]["run_s"])
        assert row["tests_per_s"] > 0 and row["pytest_xdist"]["tests_per_s"] > 0
    costs = r["fixed_and_marginal"]
    assert set(costs) == {"dtf", "pytest_xdist", "marginal_dtf_vs_pytest_xdist"}
    assert set(costs["dtf"]) == set(costs["pytest_xdist"]) == {"marginal_ms_per_test", "fixed_s"}


@pytest.mark.slow
@pytest.mark.redis
def test_latency_bench_reports_store_latency_and_the_time_around_each_test() -> None:
    need_binary("redis-server")
    r = run_bench("latency.py")
    for kind in ("sleep", "trivial"):
        assert_summary(r[kind]["wall_s"])
        for key in ("first_result_stored_after_ms", "stored_after_median_ms", "inside_test_median_ms",
                    "between_tests_median_ms", "span_s"):
            assert_summary(r[kind][key])
        assert set(r[kind]["cpu_s_per_process"][0]) == {"coordinator", "worker1", "worker2"}
    assert r["sleep"]["inside_test_median_ms"]["median"] >= 1000 * r["sleep_s"]  # the test's own 50 ms sleep
    assert r["sleep"]["ideal_s"] > 0 and r["sleep"]["span_vs_ideal"] > 0


def test_render_bench_covers_the_builtin_cpu_templates() -> None:
    r = run_bench("render.py")
    assert r["templates"], "no built-in template was rendered"
    for name, row in r["templates"].items():
        assert "/" in name
        assert row["dtf_renders_per_s"] > 0 and row["source_bytes"] > 0
        assert_summary(row["dtf_wall_s"])
    assert r["overall"]["dtf_renders_per_s"] > 0


@pytest.mark.slow
def test_schedule_bench_reports_makespans_against_the_lower_bound() -> None:
    r = run_bench("schedule.py")
    assert set(r["runs"]) == {"fifo", "priority", "lpt"}
    for run in r["runs"].values():
        assert run["tests"] == r["tests"] and run["makespan_s"] > 0
        assert run["lower_bound_s"] >= run["longest_s"] > 0
    assert isinstance(r["goal_lpt_within_1_1x"], bool)
