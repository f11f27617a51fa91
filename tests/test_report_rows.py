"""Row factories shared by the report and regression tests: rows shaped like
``Store.final_results`` and ``Store.report_data`` (this module holds no tests)."""

from __future__ import annotations

import random
from typing import Any

RUN_ID = "smoke-20261129-180000-abc123"
BASE_ID = "smoke-20261128-180000-def456"
T0 = 1_795_000_000.0


def latencies(center_ms: float, n: int = 40, spread: float = 0.02, seed: int = 0) -> list[float]:
    """A tight, slightly right-skewed sample around ``center_ms``."""
    rng = random.Random(seed)
    return [round(center_ms * (1 + abs(rng.gauss(0, spread))), 6) for _ in range(n)]


def row_for(model: str, hardware: str = "cpu", batch_size: int = 1, precision: str = "fp32", *,
             status: str = "passed", run_id: str = RUN_ID, family: str = "text_embedding",
             center_ms: float = 1.0, seed: int = 0, **extra: Any) -> dict[str, Any]:
    slug = model.replace("/", "-")
    lat = latencies(center_ms * batch_size ** 0.5, seed=seed) if status == "passed" else []
    metrics: dict[str, Any] = {}
    if lat:
        ordered = sorted(lat)
        metrics = {"latency_p50_ms": ordered[len(ordered) // 2], "latency_p90_ms": ordered[int(0.9 * len(ordered))],
                   "latency_p99_ms": ordered[-1], "latency_mean_ms": sum(lat) / len(lat),
                   "throughput_items_s": batch_size * 1000.0 / (sum(lat) / len(lat)),
                   "iterations": float(len(lat)), "latencies_ms": lat}
    row: dict[str, Any] = {
        "run_id": run_id, "test_id": f"{slug}/{hardware}/bs{batch_size}/{precision}", "model": model,
        "family": family, "hardware": hardware, "batch_size": batch_size, "precision": precision,
        "template": f"{family}/cpu", "template_hash": "0123456789abcdef", "priority": 5, "memory_gb": 0.5,
        "depends_on": [], "status": status, "attempts": 1 if status not in ("pending", "queued") else 0,
        "reason": None, "queued_at": T0, "test_finished_at": T0 + 5, "attempt": 1, "worker_id": "w1@host",
        "hostname": "host", "duration_s": 1.5 + batch_size * 0.1, "peak_memory_mb": 120.0, "metrics": metrics,
        "error": None, "stderr_tail": None, "started_at": T0 + 1, "finished_at": T0 + 2.5,
    }
    row.update(extra)
    return row




def run_row(run_id: str = RUN_ID, status: str = "passed", **extra: Any) -> dict[str, Any]:
    row = {"run_id": run_id, "suite_name": "smoke", "suite_hash": "f" * 64, "submitted_at": T0,
           "git_sha": "0123456789abcdef0123456789abcdef01234567", "branch": "main",
           "ci_url": "https://ci.example.invalid/job/1", "status": status, "finished_at": T0 + 30, "total": 0,
           "info": '{"ci_provider": "github", "suite_path": "examples/smoke.yaml"}'}
    row.update(extra)
    return row


def mixed_tests() -> list[dict[str, Any]]:
    """Passed, failed, error, timeout, skipped and never-run tests on two hardware kinds."""
    return [
        row_for("bert-base-uncased", batch_size=1, center_ms=1.0),
        row_for("bert-base-uncased", batch_size=4, center_ms=1.0, seed=1),
        row_for("gpt2", family="text_generation", batch_size=1, center_ms=5.0, seed=2),
        row_for("gpt2", family="text_generation", batch_size=4, status="failed",
                 error="AssertionError: check failed: logits are all finite",
                 stderr_tail="Traceback (most recent call last):\n  File \"t.py\", line 3\n\x1b[31mAssertionError\x1b[0m: check failed\x00"),
        row_for("openai/whisper-tiny", family="audio", status="error", error="KeyError: 'mel'",
                 stderr_tail="KeyError: 'mel'"),
        row_for("microsoft/resnet-50", family="vision", status="timeout", reason="timed out after 300 s",
                 error="timed out after 300 s"),
        row_for("bert-base-uncased", hardware="cuda", status="skipped",
                 reason="no worker here serves cuda (this machine has cpu)"),
        row_for("gpt2", hardware="cuda", family="text_generation", status="queued"),
    ]
