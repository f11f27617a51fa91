"""What only the DuckLake store has to prove (the shared store test-suite runs on it too):
two processes' stores on one catalog, as two coordinators on different hosts would hold
them; fencing between them; readers while a writer writes, locked down as reports are;
housekeeping that changes no result; copies between the two backends."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dtf.errors import FencingError, StoreError
from dtf.model import RenderedTest, TestResult, TestSpec
from dtf.store import Store, open_store
from dtf.store.transfer import copy_store

from .conftest import PostgresServer, StoreSpec, need_lake_extension


@pytest.fixture
def lake(postgres_server: PostgresServer, tmp_path: Path) -> StoreSpec:
    need_lake_extension()
    return StoreSpec(f"ducklake:postgres:{postgres_server.conninfo(postgres_server.create_database())}",
                     str(tmp_path / "lake") + "/")


def results(run_id: str, n: int, attempt: int = 1) -> list[TestResult]:
    return [TestResult(run_id, f"t{i:04d}", attempt, "passed", duration_s=0.5, metrics={"latency_p50_ms": float(i)},
                       worker_id="w", hostname="h", hardware="cpu") for i in range(n)]


def rendered(n: int) -> list[RenderedTest]:
    return [RenderedTest(TestSpec(f"t{i:04d}", "m", "generic", "cpu", 1, "fp32", "generic/x"), "", "h") for i in range(n)]


def count(store: Store, sql: str = "SELECT count(*) AS n FROM results") -> int:
    return int(store.query(sql)[0]["n"])


def test_a_deposed_leaders_write_is_refused_by_a_store_another_process_holds(lake: StoreSpec) -> None:
    """Leader A (token 5) pauses; B takes over on its own connection with token 6 and
    writes; A's late write is refused and stores nothing."""
    a = lake.open()
    b = lake.open()
    try:
        a.ingest_batch(results("r", 3), token=5)
        assert b.max_token() == 5
        b.ingest_batch([], token=6)
        with pytest.raises(FencingError, match="token 5"):
            a.ingest_batch(results("r2", 3), token=5)
        assert count(b) == 3 and count(a) == 3
    finally:
        a.close()
        b.close()


def test_a_deposed_leaders_transaction_racing_the_new_leaders_loses(lake: StoreSpec) -> None:
    """A's transaction read the old token before B's commit raised it: A's commit conflicts
    on the token row, its retry reads the new token, and it is refused."""
    a = lake.open()
    b = lake.open()
    try:
        a.ingest_batch([], token=5)
        raced: dict[str, Any] = {}
        original = a._fence

        def fence_then_let_b_commit(con: Any, token: int) -> None:
            original(con, token)
            if not raced:  # only the first attempt: B commits between A's read and A's commit
                raced["b"] = b.ingest_batch(results("b", 2), token=6)

        a._fence = fence_then_let_b_commit  # type: ignore[method-assign]
        with pytest.raises(FencingError):
            a.ingest_batch(results("a", 2), token=5)
        assert raced["b"] == 2
        assert {r["run_id"] for r in b.query("SELECT DISTINCT run_id FROM results")} == {"b"}
        assert b.max_token() == 6
    finally:
        a.close()
        b.close()


def test_the_same_results_from_two_writers_are_stored_once(lake: StoreSpec) -> None:
    a = lake.open()
    b = lake.open()
    try:
        assert a.ingest_batch(results("r", 50), token=1) == 50
        assert b.ingest_batch(results("r", 60), token=1) == 10  # a redelivery reaching the next leader
        assert count(a) == 60
    finally:
        a.close()
        b.close()


def test_a_reader_in_another_process_reads_while_a_writer_holds_the_store(lake: StoreSpec) -> None:
    with lake.open() as writer:
        writer.insert_run({"run_id": "r", "suite_name": "s"}, rendered(20))
        writer.ingest_batch(results("r", 20), [{"run_id": "r", "test_id": "t0000", "status": "passed"}])
        script = (
            "import sys, json; from dtf.store import open_store\n"
            "with open_store(sys.argv[1], reports=True) as s:\n"
            "    print(json.dumps([len(s.final_results('r')), s.status_counts('r')], sort_keys=True))\n"
        )
        out = subprocess.run([sys.executable, "-c", script, lake.db], capture_output=True, text=True, timeout=120, check=True)
        assert out.stdout.strip() == '[20, {"cpu": {"passed": 1, "pending": 19}}]'
        writer.ingest_batch(results("r", 30))  # still writing after the reader came and went
        assert count(writer) == 30


def test_a_report_reader_reads_the_lake_and_nothing_else(lake: StoreSpec, tmp_path: Path) -> None:
    with lake.open() as writer:
        writer.ingest_batch(results("r", 5))
        writer.housekeeping(0.0, force=True)  # the rows in Parquet files under the data path
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    with lake.open(reports=True) as reader:
        assert len(reader.results("r")) == 5
        for sql in (f"SELECT * FROM read_csv('{secret}')", "SET enable_external_access = true",
                    "INSERT INTO results (run_id) VALUES ('x')", f"ATTACH '{tmp_path / 'x.duckdb'}' AS x"):
            with pytest.raises(Exception):
                reader.query(sql)
        with pytest.raises(StoreError, match="read-only"):
            reader.ingest_batch(results("r2", 1))


def test_compaction_and_snapshot_expiry_keep_every_result(lake: StoreSpec) -> None:
    with lake.open() as store:
        store.insert_run({"run_id": "r", "suite_name": "s"}, rendered(1200))
        batch = results("r", 1200)
        for i in range(0, 1200, 200):  # batches above the catalog's inlining limit: a Parquet file each
            store.ingest_batch(batch[i:i + 200], [{"run_id": "r", "test_id": f"t{j:04d}", "status": "passed"}
                                                  for j in range(i, i + 200)])
        before = sorted(store.final_results("r"), key=lambda t: t["test_id"])
        files = count(store, "SELECT count(*) AS n FROM ducklake_list_files('lake', 'results')")
        store.keep_snapshots_s = 0
        done = store.housekeeping(0.0, force=True)
        assert [d for d in done if "skipped" in d] == []
        assert sorted(store.final_results("r"), key=lambda t: t["test_id"]) == before
        assert files >= 6
        assert count(store, "SELECT count(*) AS n FROM ducklake_list_files('lake', 'results')") < files
        assert store.ingest_batch(results("r", 1200)) == 0  # still exactly-once after the rewrite


def snapshot(store: Store) -> tuple[Any, ...]:
    data = store.report_data("r")
    return data["run"], sorted(data["tests"], key=lambda t: t["test_id"]), store.workers(), store.results("r")


def test_a_local_file_promoted_to_a_lake_and_back_keeps_every_row(lake: StoreSpec, tmp_path: Path) -> None:
    with Store(tmp_path / "a.duckdb") as local:
        local.insert_run({"run_id": "r", "suite_name": "s"}, rendered(30))
        local.ingest_batch(results("r", 30), [{"run_id": "r", "test_id": "t0001", "status": "failed"}],
                           finished_runs=[("r", "failed")], token=4)
        local.upsert_worker({"worker_id": "w1", "hostname": "h", "queues": ["dtf.cpu"]}, token=4)
        expected = snapshot(local)
    for step in range(2):  # the second copy finds every row there and adds nothing
        with Store(tmp_path / "a.duckdb", read_only=True) as src, lake.open() as dst:
            counts = copy_store(src, dst)
            assert counts["results"] == (30 if step == 0 else 0)
            assert dst.max_token() == 4
    with lake.open(read_only=True) as src, Store(tmp_path / "b.duckdb") as back:
        copy_store(src, back)
        assert snapshot(back) == expected


def test_dtf_export_and_import_copy_between_backends(lake: StoreSpec, tmp_path: Path) -> None:
    with Store(tmp_path / "a.duckdb") as local:
        local.insert_run({"run_id": "r", "suite_name": "s"}, rendered(3))
        local.ingest_batch(results("r", 3))
    env_cmd = [sys.executable, "-m", "dtf.cli"]
    out = subprocess.run([*env_cmd, "export", "--db", str(tmp_path / "a.duckdb"), "--to", lake.db,
                          "--data-path", str(lake.data_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "results 3" in out.stderr
    out = subprocess.run([*env_cmd, "import", "--from", lake.db, "--db", str(tmp_path / "c.duckdb")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    with open_store(str(tmp_path / "c.duckdb"), reports=True) as copy:
        assert len(copy.results("r")) == 3 and copy.run("r") is not None
