"""Store.ingest_batch writes the same rows whether a batch takes the fast Arrow path or falls
back row by row (odd values make it fall back), and a redelivered batch stores nothing twice (on both backends where the test says store_spec)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dtf.errors import FencingError, StoreError
from dtf.model import RenderedTest, TestResult, TestSpec
from dtf.store import Store

from .conftest import StoreSpec


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


def test_one_batch_stores_what_one_row_at_a_time_stores(tmp_path: Path) -> None:
    with Store(tmp_path / "a.duckdb") as a, Store(tmp_path / "b.duckdb") as b:
        assert a.ingest_batch(results("r"), token=3) == 7
        assert sum(b.ingest_batch([r], token=3) for r in results("r")) == 7
        assert rows(a) == rows(b)
        assert len(rows(a)) == 7


def test_reingesting_a_batch_stores_nothing(store_spec: StoreSpec) -> None:
    with store_spec.open() as store:
        assert store.ingest_batch(results("r")) == 7
        assert store.ingest_batch(results("r")) == 0
        assert store.ingest_batch(results("r") + results("r2")) == 7
        assert store.query("SELECT count(*) AS n FROM results")[0]["n"] == 14


def test_an_empty_batch_still_applies_updates_and_closes_runs(store_spec: StoreSpec) -> None:
    with store_spec.open() as store:
        store.insert_run({"run_id": "r", "suite_name": "s"}, [])
        assert store.ingest_batch([], finished_runs=[("r", "passed")]) == 0
        run = store.run("r")
        assert run is not None and run["status"] == "passed"


def rendered(test_id: str) -> RenderedTest:
    return RenderedTest(TestSpec(test_id, "m", "f", "cpu", 1, "fp32", "t"), "", "h")


def test_a_batch_with_one_stored_key_stores_the_rest_and_applies_its_updates_once(store_spec: StoreSpec) -> None:
    """The plain insert is refused, and the redone transaction still writes everything else."""
    batch = [r for r in results("r") if r.test_id.isascii()]
    with store_spec.open() as store:
        store.insert_run({"run_id": "r", "suite_name": "s"}, [rendered(r.test_id) for r in batch])
        assert store.ingest_batch(batch[:1]) == 1
        updates = [{"run_id": "r", "test_id": r.test_id, "status": r.status, "attempts": r.attempt} for r in batch]
        assert store.ingest_batch(batch, updates, finished_runs=[("r", "failed")], token=2) == len(batch) - 1
        assert store.query("SELECT count(*) AS n FROM results")[0]["n"] == len(batch)
        assert {t["test_id"]: t["status"] for t in store.tests("r")} == {r.test_id: r.status for r in batch}
        run = store.run("r")
        assert run is not None and run["status"] == "failed"
        assert store.max_token() == 2


def test_a_stale_token_is_refused_before_any_duplicate_is_looked_at(store_spec: StoreSpec) -> None:
    with store_spec.open() as store:
        store.ingest_batch(results("r"), token=5)
        with pytest.raises(FencingError):
            store.ingest_batch(results("r") + results("r2"), token=4)
        assert store.query("SELECT count(*) AS n FROM results")[0]["n"] == 7


def test_a_batch_no_retry_can_store_raises_and_writes_nothing(tmp_path: Path) -> None:
    """A key column that is NULL fails the plain insert and the ON CONFLICT one alike (the
    local file: its primary key makes the key columns NOT NULL)."""
    with Store(tmp_path / "s.duckdb") as store:
        bad = TestResult(None, "t", 1, "passed")  # type: ignore[arg-type]
        with pytest.raises(StoreError, match="NOT NULL"):
            store.ingest_batch(results("r") + [bad])
        assert store.query("SELECT count(*) AS n FROM results")[0]["n"] == 0
        assert store.ingest_batch(results("r")) == 7  # the connection is usable again


@pytest.mark.parametrize("metrics", [
    {},
    {"latency_p50_ms": 1.25, "n": 3, "ok": True, "none": None, "big": 10**30},
    {"nested": {"shape": [4, 384], "names": ["a", "ü", "✓"]}, "tiny": 1e-300, "neg": -0.0},
    {"quote\"s": "back\\slash\nnewline\t\u0001", "emoji": "🚀"},
])
def test_metrics_text_is_what_json_dumps_writes(tmp_path: Path, metrics: dict[str, object]) -> None:
    """The batch encoder is a faster json.dumps(ensure_ascii=False, allow_nan=False): same text."""
    with Store(tmp_path / "s.duckdb") as store:
        store.ingest_batch([TestResult("r", "t", 1, "passed", metrics=metrics)])
        (row,) = store.query("SELECT CAST(metrics AS VARCHAR) AS m FROM results")
    assert row["m"] == json.dumps(metrics, ensure_ascii=False, allow_nan=False)
