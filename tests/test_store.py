"""The store test-suite, run against both backends (the ``store_spec`` fixture: a real
DuckDB file, and a real DuckLake on a PostgreSQL server of the session's own):
migrations, idempotent Arrow batches, fencing, queries; then what happens when a second
Store asks for a local file that is taken."""

from __future__ import annotations

import dataclasses
import math
import uuid
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dtf.store.schema as store_module
from dtf.errors import FencingError, StoreError
from dtf.model import RenderedTest, TestResult, TestSpec
from dtf.store import MIGRATIONS, Store

from .conftest import StoreSpec

SQL_LOOKING = [
    "'); DROP TABLE results; --",
    "\"; DELETE FROM tests WHERE 1=1; --",
    "' OR '1'='1",
    "$1 ? :name %s {0}",
]

# Text DuckDB and Arrow store verbatim: anything UTF-8 can encode, NUL included.
texts = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40) | st.sampled_from(SQL_LOOKING)
metric_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats() | texts  # st.floats() includes NaN and the infinities
)
metric_values = st.recursive(
    metric_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=10,
)
finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
stored_results = st.builds(
    TestResult,
    run_id=st.just("run"),
    test_id=texts,
    attempt=st.integers(min_value=0, max_value=2**31 - 1),
    status=texts,
    duration_s=finite,
    peak_memory_mb=finite,
    metrics=st.dictionaries(texts, metric_values, max_size=5),
    error=st.none() | texts,
    stderr_tail=st.none() | texts,
    worker_id=texts,
    hostname=texts,
    hardware=texts,
    started_at=finite,
    finished_at=finite,
)
per_example = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def store(store_spec: StoreSpec) -> Iterator[Store]:
    with store_spec.open() as s:
        yield s


@pytest.fixture
def local_store(tmp_path: Path) -> Iterator[Store]:
    """The local file only: what a file lock does is its own business."""
    with Store(tmp_path / "dtf.duckdb") as s:
        yield s


def own_run(batch: list[TestResult]) -> tuple[str, list[TestResult]]:
    """The batch moved into a run of its own, so one store serves every Hypothesis example
    and no example sees another's rows (a new lake per example costs seconds)."""
    run_id = f"run-{uuid.uuid4().hex}"
    return run_id, [dataclasses.replace(r, run_id=run_id) for r in batch]


def count_run(s: Store, run_id: str) -> int:
    return int(s.query("SELECT count(*) AS n FROM results WHERE run_id = ?", [run_id])[0]["n"])


def result(test_id: str = "t1", attempt: int = 1, status: str = "passed", run_id: str = "run", **kw: Any) -> TestResult:
    return TestResult(run_id=run_id, test_id=test_id, attempt=attempt, status=status, **kw)


def rendered(test_id: str, hardware: str = "cpu", **kw: Any) -> RenderedTest:
    spec = TestSpec(test_id, "bert-base", "encoder", hardware, 8, "fp16", "encoder/latency", **kw)
    return RenderedTest(spec, f"print({test_id!r})\n", "sha256:abc")


def count(s: Store, table: str = "results") -> int:
    return int(s.query(f"SELECT count(*) AS n FROM {table}")[0]["n"])


def expected_json(value: Any) -> Any:
    """What a metrics value reads back as: non-finite floats become null, tuples lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: expected_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [expected_json(v) for v in value]
    return value


# -- migrations --------------------------------------------------------------------------------

def test_a_new_file_records_every_migration_by_name(store: Store) -> None:
    names = [row["name"] for row in store.query("SELECT name FROM migrations ORDER BY name")]
    assert names == [name for name, _ in MIGRATIONS]
    tables = {row["table_name"] for row in store.query("SELECT table_name FROM information_schema.tables")}
    assert {"meta", "runs", "tests", "results", "workers", "migrations"} <= tables


def test_reopening_the_file_applies_no_migration(store_spec: StoreSpec) -> None:
    with store_spec.open() as first:
        recorded = first.query("SELECT name, applied_at FROM migrations")
        first.ingest_batch([result()])
    with store_spec.open() as again:
        assert again.migrate() == []
        assert again.query("SELECT name, applied_at FROM migrations") == recorded
        assert count(again) == 1


def test_store_creates_missing_parent_directories(tmp_path: Path) -> None:
    with Store(tmp_path / "a" / "b" / "dtf.duckdb") as s:
        assert s.migrate() == []
    assert (tmp_path / "a" / "b" / "dtf.duckdb").is_file()


# -- idempotent batches ------------------------------------------------------------------------

def test_redelivered_result_does_not_create_a_duplicate_row(store: Store) -> None:
    assert store.ingest_batch([result()]) == 1
    assert store.ingest_batch([result(status="failed")]) == 0
    rows = store.results("run")
    assert len(rows) == 1 and rows[0]["status"] == "passed"


def test_every_attempt_of_a_test_is_its_own_row(store: Store) -> None:
    assert store.ingest_batch([result(attempt=1, status="failed"), result(attempt=2)]) == 2
    assert [(r["attempt"], r["status"]) for r in store.results("run")] == [(1, "failed"), (2, "passed")]


@per_example
@given(batch=st.lists(stored_results, max_size=8, unique_by=lambda r: (r.test_id, r.attempt)))
def test_ingesting_the_same_batch_twice_leaves_the_row_count_unchanged(store: Store, batch: list[TestResult]) -> None:
    run_id, batch = own_run(batch)
    assert store.ingest_batch(batch) == len(batch)
    assert store.ingest_batch(batch) == 0
    assert count_run(store, run_id) == len(batch)


@per_example
@given(batch=st.lists(stored_results, min_size=1, max_size=8), data=st.data())
def test_a_batch_with_duplicate_keys_inside_it_stores_one_row_per_key(
    store: Store, batch: list[TestResult], data: st.DataObject
) -> None:
    run_id, batch = own_run(batch)
    repeats = data.draw(st.lists(st.sampled_from(batch), min_size=1, max_size=4))
    keys = {(r.test_id, r.attempt) for r in batch}
    assert store.ingest_batch(batch + repeats) == len(keys)
    assert count_run(store, run_id) == len(keys)


@per_example
@given(original=stored_results)
def test_a_result_reads_back_as_it_was_written(store: Store, original: TestResult) -> None:
    run_id, (original,) = own_run([original])
    store.ingest_batch([original], token=3)
    (row,) = store.results(run_id)
    stored = {k: row[k] for k in original.to_dict()}
    assert stored == original.to_dict() | {"metrics": expected_json(dict(original.metrics))}
    assert row["token"] == 3


def test_nan_and_infinite_metrics_are_stored_as_null(store: Store) -> None:
    store.ingest_batch([result(metrics={"p50": math.nan, "nested": {"x": [1.5, math.inf, -math.inf]}})])
    assert store.results("run")[0]["metrics"] == {"p50": None, "nested": {"x": [1.5, None, None]}}
    raw = store.query("SELECT metrics FROM results")[0]["metrics"]
    assert "NaN" not in raw and "Infinity" not in raw


@pytest.mark.parametrize("text", SQL_LOOKING)
def test_sql_looking_strings_are_stored_verbatim(store: Store, text: str) -> None:
    store.ingest_batch([result(test_id=text, error=text, metrics={text: text})])
    (row,) = store.results("run")
    assert (row["test_id"], row["error"], row["metrics"]) == (text, text, {text: text})
    assert count(store, "tests") == 0 and count(store, "runs") == 0  # nothing was executed


def test_a_lone_surrogate_is_stored_escaped_instead_of_poisoning_the_batch(store: Store) -> None:
    """An error message with a surrogateescape-decoded file name must not fail every redelivery."""
    bad = "cannot open /data/\udcff.bin"
    assert store.ingest_batch([result(error=bad, metrics={"path": bad, bad: 1})]) == 1
    (row,) = store.results("run")
    assert row["error"] == "cannot open /data/\\udcff.bin"
    assert row["metrics"] == {"path": "cannot open /data/\\udcff.bin", "cannot open /data/\\udcff.bin": 1}


def test_a_batch_the_database_rejects_raises_store_error_naming_the_cause_and_writes_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "_encode_compact", lambda metrics: "{not json")
    with pytest.raises(StoreError) as info:
        store.ingest_batch([result()], [{"run_id": "run", "test_id": "t1", "status": "passed"}])
    message = str(info.value)
    assert "\n" not in message
    assert "JSON" in message and "aborted" not in message  # the cause, not the follow-on error
    monkeypatch.undo()
    assert count(store) == 0
    assert store.ingest_batch([result()]) == 1  # the connection is usable again


# -- fencing -----------------------------------------------------------------------------------

def test_a_lower_fencing_token_is_refused_and_writes_nothing(store: Store) -> None:
    store.insert_run({"run_id": "run"}, [rendered("t1")], token=5)
    with pytest.raises(FencingError, match="token 4"):
        store.ingest_batch(
            [result()], [{"run_id": "run", "test_id": "t1", "status": "passed"}],
            finished_runs=[("run", "passed")], token=4,
        )
    assert count(store) == 0
    assert store.tests("run")[0]["status"] == "pending"
    assert store.run("run")["status"] == "running"
    assert store.max_token() == 5


@pytest.mark.parametrize(
    "write",
    [
        lambda s, token: s.insert_run({"run_id": "other"}, [rendered("x")], token=token),
        lambda s, token: s.update_tests([{"run_id": "run", "test_id": "t1", "status": "queued"}], token=token),
        lambda s, token: s.upsert_worker({"worker_id": "w1"}, token=token),
    ],
    ids=["insert_run", "update_tests", "upsert_worker"],
)
def test_every_write_checks_the_fencing_token(store: Store, write: Any) -> None:
    store.insert_run({"run_id": "run"}, [rendered("t1")], token=7)
    with pytest.raises(FencingError):
        write(store, 6)
    assert count(store, "runs") == 1 and count(store, "workers") == 0
    assert store.tests("run")[0]["status"] == "pending"


def test_an_equal_fencing_token_passes(store: Store) -> None:
    store.ingest_batch([result("a")], token=5)
    assert store.ingest_batch([result("b")], token=5) == 1
    assert store.max_token() == 5


def test_a_higher_fencing_token_passes_and_becomes_the_new_minimum(store: Store) -> None:
    store.ingest_batch([result("a")], token=5)
    assert store.ingest_batch([result("b")], token=9) == 1
    assert store.max_token() == 9
    with pytest.raises(FencingError):
        store.ingest_batch([result("c")], token=5)


def test_the_highest_token_survives_reopening_the_file(store_spec: StoreSpec) -> None:
    with store_spec.open() as s:
        s.ingest_batch([], token=11)
    with store_spec.open() as s:
        assert s.max_token() == 11
        with pytest.raises(FencingError):
            s.ingest_batch([result()], token=10)


def test_a_new_file_has_seen_no_token(store: Store) -> None:
    assert store.max_token() == 0


# -- runs, tests, updates ----------------------------------------------------------------------

def test_inserting_a_run_twice_is_a_no_op(store: Store) -> None:
    tests = [rendered("t1"), rendered("t2", depends_on=("t1",))]
    store.insert_run({"run_id": "run", "suite_name": "smoke"}, tests)
    store.insert_run({"run_id": "run", "suite_name": "smoke"}, tests)
    assert count(store, "runs") == 1 and count(store, "tests") == 2
    run = store.run("run")
    assert run is not None and (run["status"], run["total"]) == ("running", 2)
    rows = store.tests("run")
    assert [(r["test_id"], r["status"], r["attempts"], r["depends_on"]) for r in rows] == [
        ("t1", "pending", 0, []), ("t2", "pending", 0, ["t1"])
    ]
    assert "source" not in rows[0]
    assert store.tests("run", with_source=True)[0]["source"] == "print('t1')\n"


def test_the_last_update_for_a_test_in_a_batch_wins(store: Store) -> None:
    store.insert_run({"run_id": "run"}, [rendered("t1")])
    store.update_tests([
        {"run_id": "run", "test_id": "t1", "status": "queued", "attempts": 1, "queued_at": 10.0},
        {"run_id": "run", "test_id": "t1", "status": "running"},
    ])
    (row,) = store.tests("run")
    # Fields the later update leaves out keep their earlier values.
    assert (row["status"], row["attempts"], row["queued_at"]) == ("running", 0, None)
    store.update_tests([{"run_id": "run", "test_id": "t1", "status": "queued", "attempts": 1, "queued_at": 10.0}])
    store.update_tests([{"run_id": "run", "test_id": "t1", "status": "running"}])
    (row,) = store.tests("run")
    assert (row["status"], row["attempts"], row["queued_at"]) == ("running", 1, 10.0)


def test_ingest_batch_closes_finished_runs(store: Store) -> None:
    store.insert_run({"run_id": "run"}, [rendered("t1")])
    store.ingest_batch([result()], [{"run_id": "run", "test_id": "t1", "status": "passed"}],
                       finished_runs=[("run", "passed")])
    run = store.run("run")
    assert run is not None and run["status"] == "passed" and run["finished_at"] is not None


def test_final_results_joins_each_test_with_its_last_attempt(store: Store) -> None:
    store.insert_run({"run_id": "run"}, [rendered("t1"), rendered("t2")])
    store.ingest_batch([result("t1", 1, "failed", error="boom"), result("t1", 2, "passed", metrics={"p50": 1.0})])
    rows = {r["test_id"]: r for r in store.final_results("run")}
    assert (rows["t1"]["attempt"], rows["t1"]["metrics"], rows["t1"]["error"]) == (2, {"p50": 1.0}, None)
    assert rows["t2"]["attempt"] is None and rows["t2"]["metrics"] == {}


def test_status_counts_group_tests_by_hardware_and_status(store: Store) -> None:
    store.insert_run({"run_id": "run"}, [rendered("a"), rendered("b"), rendered("c", hardware="cuda")])
    store.update_tests([{"run_id": "run", "test_id": "a", "status": "passed"}])
    assert store.status_counts("run") == {"cpu": {"passed": 1, "pending": 1}, "cuda": {"pending": 1}}


def test_runs_are_listed_newest_first(store: Store) -> None:
    store.insert_run({"run_id": "old", "suite_name": "a", "submitted_at": 1.0}, [])
    store.insert_run({"run_id": "new", "suite_name": "b", "submitted_at": 2.0}, [])
    assert [r["run_id"] for r in store.runs()] == ["new", "old"]
    assert [r["run_id"] for r in store.runs(1)] == ["new"]


def test_a_returning_worker_keeps_its_first_seen_time(store: Store) -> None:
    store.upsert_worker({"worker_id": "w1", "hostname": "h", "queues": ["dtf.cpu"], "last_seen": 1.0,
                         "hardware": {"gpus": []}, "health": {"load": math.nan}})
    first = store.workers()[0]["first_seen"]
    store.upsert_worker({"worker_id": "w1", "hostname": "h2", "queues": ["dtf.cuda"], "last_seen": 2.0})
    (w,) = store.workers()
    assert (w["hostname"], w["queues"], w["last_seen"], w["first_seen"]) == ("h2", ["dtf.cuda"], 2.0, first)
    store.mark_workers(["w1"], "offline")
    assert store.workers()[0]["state"] == "offline"


# -- opening a file that is taken -----------------------------------------------------------------
# DuckDB 2.0 behaviour, checked here so a DuckDB upgrade that changes it is noticed:
# - in the same process, a read-only open of a file already open read-write fails
#   ("Can't open a connection to same database file with a different configuration");
#   a second read-write open in the same process succeeds and shares the database;
# - from another process, any open fails while one process holds it read-write
#   ("Could not set lock on file ... Conflicting lock is held").
# Store turns each failure into a StoreError with a one-line message.

def test_a_read_only_store_on_a_file_this_process_holds_read_write_raises_store_error(local_store: Store) -> None:
    store = local_store
    with pytest.raises(StoreError) as info:
        Store(store.path, read_only=True)
    assert "\n" not in str(info.value)
    assert store.path in str(info.value)
    assert "different configuration" in str(info.value)


def test_a_read_only_store_on_a_file_another_process_holds_raises_store_error(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from dtf.store import Store; s = Store(sys.argv[1]); print('ready', flush=True); sys.stdin.read()",
         str(tmp_path / "held.duckdb")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError) as info:
            Store(tmp_path / "held.duckdb", read_only=True)
        assert "\n" not in str(info.value)
        assert "lock" in str(info.value).lower()
    finally:
        holder.communicate("")
    assert holder.returncode == 0


def test_a_second_read_write_store_in_the_same_process_shares_the_file(store: Store, store_spec: StoreSpec) -> None:
    with store_spec.open() as second:
        second.ingest_batch([result()])
    assert count(store) == 1


def test_a_read_only_store_reads_but_refuses_writes(store_spec: StoreSpec) -> None:
    with store_spec.open() as s:
        s.ingest_batch([result()])
    with store_spec.open(read_only=True) as ro:
        assert len(ro.results("run")) == 1
        with pytest.raises(StoreError, match="read-only"):
            ro.ingest_batch([result("t2")])


def test_a_read_only_store_on_a_missing_file_raises_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        Store(tmp_path / "missing.duckdb", read_only=True)
