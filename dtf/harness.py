"""The tiny API a rendered test calls to report metrics and its outcome.

Runs inside the test's own subprocess, so it imports only the standard library. The
worker passes the path of a result file in ``DTF_RESULT_FILE``; the test writes one JSON
object there: ``{"outcome": ..., "metrics": {...}, "error": ...}``.

    from dtf import harness

    def main(h):
        for ms in h.timed(iterations=10, warmup=2, fn=step):
            ...
        h.metric("throughput_items_s", 123.0)
        h.check(out.shape == (4, 384), "output shape")

    harness.run(main)

An AssertionError (or a failed ``check``) makes the test ``failed``; any other exception
makes it ``error``; ``skip(reason)`` makes it ``skipped``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from typing import Any, Callable, Iterable

__all__ = ["Harness", "Skip", "run", "percentile", "latency_metrics"]

RESULT_FILE_ENV = "DTF_RESULT_FILE"


class Skip(Exception):
    """Raised by ``Harness.skip`` to end the test as skipped."""


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def latency_metrics(latencies_ms: list[float], items_per_iteration: int) -> dict[str, float]:
    """p50/p90/p99 latency in ms, mean, and throughput in items per second."""
    total_s = sum(latencies_ms) / 1000.0
    return {
        "latency_p50_ms": percentile(latencies_ms, 50),
        "latency_p90_ms": percentile(latencies_ms, 90),
        "latency_p99_ms": percentile(latencies_ms, 99),
        "latency_mean_ms": sum(latencies_ms) / len(latencies_ms) if latencies_ms else math.nan,
        "throughput_items_s": (items_per_iteration * len(latencies_ms) / total_s) if total_s > 0 else math.nan,
        "iterations": float(len(latencies_ms)),
    }


class Harness:
    """Collects metrics and checks for one test run."""

    def __init__(self) -> None:
        self.metrics: dict[str, Any] = {}
        self.latencies_ms: list[float] = []

    def metric(self, name: str, value: Any) -> None:
        self.metrics[name] = value

    def check(self, condition: bool, what: str) -> None:
        if not condition:
            raise AssertionError(f"check failed: {what}")

    def skip(self, reason: str) -> None:
        raise Skip(reason)

    def timed(self, fn: Callable[[], Any], iterations: int, warmup: int = 0) -> list[Any]:
        """Call fn warmup + iterations times, record each timed call's latency, return outputs."""
        for _ in range(warmup):
            fn()
        outputs = []
        for _ in range(iterations):
            start = time.perf_counter()
            outputs.append(fn())
            self.latencies_ms.append((time.perf_counter() - start) * 1000.0)
        return outputs

    def report_latency(self, items_per_iteration: int) -> None:
        self.metrics.update(latency_metrics(self.latencies_ms, items_per_iteration))
        self.metrics["latencies_ms"] = [round(x, 4) for x in self.latencies_ms]


def _json_default(value: Any) -> Any:
    # numpy/torch arrays and scalars have tolist(); float() alone raised on arrays, which lost
    # the whole outcome of a test that recorded one as a metric.
    if hasattr(value, "tolist"):
        return value.tolist()
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _write(payload: dict[str, Any]) -> None:
    path = os.environ.get(RESULT_FILE_ENV)
    text = json.dumps(payload, default=_json_default, allow_nan=True)
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        print(text)


def run(main: Callable[[Harness], None], *, argv: Iterable[str] | None = None) -> None:
    """Run ``main(harness)``, write the outcome file and exit with a matching code."""
    h = Harness()
    try:
        main(h)
    except Skip as exc:
        _write({"outcome": "skipped", "metrics": h.metrics, "error": str(exc)})
        sys.exit(0)
    except AssertionError as exc:
        traceback.print_exc()
        _write({"outcome": "failed", "metrics": h.metrics, "error": str(exc) or "assertion failed"})
        sys.exit(1)
    except BaseException as exc:  # noqa: BLE001 - report anything the test raised
        traceback.print_exc()
        _write({"outcome": "error", "metrics": h.metrics, "error": f"{type(exc).__name__}: {exc}"})
        sys.exit(1)
    _write({"outcome": "passed", "metrics": h.metrics, "error": None})
