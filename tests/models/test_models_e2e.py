"""A suite of real models end to end: `dtf run` on the embedded default (in-process broker,
a real Celery worker, a DuckDB file) and `dtf submit --wait` through a real redis-server,
coordinator and worker. Each result carries its source, stack and parity; a perturbed
backend fails the run with the parity message; synthetic workloads stay labelled."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ..conftest import Processes, RedisServer, dtf_cmd, dtf_env
from .conftest import TINY_BERT, save_tiny

pytest.importorskip("transformers")


def parse_json(stdout: str) -> dict[str, Any]:
    """The JSON document a command printed (after any run-id line)."""
    data: dict[str, Any] = json.loads(stdout[stdout.index("{"):])
    return data


def write_suite(tmp_path: Path, *, noise: float = 0.0) -> Path:
    save_tiny("bert", tmp_path / "models" / "tiny-bert")
    gpt2 = {"n_layer": 1, "n_embd": 16, "n_head": 2, "vocab_size": 60, "n_positions": 64}
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: real-e2e\n"
        "hardware: [cpu]\n"
        "batch_sizes: [2]\n"
        "precisions: [fp32, bf16]\n"
        "iterations: 2\n"
        "warmup: 1\n"
        "models:\n"
        f"  - {{name: tiny-bert, source: hf, path: ./models/tiny-bert, params: {{threads: 1, parity_noise: {noise}}}}}\n"
        f"  - {{name: gpt2, source: hf, weights: random, params: {{threads: 1, new_tokens: 2, config: {json.dumps(gpt2)}}}}}\n"
        "  - {name: a-synthetic-net, source: synthetic, family: vision, params: {image_size: 16}}\n"
    )
    return suite


def check_results(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    tests = {t["test_id"]: t for t in data["tests"]}
    assert set(tests) == {f"{m}/cpu/bs2/{p}" for m in ("tiny-bert", "gpt2", "a-synthetic-net") for p in ("fp32", "bf16")}
    for model in ("tiny-bert", "gpt2"):
        ref, bf16 = tests[f"{model}/cpu/bs2/fp32"], tests[f"{model}/cpu/bs2/bf16"]
        assert ref["metrics"]["source"] == "hf" and ref["metrics"]["parity"]["verdict"] == "reference"
        assert bf16["metrics"]["parity"]["candidate"] == "cpu/bf16"
        assert ref["metrics"]["provenance"]["torch"] and ref["metrics"]["provenance"]["transformers"]
    bert = tests["tiny-bert/cpu/bs2/fp32"]["metrics"]
    assert bert["fingerprint"]["last_hidden_state"]["shape"] == [2, 32, TINY_BERT["hidden_size"]]
    assert tests["gpt2/cpu/bs2/fp32"]["metrics"]["tokens_per_s"] > 0
    assert "source" not in tests["a-synthetic-net/cpu/bs2/fp32"]["metrics"]  # synthetic: no model claimed
    return tests


@pytest.mark.slow
def test_a_real_model_suite_runs_on_the_embedded_default(tmp_path: Path) -> None:
    suite = write_suite(tmp_path)
    proc = subprocess.run(dtf_cmd("run", str(suite), "--db", str(tmp_path / "dtf.duckdb"), "--format", "json"),
                          env=dtf_env(HF_HUB_OFFLINE="1"), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tests = check_results(parse_json(proc.stdout))
    assert all(t["status"] == "passed" for t in tests.values())
    assert tests["tiny-bert/cpu/bs2/bf16"]["metrics"]["parity"]["verdict"] == "pass"


@pytest.mark.slow
def test_a_perturbed_backend_fails_the_run_with_the_parity_message(tmp_path: Path) -> None:
    suite = write_suite(tmp_path, noise=0.5)
    proc = subprocess.run(dtf_cmd("run", str(suite), "--db", str(tmp_path / "dtf.duckdb"), "--format", "json"),
                          env=dtf_env(HF_HUB_OFFLINE="1"), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    tests = {t["test_id"]: t for t in parse_json(proc.stdout)["tests"]}
    failed = tests["tiny-bert/cpu/bs2/bf16"]
    assert failed["status"] == "failed"
    assert "parity: cpu/bf16 differs from cpu/fp32: max abs" in (failed["error"] or failed["reason"])
    assert tests["tiny-bert/cpu/bs2/fp32"]["status"] == "passed"  # the reference itself is not perturbed


@pytest.mark.slow
@pytest.mark.redis
def test_a_real_model_suite_runs_through_redis_with_a_real_worker(
    tmp_path: Path, redis_server: RedisServer, processes: Processes
) -> None:
    suite = write_suite(tmp_path)
    env = dtf_env(DTF_BROKER_URL=redis_server.url, DTF_SPOOL_DIR=str(tmp_path / "spool"), HF_HUB_OFFLINE="1")
    processes.start("coordinator", ["coordinator", "--db", str(tmp_path / "central.duckdb")], env, tmp_path)
    processes.start("worker", ["worker", "--name", "models@test", "--queues", "dtf.cpu", "--concurrency", "2",
                               "--loglevel", "WARNING"], env, tmp_path)
    proc = subprocess.run(dtf_cmd("submit", str(suite), "--wait", "--timeout", "500", "--format", "json"),
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr + processes.log("coordinator") + processes.log("worker")
    tests = check_results(parse_json(proc.stdout))
    assert {t["worker_id"] for t in tests.values()} == {"models@test"}
