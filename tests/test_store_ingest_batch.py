"""Store.ingest_batch writes exactly what commit_batch writes, odd values included, and a
redelivered batch stores nothing twice."""

from __future__ import annotations

from pathlib import Path

from dtf.model import TestResult
from dtf.store import Store


def results(run_id: str) -> list[TestResult]:
    return [
        TestResult(run_id, f"m/cpu/bs{i}/fp32", 1, "passed", duration_s=0.1 * i, peak_memory_mb=10.0 + i,
                   metrics={"latency_p50_ms": 1.0 + i, "shape": [4, 384]}, worker_id="w1", hostname="h",
                   hardware="cpu", started_at=1.0, finished_at=2.0)
        for i in range(5)
    ] + [
        # NaN, infinity, a non-string key and lone surrogates: each makes the fast path fall back.
        TestResult(run_id, "odd/\udc80", 2, "error", metrics={"nan": float("nan"), 3: "x\udc81", "l": [float("inf")]},
                   error="cannot open \udc82", stderr_tail="tail \udc83"),
        TestResult(run_id, "plain", 1, "failed", metrics={}, error="check failed: ünïcödé ✓"),
    ]


def rows(store: Store) -> list[dict[str, object]]:
    return store.query("SELECT * EXCLUDE (ingested_at) FROM results ORDER BY test_id, attempt")


def test_ingest_batch_stores_what_commit_batch_stores(tmp_path: Path) -> None:
    with Store(tmp_path / "a.duckdb") as a, Store(tmp_path / "b.duckdb") as b:
        assert a.commit_batch(results("r"), token=3) == b.ingest_batch(results("r"), token=3) == 7
        assert rows(a) == rows(b)


def test_reingesting_a_batch_stores_nothing(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as store:
        assert store.ingest_batch(results("r")) == 7
        assert store.ingest_batch(results("r")) == 0
        assert store.ingest_batch(results("r") + results("r2")) == 7
        assert store.query("SELECT count(*) AS n FROM results")[0]["n"] == 14


def test_an_empty_batch_still_applies_updates_and_closes_runs(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as store:
        store.insert_run({"run_id": "r", "suite_name": "s"}, [])
        assert store.ingest_batch([], finished_runs=[("r", "passed")]) == 0
        run = store.run("r")
        assert run is not None and run["status"] == "passed"
