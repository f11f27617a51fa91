"""Names, tags and model strings that look like SQL are data: every query is parameterised,
so they are stored and read back verbatim, through the store and through a real run. SQL is
never built from values (a static check of every query in dtf/), and the connection used for
reports can read dtf's tables and nothing else: no files, no network, no extensions."""

from __future__ import annotations

import ast
import itertools
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtf.errors import StoreError
from dtf.model import RenderedTest, TestResult, TestSpec
from dtf.store import Store

from ..conftest import dtf_cmd, dtf_env
from .conftest import TEMPLATES

DTF = Path(__file__).resolve().parents[2] / "dtf"

SQLISH = [
    "'; DROP TABLE results; --", "x' OR '1'='1", "\"; DELETE FROM runs; --", "1); ATTACH '/tmp/x.db' AS x; --",
    "$$; COPY results TO '/tmp/out.csv'; $$", "\\'; SELECT 1; --", "?", "$1", "%s", "ö'\u2019; --", "NULL", "",
]  # fmt: skip
text = st.one_of(st.sampled_from(SQLISH), st.text(max_size=40))


@pytest.fixture(scope="module")
def shared_store() -> Iterator[Store]:
    with Store(":memory:") as store:  # one store for every example: opening one takes 50 ms
        yield store


@given(run_id=text, name=text, model=text, test_id=text, tag=text, error=text, metric=text)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_sql_looking_values_are_stored_and_read_back_verbatim(
    shared_store: Store, run_id: str, name: str, model: str, test_id: str, tag: str, error: str, metric: str
) -> None:
    store = shared_store
    unique = f"{next(COUNTER)}:"  # keys differ per example; the rest of each value is the fuzzed text
    run_id, worker_id = unique + run_id, unique + tag
    spec = TestSpec(test_id, model, tag, "cpu", 1, "fp32", tag, params={metric: error}, depends_on=(name,))
    store.insert_run({"run_id": run_id, "suite_name": name, "git_sha": tag, "info": {metric: error}},
                     [RenderedTest(spec, error, tag)])
    store.ingest_batch([TestResult(run_id, test_id, 1, "failed", metrics={metric: 1.5}, error=error,
                                   stderr_tail=name, worker_id=tag, hostname=model, hardware="cpu")])
    store.upsert_worker({"worker_id": worker_id, "hostname": name, "queues": [tag, error]})
    run = store.run(run_id)
    assert run is not None and (run["suite_name"], run["git_sha"]) == (name, tag)
    assert json.loads(run["info"]) == {metric: error}
    (row,) = store.tests(run_id, with_source=True)
    assert (row["test_id"], row["model"], row["family"], row["template"], row["source"]) == (
        test_id, model, tag, tag, error)
    assert list(row["depends_on"]) == [name] and json.loads(row["spec"])["params"] == {metric: error}
    (result,) = store.results(run_id)
    assert (result["error"], result["stderr_tail"], result["worker_id"], result["metrics"]) == (
        error, name, tag, {metric: 1.5})
    (worker,) = [w for w in store.workers() if w["worker_id"] == worker_id]
    assert (worker["hostname"], list(worker["queues"])) == (name, [tag, error])
    assert {r["table_name"] for r in store.query("SELECT table_name FROM information_schema.tables")} >= {
        "runs", "tests", "results", "workers", "meta"}


COUNTER = itertools.count()


HOSTILE_SUITE = """\
name: sql-names
models:
  - {name: "x'); DROP TABLE results; --", family: sec, template: sec/ok,
     params: {note: "'; DELETE FROM runs WHERE '1'='1"}}
  - {name: "m\\" OR 1=1; ATTACH '/tmp/evil.db' AS e; --", family: sec, template: sec/ok}
hardware: [cpu]
batch_sizes: [1]
"""


@pytest.mark.slow
def test_sql_in_model_names_and_params_survives_a_real_run_verbatim(tmp_path: Path) -> None:
    suite = tmp_path / "sql.yaml"
    suite.write_text(HOSTILE_SUITE)
    db = tmp_path / "sql.duckdb"
    proc = subprocess.run(dtf_cmd("run", str(suite), "--db", str(db), "--format", "json", "--templates", str(TEMPLATES)),
                          env=dtf_env(DTF_SPOOL_DIR=str(tmp_path / "spool")), cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout[proc.stdout.index("{"):])["run"]["run_id"]
    with Store.open_for_reports(db) as store:
        models = sorted(r["model"] for r in store.final_results(run_id))
        assert models == sorted(["x'); DROP TABLE results; --", "m\" OR 1=1; ATTACH '/tmp/evil.db' AS e; --"])
        assert {r["status"] for r in store.final_results(run_id)} == {"passed"}
        assert len(store.results(run_id)) == 2 and len(store.runs()) == 1
        specs = [json.loads(r["spec"]) for r in store.tests(run_id)]
        assert {"note": "'; DELETE FROM runs WHERE '1'='1"} in [s["params"] for s in specs]
        assert [r["database_name"] for r in store.query("SELECT database_name FROM duckdb_databases()")
                if not r["database_name"].startswith(("system", "temp"))] == ["sql"]
    assert not Path("/tmp/evil.db").exists()


# -- the reporting connection --------------------------------------------------------------------------

@pytest.fixture
def report_db(tmp_path: Path) -> Path:
    db = tmp_path / "r.duckdb"
    with Store(db) as store:
        store.insert_run({"run_id": "r1", "suite_name": "s"}, [])
    (tmp_path / "secret.csv").write_text("password\nhunter2\n")
    return db


REFUSED = [
    "SELECT * FROM read_csv('{tmp}/secret.csv')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM read_blob('/etc/passwd')",
    "SELECT * FROM '{tmp}/secret.csv'",
    "SELECT * FROM glob('/etc/*')",
    "COPY runs TO '{tmp}/exfiltrated.csv'",
    "EXPORT DATABASE '{tmp}/export'",
    "ATTACH '{tmp}/other.duckdb' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SELECT * FROM read_parquet('https://example.com/x.parquet')",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "RESET enable_external_access",
    "CREATE TABLE pwned (x INTEGER)",
    "DELETE FROM runs",
    "SELECT * FROM secret_arrow_table",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_the_report_connection_reads_nothing_but_dtfs_tables(report_db: Path, sql: str) -> None:
    secret_arrow_table = pa.table({"password": ["hunter2"]})  # noqa: F841 - a replacement scan would find it
    tmp = report_db.parent
    with Store.open_for_reports(report_db) as store:
        with pytest.raises(duckdb.Error):
            store.query(sql.format(tmp=tmp))
        assert store.query("SELECT run_id FROM runs") == [{"run_id": "r1"}]
        assert store.query("SELECT current_setting('enable_external_access') AS on_")[0]["on_"] is False
    assert not (tmp / "exfiltrated.csv").exists() and not (tmp / "export").exists()


def test_the_report_connection_needs_an_existing_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such file"):
        Store.open_for_reports(tmp_path / "missing.duckdb")
    assert not (tmp_path / "missing.duckdb").exists()


# -- no SQL built from values ----------------------------------------------------------------------------

SQL_METHODS = {"execute", "executemany", "query", "sql"}
# Interpolations allowed in SQL text: each chooses from a fixed set, never from input.
ALLOWED_INTERPOLATIONS = {
    ("base.py", "cols"),
    # dtf/store: a table name checked against schema.KEYS at run time (_checked), its key
    # columns and the columns to update (from KEYS and literal lists at every caller), and
    # the SELECT a keyed write stores (a literal at every caller; values go as parameters).
    *((module, name) for module in ("base.py", "lake.py") for name in (
        "table", "select", "keys", "sets", "match", "first", "', '.join(('s.' + k for k in keys))",
        "self._ddl(sql)",  # the migrations, literals in schema.py
        "self._ddl('CREATE TABLE IF NOT EXISTS migrations (name VARCHAR PRIMARY KEY, applied_at DOUBLE)')")),
    ("transfer.py", "table"),  # from transfer.TABLES
    # lake.py: the attach alias (a constant), the operator's own --db catalog and --data-path
    # (configuration, quoted by _quote), and extension files found in installed packages.
    ("lake.py", "ALIAS"), ("lake.py", "_quote(self._attach_string())"),
    ("lake.py", "f\" ({', '.join(options)})\" if options else ''"),
    ("lake.py", "_quote(what) if os.sep in what else what"),
}


class SqlText:
    """Decides whether the SQL text passed to a query is built from literals only, within
    the function that makes the call."""

    def __init__(self, module: str, function: ast.AST) -> None:
        self.module = module
        self.assigned: dict[str, list[ast.expr]] = {}
        for node in ast.walk(function):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.assigned.setdefault(target.id, []).append(node.value)
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and isinstance(node.target, ast.Name) and node.value:
                self.assigned.setdefault(node.target.id, []).append(node.value)

    def problems(self, node: ast.expr, seen: frozenset[str] = frozenset()) -> list[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return []
        if isinstance(node, ast.JoinedStr):
            names = [ast.unparse(v.value) for v in node.values if isinstance(v, ast.FormattedValue)]
            return [n for n in names if (self.module, n) not in ALLOWED_INTERPOLATIONS]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.problems(node.left, seen) + self.problems(node.right, seen)
        if isinstance(node, ast.Name) and node.id in self.assigned and node.id not in seen:
            return [p for value in self.assigned[node.id] for p in self.problems(value, seen | {node.id})]
        text = ast.unparse(node)
        return [] if (self.module, text) in ALLOWED_INTERPOLATIONS else [text]


def is_database(receiver: ast.expr, path: Path) -> bool:
    """con.execute, self._con.execute, store.query, duckdb.sql...; not runner.execute."""
    name = ast.unparse(receiver).rsplit(".", 1)[-1]
    return name in {"con", "_con", "conn", "cur", "cursor", "reader", "store", "duckdb"} or (name == "self" and path.parent.name == "store")


def test_no_query_in_dtf_is_built_from_anything_but_literals_and_allow_listed_identifiers() -> None:
    found = []
    for path in sorted(DTF.rglob("*.py")):
        for function in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            text = SqlText(path.name, function)
            for node in ast.walk(function):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in SQL_METHODS and node.args and is_database(node.func.value, path)):
                    found += [(path.name, function.name, p) for p in text.problems(node.args[0])]
    # Queries whose SQL is a parameter of a helper (Store.query's own `sql`) are checked at their callers.
    assert [f for f in found if f[2] != "sql"] == []
