"""End to end: a suite becomes rendered tests, real workers run them, results land in
DuckDB exactly once each — through the embedded `dtf run` and through a real
redis-server with real `dtf coordinator` and `dtf worker` processes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest

from dtf.store import Store

from .conftest import REPO, Processes, RedisServer, dtf_cmd, dtf_env

PROBE_TEMPLATES = REPO / "tests" / "fixtures" / "pipeline_templates"

SUITE = """
name: pipeline
source: synthetic
defaults: {{timeout_s: 90, iterations: 3, warmup: 1, retries: 0}}
models:
  - bert-base-uncased
  - gpt2
  - microsoft/resnet-50
  - openai/whisper-tiny
  - openai/clip-vit-base-patch32
  - {{name: broken-model, family: probe, template: probe/fail, batch_sizes: [1, 2], precisions: [fp32]}}
  - {{name: hanging-model, family: probe, template: probe/hang, batch_sizes: [1], precisions: [fp32],
     timeout_s: 3, params: {{pid_dir: "{pid_dir}"}}}}
  - {{name: crashing-model, family: probe, template: probe/crash, batch_sizes: [1], precisions: [fp32]}}
hardware: [cpu]
batch_sizes: [1, 2, 4]
precisions: [fp32, fp16]
"""

BUILTIN_TESTS = 5 * 3 * 2


def write_suite(tmp_path: Path) -> tuple[Path, Path]:
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    suite = tmp_path / "pipeline.yaml"
    suite.write_text(SUITE.format(pid_dir=pid_dir))
    return suite, pid_dir


def parse_cli_json(stdout: str) -> dict[str, Any]:
    start = stdout.index("{")
    return json.loads(stdout[start:])


def check_run(db: Path, run_id: str, pid_dir: Path) -> None:
    """The assertions both modes share, read straight from the DuckDB file."""
    with Store(db, read_only=True) as store:
        tests = {row["test_id"]: row for row in store.final_results(run_id)}
        results = store.results(run_id)
        run = store.run(run_id)
    assert run is not None and run["status"] == "failed"
    assert len(tests) == BUILTIN_TESTS + 4
    # Exactly one final result per executed test (retries are 0, so one attempt each).
    executed = [t for t in tests.values() if t["status"] != "skipped"]
    assert sorted(r["test_id"] for r in results) == sorted(t["test_id"] for t in executed)
    builtin = [t for t in tests.values() if t["family"] != "probe"]
    assert [t["test_id"] for t in builtin if t["status"] != "passed"] == []
    for t in builtin:
        assert t["metrics"]["latency_p50_ms"] > 0 and t["metrics"]["throughput_items_s"] > 0
        assert t["peak_memory_mb"] > 0 and t["duration_s"] > 0
    broken1 = tests["broken-model/cpu/bs1/fp32"]
    assert broken1["status"] == "failed" and "fails by design" in broken1["error"]
    assert "AssertionError" in broken1["stderr_tail"]
    broken2 = tests["broken-model/cpu/bs2/fp32"]
    assert broken2["status"] == "skipped" and "broken-model/cpu/bs1/fp32" in broken2["reason"]
    assert tests["crashing-model/cpu/bs1/fp32"]["status"] == "error"
    assert "KeyError" in tests["crashing-model/cpu/bs1/fp32"]["error"]
    hanging = tests["hanging-model/cpu/bs1/fp32"]
    assert hanging["status"] == "timeout"
    pids = [int(p) for f in pid_dir.glob("*.pids") for p in f.read_text().split()]
    assert len(pids) == 2
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
    # A dependant never starts before its parent finished.
    for t in executed:
        for parent in t["depends_on"]:
            assert t["started_at"] >= tests[parent]["finished_at"], (t["test_id"], parent)
    chained = [t for t in executed if t["depends_on"]]
    assert len(chained) >= 20


@pytest.mark.slow
def test_embedded_run_stores_one_final_result_per_test(tmp_path: Path) -> None:
    suite, pid_dir = write_suite(tmp_path)
    db = tmp_path / "embedded.duckdb"
    proc = subprocess.run(
        dtf_cmd("run", str(suite), "--db", str(db), "--workers", "2", "--format", "json",
                "--templates", str(PROBE_TEMPLATES)),
        env=dtf_env(DTF_SPOOL_DIR=str(tmp_path / "spool")), cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 1, proc.stderr
    data = parse_cli_json(proc.stdout)
    check_run(db, data["run"]["run_id"], pid_dir)


@pytest.mark.slow
@pytest.mark.redis
def test_redis_pipeline_with_real_coordinator_and_workers(
    tmp_path: Path, redis_server: RedisServer, processes: Processes
) -> None:
    suite, pid_dir = write_suite(tmp_path)
    db = tmp_path / "central.duckdb"
    env = dtf_env(DTF_BROKER_URL=redis_server.url, DTF_SPOOL_DIR=str(tmp_path / "spool"))
    coordinator = processes.start("coordinator", ["coordinator", "--db", str(db)], env, tmp_path)
    for i in (1, 2):
        processes.start(f"worker{i}", ["worker", "--name", f"w{i}@test", "--queues", "dtf.cpu",
                                       "--concurrency", "1", "--loglevel", "WARNING"], env, tmp_path)
    proc = subprocess.run(
        dtf_cmd("submit", str(suite), "--wait", "--timeout", "400", "--format", "json",
                "--templates", str(PROBE_TEMPLATES)),
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 1, proc.stderr + processes.log("coordinator") + processes.log("worker1")
    data = parse_cli_json(proc.stdout)
    run_id = data["run"]["run_id"]
    workers_seen = {t["worker_id"] for t in data["tests"] if t["worker_id"]}
    assert workers_seen == {"w1@test", "w2@test"}
    coordinator.terminate()
    coordinator.wait(30)
    check_run(db, run_id, pid_dir)


@pytest.mark.redis
def test_submit_names_queues_without_a_consumer(
    tmp_path: Path, redis_server: RedisServer, processes: Processes
) -> None:
    suite = tmp_path / "cuda.yaml"
    suite.write_text("name: gpu\nsource: synthetic\nmodels: [gpt2]\nhardware: [cuda]\nbatch_sizes: [1]\n")
    env = dtf_env(DTF_BROKER_URL=redis_server.url)
    processes.start("coordinator", ["coordinator", "--db", str(tmp_path / "c.duckdb")], env, tmp_path)
    proc = subprocess.run(dtf_cmd("submit", str(suite), "--wait", "--timeout", "4"),
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "no worker consumes dtf.cuda" in proc.stderr
    assert "1 tests never finished" in proc.stderr


def test_unreachable_broker_is_one_line_and_exit_2(tmp_path: Path) -> None:
    from .conftest import free_port

    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nsource: synthetic\nmodels: [gpt2]\nhardware: [cpu]\nbatch_sizes: [1]\n")
    env = dtf_env(DTF_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0")
    proc = subprocess.run(dtf_cmd("submit", str(suite)), env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach broker redis://127.0.0.1:")
    assert "Traceback" not in proc.stderr
