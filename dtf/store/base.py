"""The results database: DuckDB schema and named migrations, Arrow-backed batch writes,
fencing, and the queries behind status, results and reports.

One process owns the file read-write (the leader coordinator, or the embedded run), and
it keeps one connection open: connect-per-batch is about 7x slower. Every write goes
through a registered Arrow table, never one INSERT per row, and every result is keyed
(run_id, test_id, attempt) so a redelivered result is a no-op.
"""

from __future__ import annotations

import json
import math
import operator
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import duckdb
import pyarrow as pa

from .errors import FencingError, StoreError
from .model import RenderedTest, TestResult

__all__ = ["Store", "MIGRATIONS", "TestUpdate", "REPORT_CONFIG"]

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_initial",
        """
        CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
        CREATE TABLE IF NOT EXISTS runs (
            run_id VARCHAR PRIMARY KEY, suite_name VARCHAR, suite_hash VARCHAR,
            submitted_at DOUBLE, git_sha VARCHAR, branch VARCHAR, ci_url VARCHAR,
            status VARCHAR, finished_at DOUBLE, total INTEGER, info JSON);
        CREATE TABLE IF NOT EXISTS tests (
            run_id VARCHAR, test_id VARCHAR, model VARCHAR, family VARCHAR, hardware VARCHAR,
            batch_size INTEGER, precision VARCHAR, template VARCHAR, template_hash VARCHAR,
            priority INTEGER, memory_gb DOUBLE, depends_on VARCHAR[], timeout_s DOUBLE,
            retries INTEGER, status VARCHAR, attempts INTEGER, reason VARCHAR,
            queued_at DOUBLE, finished_at DOUBLE, spec JSON, source VARCHAR,
            PRIMARY KEY (run_id, test_id));
        CREATE TABLE IF NOT EXISTS results (
            run_id VARCHAR, test_id VARCHAR, attempt INTEGER, worker_id VARCHAR,
            hostname VARCHAR, hardware VARCHAR, status VARCHAR, duration_s DOUBLE,
            peak_memory_mb DOUBLE, metrics JSON, error VARCHAR, stderr_tail VARCHAR,
            started_at DOUBLE, finished_at DOUBLE, ingested_at DOUBLE, token BIGINT,
            PRIMARY KEY (run_id, test_id, attempt));
        CREATE TABLE IF NOT EXISTS workers (
            worker_id VARCHAR PRIMARY KEY, hostname VARCHAR, platform VARCHAR,
            hardware JSON, queues VARCHAR[], state VARCHAR, health JSON,
            first_seen DOUBLE, last_seen DOUBLE);
        """,
    ),
    (
        "0002_worker_health",
        # A bounded history of heartbeats per worker (record_worker_health prunes it).
        """
        CREATE TABLE IF NOT EXISTS worker_health (
            worker_id VARCHAR, seen_at DOUBLE, state VARCHAR, health JSON,
            PRIMARY KEY (worker_id, seen_at));
        """,
    ),
    (
        "0003_staged_submits",
        # A large submit arrives in chunks; each is stored as it comes (its tests go straight
        # into `tests`, the run row only when the last chunk is in), so the coordinator never
        # holds a whole run in memory, and a chunk is acked once it is on disk.
        """
        CREATE TABLE IF NOT EXISTS staged_chunks (
            submit_id VARCHAR, chunk INTEGER, chunks INTEGER, run_id VARCHAR, received_at DOUBLE,
            run JSON, reply JSON, error VARCHAR,
            PRIMARY KEY (submit_id, chunk));
        """,
    ),
)

_RESULT_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()), ("test_id", pa.string()), ("attempt", pa.int32()),
        ("worker_id", pa.string()), ("hostname", pa.string()), ("hardware", pa.string()),
        ("status", pa.string()), ("duration_s", pa.float64()), ("peak_memory_mb", pa.float64()),
        ("metrics", pa.string()), ("error", pa.string()), ("stderr_tail", pa.string()),
        ("started_at", pa.float64()), ("finished_at", pa.float64()),
        ("ingested_at", pa.float64()), ("token", pa.int64()),
    ]
)

_TEST_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()), ("test_id", pa.string()), ("model", pa.string()),
        ("family", pa.string()), ("hardware", pa.string()), ("batch_size", pa.int32()),
        ("precision", pa.string()), ("template", pa.string()), ("template_hash", pa.string()),
        ("priority", pa.int32()), ("memory_gb", pa.float64()), ("depends_on", pa.list_(pa.string())),
        ("timeout_s", pa.float64()), ("retries", pa.int32()), ("status", pa.string()),
        ("attempts", pa.int32()), ("reason", pa.string()), ("queued_at", pa.float64()),
        ("finished_at", pa.float64()), ("spec", pa.string()), ("source", pa.string()),
    ]
)

_UPDATE_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()), ("test_id", pa.string()), ("status", pa.string()),
        ("attempts", pa.int32()), ("reason", pa.string()), ("queued_at", pa.float64()),
        ("finished_at", pa.float64()),
    ]
)

TestUpdate = Mapping[str, Any]  # keys of _UPDATE_SCHEMA


class _DuplicateKey(Exception):
    """A plain INSERT of a batch met a key constraint: redo the batch skipping duplicates."""


#: DuckDB settings of a reporting connection (Store.open_for_reports). lock_configuration
#: keeps a query from turning the others back on with SET.
REPORT_CONFIG: Mapping[str, bool] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "lock_configuration": True,
}


def _utf8(value: Any) -> Any:
    """A str that UTF-8 can encode. Lone surrogates (say, from surrogateescape-decoded file
    names in an error message) make Arrow and DuckDB's JSON reject the whole batch, so they
    are stored as their backslash escapes instead."""
    if not isinstance(value, str):
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _json_safe(value: Any) -> Any:
    """NaN and infinities are not JSON; store them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return _utf8(value)
    if isinstance(value, dict):
        return {_utf8(str(k)): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows given as mappings (test rows, status updates) as an Arrow table, column by column."""
    return pa.Table.from_arrays(
        [_arrow_column([row.get(f.name) for row in rows], f.type) for f in schema], schema=schema
    )


class Store:
    """A DuckDB file opened read-write by this process, with one persistent connection."""

    def __init__(self, path: str | Path, *, read_only: bool = False, config: Mapping[str, Any] | None = None) -> None:
        self.path = str(path)
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._con = duckdb.connect(self.path, read_only=read_only, config=dict(config or {}))
            self.closed = False
        except (duckdb.Error, OSError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StoreError(f"cannot open results database {self.path}: {first}") from None
        self._lock = threading.RLock()
        self._stale_views: list[str] = []
        if not read_only:
            self.migrate()

    @classmethod
    def open_for_reports(cls, path: str | Path) -> Store:
        """The file opened read-only for reports and ad-hoc SQL, with no file, network or
        extension access and its settings locked: a query reads dtf's tables and nothing else."""
        if not Path(path).is_file():
            raise StoreError(f"cannot open results database {path}: no such file")
        return cls(path, read_only=True, config=REPORT_CONFIG)

    # -- plumbing -------------------------------------------------------------------
    def close(self) -> None:
        """Close the file; closing again is a no-op."""
        with self._lock:
            if not self.closed:
                self.closed = True
                self._con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """BEGIN ... COMMIT; on any error ROLLBACK, and a DuckDB error becomes a StoreError."""
        with self._lock:
            self._con.execute("BEGIN TRANSACTION")
            try:
                yield self._con
                self._con.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, duckdb.Error):
                    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise StoreError(f"cannot write results database {self.path}: {first}") from exc
                raise

    def _rollback(self) -> None:
        try:
            self._con.execute("ROLLBACK")
        except duckdb.Error:
            pass  # a failed COMMIT has already ended the transaction
        while self._stale_views:
            try:
                self._con.unregister(self._stale_views.pop())
            except duckdb.Error:
                pass

    @contextmanager
    def _arrow_view(self, con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> Iterator[None]:
        """``table`` visible to SQL as ``name`` for the duration of the block."""
        con.register(name, table)
        try:
            yield
        finally:
            try:
                con.unregister(name)
            except duckdb.Error:
                # An aborted transaction refuses even this; unregistering here would hide the
                # error that aborted it. _rollback unregisters after the ROLLBACK instead.
                self._stale_views.append(name)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run a parameterised read query and return rows as dicts."""
        with self._lock:
            cur = self._con.execute(sql, list(params))
            names = [d[0] for d in cur.description or ()]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def migrate(self) -> list[str]:
        """Apply the named migrations not yet recorded; return the ones applied."""
        applied: list[str] = []
        with self._transaction() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS migrations (name VARCHAR PRIMARY KEY, applied_at DOUBLE)"
            )
            done = {row[0] for row in con.execute("SELECT name FROM migrations").fetchall()}
            for name, sql in MIGRATIONS:
                if name in done:
                    continue
                con.execute(sql)
                con.execute("INSERT INTO migrations VALUES (?, ?)", [name, time.time()])
                applied.append(name)
        return applied

    # -- fencing ----------------------------------------------------------------------
    def max_token(self) -> int:
        rows = self.query("SELECT value FROM meta WHERE key = 'max_token'")
        return int(rows[0]["value"]) if rows else 0

    def _fence(self, con: duckdb.DuckDBPyConnection, token: int) -> None:
        rows = con.execute("SELECT value FROM meta WHERE key = 'max_token'").fetchall()
        current = int(rows[0][0]) if rows else 0
        if token < current:
            raise FencingError(f"write with fencing token {token} refused: database has seen {current}")
        if token > current:
            con.execute(
                "INSERT OR REPLACE INTO meta VALUES ('max_token', ?)", [str(token)]
            )

    # -- writes -----------------------------------------------------------------------
    def insert_run(
        self,
        run: Mapping[str, Any],
        tests: Sequence[RenderedTest],
        *,
        token: int = 0,
    ) -> None:
        """Record a run and its tests (status pending) in one transaction; idempotent."""
        now = time.time()
        with self._transaction() as con:
            self._fence(con, token)
            self._insert_run_row(con, run, len(tests), now)
            self._insert_tests(con, str(run["run_id"]), tests, now)

    @staticmethod
    def _insert_run_row(con: duckdb.DuckDBPyConnection, run: Mapping[str, Any], total: int, now: float) -> None:
        con.execute(
            "INSERT INTO runs (run_id, suite_name, suite_hash, submitted_at, git_sha, branch,"
            " ci_url, status, finished_at, total, info) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)"
            " ON CONFLICT DO NOTHING",
            [
                run["run_id"], run.get("suite_name"), run.get("suite_hash"),
                run.get("submitted_at", now), run.get("git_sha"), run.get("branch"),
                run.get("ci_url"), "running", total, json.dumps(run.get("info") or {}),
            ],
        )

    def _insert_tests(self, con: duckdb.DuckDBPyConnection, run_id: str, tests: Sequence[RenderedTest], now: float) -> None:
        table = _table([_test_row(run_id, t, now) for t in tests], _TEST_SCHEMA)
        with self._arrow_view(con, "new_tests", table):
            con.execute("INSERT INTO tests SELECT * FROM new_tests ON CONFLICT DO NOTHING")

    def stage_submit_chunk(
        self,
        submit_id: str,
        run_id: str,
        chunk: int,
        chunks: int,
        tests: Sequence[RenderedTest],
        *,
        run: Mapping[str, Any] | None = None,
        reply: Mapping[str, Any] | None = None,
        error: str | None = None,
        token: int = 0,
    ) -> int:
        """Store one chunk of a submit (idempotent: a redelivered chunk changes nothing) and
        return how many distinct chunks of it are stored. Its tests go into ``tests`` under
        ``run_id``, unseen by run queries until ``finish_submit`` adds the run row; a chunk
        with an error stores no tests, and fails the submit when it finishes."""
        now = time.time()
        with self._transaction() as con:
            self._fence(con, token)
            con.execute(
                "INSERT INTO staged_chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [submit_id, chunk, chunks, run_id, now, json.dumps(dict(run)) if run is not None else None,
                 json.dumps(dict(reply)) if reply is not None else None, error],
            )
            if tests and error is None:
                self._insert_tests(con, run_id, tests, now)
            row = con.execute("SELECT count(*) FROM staged_chunks WHERE submit_id = ?", [submit_id]).fetchone()
        return int(row[0]) if row else 0

    def finish_submit(self, submit_id: str, *, token: int = 0) -> dict[str, Any]:
        """Complete a fully staged submit in one transaction: add the run row (status
        running, total = its tests) unless a chunk failed, in which case its tests are
        removed; forget the staged chunks either way. Returns {"run_id", "run", "reply",
        "error", "total"} (run and reply as the chunks carried them)."""
        with self._transaction() as con:
            self._fence(con, token)
            rows = con.execute(
                "SELECT run_id, run, reply, error FROM staged_chunks WHERE submit_id = ? ORDER BY chunk", [submit_id]
            ).fetchall()
            if not rows:
                raise StoreError(f"submit {submit_id} has no staged chunks")
            run_id = str(rows[0][0])
            run = next((json.loads(r[1]) for r in rows if r[1]), None)
            reply = next((json.loads(r[2]) for r in rows if r[2]), None)
            error = next((str(r[3]) for r in rows if r[3]), None)
            if error is None and run is None:
                error = "submit without its run description (chunk 0)"
            exists = con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).fetchone()[0]
            total = con.execute("SELECT count(*) FROM tests WHERE run_id = ?", [run_id]).fetchone()[0]
            if error is not None and not exists:
                con.execute("DELETE FROM tests WHERE run_id = ?", [run_id])
            elif error is None and run is not None:
                self._insert_run_row(con, dict(run, run_id=run_id), int(total), time.time())
            con.execute("DELETE FROM staged_chunks WHERE submit_id = ?", [submit_id])
        return {"run_id": run_id, "run": run, "reply": reply, "error": error, "total": int(total)}

    def drop_stale_submits(self, older_than: float, *, token: int = 0) -> int:
        """Forget submits whose chunks stopped coming before ``older_than`` (a client that
        died mid-submit): their staged chunks, and their tests if the run never started."""
        stale = self.query("SELECT DISTINCT submit_id, run_id FROM staged_chunks WHERE received_at < ?", [older_than])
        if not stale:
            return 0
        with self._transaction() as con:
            self._fence(con, token)
            for row in stale:
                con.execute("DELETE FROM tests WHERE run_id = ? AND run_id NOT IN (SELECT run_id FROM runs)",
                            [row["run_id"]])
                con.execute("DELETE FROM staged_chunks WHERE submit_id = ?", [row["submit_id"]])
        return len(stale)

    def iter_specs(self, run_id: str, *, batch: int = 5000) -> Iterator[dict[str, Any]]:
        """The spec of every test of a run, decoded, in test id order: fetched a batch at a
        time, so a 100k-test run never has all its JSON text and dicts in memory at once."""
        with self._lock:
            cursor = self._con.cursor()
        try:
            cursor.execute("SELECT spec FROM tests WHERE run_id = ? ORDER BY test_id", [run_id])
            while rows := cursor.fetchmany(batch):
                for (spec,) in rows:
                    yield json.loads(spec)
        finally:
            cursor.close()

    def test_sources(self, run_id: str, test_ids: Sequence[str]) -> dict[str, tuple[Any, str, str]]:
        """test_id -> (spec JSON, source, template hash) for these tests of a run.

        The ids are joined as an Arrow table: a ``list_contains(?, test_id)`` filter
        compares every row of the run with every id, which grows with the run's size
        times the window."""
        if not test_ids:
            return {}
        keys = pa.table({"test_id": [_utf8(t) for t in test_ids]})
        with self._lock:
            self._con.register("source_keys", keys)
            try:
                rows = self._con.execute(
                    "SELECT t.test_id, t.spec, t.source, t.template_hash FROM tests t"
                    " JOIN source_keys k USING (test_id) WHERE t.run_id = ?",
                    [run_id],
                ).fetchall()
            finally:
                self._con.unregister("source_keys")
        return {test_id: (spec, source, template_hash) for test_id, spec, source, template_hash in rows}

    def ingest_batch(
        self,
        results: Sequence[TestResult],
        updates: Sequence[TestUpdate] = (),
        *,
        finished_runs: Sequence[tuple[str, str]] = (),
        token: int = 0,
    ) -> int:
        """One transaction: insert results (duplicates ignored), apply test status updates,
        close finished runs. Returns the number of result rows stored by this call. The
        coordinator's write path, also named ``commit_batch``.

        The batch is written optimistically as a plain INSERT, and only when the key
        constraint refuses it (a redelivered result, or a key repeated inside the batch) is
        the whole transaction redone with ``ON CONFLICT DO NOTHING``. DuckDB's ON CONFLICT
        probes the key index and deduplicates the input before appending, which costs about
        as much again as the insert itself; new results are the normal case (the
        coordinator's run graph drops results it did not expect; only a task run twice
        brings a stored key again), so the common batch pays for one index pass, and a
        duplicate one for two. Either way the stored count is exact."""
        now = time.time()
        table = _result_table(results, now, token)
        try:
            return self._write_batch(table, updates, finished_runs, now, token, skip_duplicates=False)
        except _DuplicateKey:
            return self._write_batch(table, updates, finished_runs, now, token, skip_duplicates=True)

    commit_batch = ingest_batch  # the name dtf calls it by; both names are public

    def _write_batch(
        self,
        table: pa.Table,
        updates: Sequence[TestUpdate],
        finished_runs: Sequence[tuple[str, str]],
        now: float,
        token: int,
        *,
        skip_duplicates: bool,
    ) -> int:
        """One transaction: fence, insert the results, apply updates, close finished runs.
        Returns the result rows stored; raises _DuplicateKey (after rolling back) when
        ``skip_duplicates`` is off and a key is already stored or repeated in the batch."""
        with self._transaction() as con:
            self._fence(con, token)
            stored = self._insert_results(con, table, skip_duplicates) if table.num_rows else 0
            if updates:
                self._apply_updates(con, updates)
            for run_id, status in finished_runs:
                con.execute(
                    "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?",
                    [status, now, run_id],
                )
        return stored

    def _insert_results(self, con: duckdb.DuckDBPyConnection, table: pa.Table, skip_duplicates: bool) -> int:
        """Append the batch; return the rows stored. The plain insert reads the Arrow table
        as a relation, which unlike ``register`` creates no view in the catalog (a write
        per batch, and about a fifth of a 1,000-row insert's time)."""
        if skip_duplicates:
            with self._arrow_view(con, "batch_results", table):
                row = con.execute(
                    "INSERT INTO results SELECT * FROM batch_results ON CONFLICT DO NOTHING"
                ).fetchone()
            return int(row[0]) if row else 0
        try:
            con.from_arrow(table).insert_into("results")
        except duckdb.ConstraintException as exc:
            raise _DuplicateKey() from exc
        return table.num_rows

    def update_tests(self, updates: Sequence[TestUpdate], *, token: int = 0) -> None:
        if not updates:
            return
        with self._transaction() as con:
            self._fence(con, token)
            self._apply_updates(con, updates)

    def _apply_updates(self, con: duckdb.DuckDBPyConnection, updates: Sequence[TestUpdate]) -> None:
        # The last update for a test wins; UPDATE ... FROM needs one source row per target.
        latest: dict[tuple[str, str], TestUpdate] = {}
        for u in updates:
            latest[(u["run_id"], u["test_id"])] = u
        with self._arrow_view(con, "test_updates", _table(list(latest.values()), _UPDATE_SCHEMA)):
            con.execute(
                "UPDATE tests SET status = u.status, attempts = coalesce(u.attempts, tests.attempts),"
                " reason = coalesce(u.reason, tests.reason),"
                " queued_at = coalesce(u.queued_at, tests.queued_at),"
                " finished_at = coalesce(u.finished_at, tests.finished_at)"
                " FROM test_updates u WHERE tests.run_id = u.run_id AND tests.test_id = u.test_id"
            )

    def upsert_worker(self, info: Mapping[str, Any], *, token: int = 0) -> None:
        now = time.time()
        with self._transaction() as con:
            self._fence(con, token)
            con.execute(
                "INSERT INTO workers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (worker_id) DO UPDATE"
                " SET hostname = excluded.hostname, platform = excluded.platform,"
                " hardware = excluded.hardware, queues = excluded.queues, state = excluded.state,"
                " health = excluded.health, last_seen = excluded.last_seen",
                [
                    info["worker_id"], info.get("hostname"), info.get("platform"),
                    json.dumps(_json_safe(info.get("hardware") or {})), list(info.get("queues") or []),
                    info.get("state", "online"), json.dumps(_json_safe(info.get("health") or {})),
                    now, info.get("last_seen", now),
                ],
            )

    def mark_workers(self, worker_ids: Sequence[str], state: str) -> None:
        if not worker_ids:
            return
        with self._transaction() as con:
            con.execute(
                "UPDATE workers SET state = ? WHERE list_contains(?, worker_id)",
                [state, list(worker_ids)],
            )

    # -- reads ------------------------------------------------------------------------
    def run(self, run_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM runs WHERE run_id = ?", [run_id])
        return rows[0] if rows else None

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM runs ORDER BY submitted_at DESC LIMIT ?", [limit])

    def tests(self, run_id: str, *, with_source: bool = False) -> list[dict[str, Any]]:
        cols = "*" if with_source else "* EXCLUDE (source)"
        return self.query(f"SELECT {cols} FROM tests WHERE run_id = ? ORDER BY test_id", [run_id])

    def results(self, run_id: str) -> list[dict[str, Any]]:
        """Every attempt's result for a run."""
        rows = self.query(
            "SELECT * FROM results WHERE run_id = ? ORDER BY test_id, attempt", [run_id]
        )
        for row in rows:
            row["metrics"] = json.loads(row["metrics"]) if row["metrics"] else {}
        return rows

    def final_results(self, run_id: str) -> list[dict[str, Any]]:
        """One row per test: the test's final state joined with its last attempt's result.
        ``model_source`` is the source the suite named for a real model (hf, timm, onnx),
        None for a synthetic workload."""
        rows = self.query(
            """
            SELECT t.run_id, t.test_id, t.model, t.family, t.hardware, t.batch_size, t.precision,
                   t.template, t.template_hash, t.priority, t.memory_gb, t.depends_on,
                   t.status, t.attempts, t.reason, t.queued_at, t.finished_at AS test_finished_at,
                   json_extract_string(t.spec, '$.params.model_source.source') AS model_source,
                   r.attempt, r.worker_id, r.hostname, r.duration_s, r.peak_memory_mb, r.metrics,
                   r.error, r.stderr_tail, r.started_at, r.finished_at
            FROM tests t
            LEFT JOIN (
                SELECT * FROM results QUALIFY row_number() OVER
                    (PARTITION BY run_id, test_id ORDER BY attempt DESC) = 1
            ) r USING (run_id, test_id)
            WHERE t.run_id = ?
            ORDER BY t.model, t.hardware, t.precision, t.batch_size
            """,
            [run_id],
        )
        for row in rows:
            row["metrics"] = json.loads(row["metrics"]) if row["metrics"] else {}
        return rows

    def status_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        """{hardware: {status: count}} for a run."""
        counts: dict[str, dict[str, int]] = {}
        for row in self.query(
            "SELECT hardware, status, count(*) AS n FROM tests WHERE run_id = ? GROUP BY ALL",
            [run_id],
        ):
            counts.setdefault(row["hardware"], {})[row["status"]] = int(row["n"])
        return counts

    def latest_run_id(self, suite_name: str | None = None) -> str | None:
        if suite_name:
            rows = self.query(
                "SELECT run_id FROM runs WHERE suite_name = ? ORDER BY submitted_at DESC LIMIT 1",
                [suite_name],
            )
        else:
            rows = self.query("SELECT run_id FROM runs ORDER BY submitted_at DESC LIMIT 1")
        return rows[0]["run_id"] if rows else None

    # -- baselines and report data (read-only) ---------------------------------------------
    def earlier_runs(self, run_id: str, *, limit: int = 1, hardware: str | None = None) -> list[dict[str, Any]]:
        """Finished runs of the same suite submitted before ``run_id``, newest first; with
        ``hardware``, runs whose tests on that hardware are all finished (the run itself may
        still wait for other hardware that never got a worker) and at least one passed."""
        sql = (
            "SELECT r.* FROM runs r JOIN runs cur ON cur.run_id = ?"
            " WHERE r.suite_name = cur.suite_name AND r.submitted_at < cur.submitted_at"
        )
        params: list[Any] = [run_id]
        if hardware is None:
            sql += " AND r.status <> 'running'"
        else:
            sql += (" AND EXISTS (SELECT 1 FROM tests t WHERE t.run_id = r.run_id"
                    " AND t.hardware = ? AND t.status = 'passed')"
                    " AND NOT EXISTS (SELECT 1 FROM tests t WHERE t.run_id = r.run_id"
                    " AND t.hardware = ? AND t.status IN ('pending', 'queued', 'running'))")
            params += [hardware, hardware]
        return self.query(sql + " ORDER BY r.submitted_at DESC LIMIT ?", [*params, limit])

    def fast_latencies(self, run_ids: Sequence[str], hardware: str, quantile: float) -> list[dict[str, Any]]:
        """Per passed test of these runs on one hardware kind, the ``quantile`` of its
        per-iteration latencies (computed here, so history never ships whole samples)."""
        if not run_ids:
            return []
        return self.query(
            """
            SELECT t.run_id, t.model, t.hardware, t.batch_size, t.precision,
                   list_aggregate(CAST(json_extract(r.metrics, '$.latencies_ms') AS DOUBLE[]),
                                  'quantile_cont', ?) AS fast_ms
            FROM tests t JOIN (
                SELECT * FROM results QUALIFY row_number() OVER
                    (PARTITION BY run_id, test_id ORDER BY attempt DESC) = 1
            ) r USING (run_id, test_id)
            WHERE list_contains(?, t.run_id) AND t.hardware = ? AND t.status = 'passed'
            """,
            [quantile, list(run_ids), hardware],
        )

    def report_data(
        self, run_id: str, *, baseline: str | None = None, history: int = 5, fast_quantile: float = 0.1
    ) -> dict[str, Any]:
        """What a report needs: the run, its tests, and with ``baseline`` (a run id, or
        "latest" for the latest earlier run of the same suite per hardware kind) the
        baseline's tests plus the fast-tail latencies of up to ``history`` runs ending at
        the baseline, which measure how much an unchanged test moves between runs."""
        run = self.run(run_id)
        if run is None:
            raise StoreError(f"unknown run {run_id!r}")
        tests = self.final_results(run_id)
        if not baseline:
            return {"run": run, "tests": tests, "baseline": None}
        chosen = self._baseline_runs(run_id, baseline, sorted({t["hardware"] for t in tests}))
        runs: list[dict[str, Any]] = []
        base_tests: list[dict[str, Any]] = []
        fast: list[dict[str, Any]] = []
        for base_id in dict.fromkeys(chosen.values()):
            kinds = [hw for hw, rid in chosen.items() if rid == base_id]
            row = self.run(base_id) or {}
            runs.append({**row, "hardware": kinds})
            base_tests += [t for t in self.final_results(base_id) if t["hardware"] in kinds]
            for hw in kinds:
                older = [r["run_id"] for r in self.earlier_runs(base_id, limit=max(0, history - 1), hardware=hw)]
                fast += self.fast_latencies([base_id, *older], hw, fast_quantile)
        return {"run": run, "tests": tests,
                "baseline": {"requested": baseline, "runs": runs, "tests": base_tests, "history": fast}}

    def _baseline_runs(self, run_id: str, baseline: str, kinds: Sequence[str]) -> dict[str, str]:
        """{hardware: baseline run id}; kinds with no earlier passed run are left out."""
        if baseline != "latest":
            if baseline == run_id:
                raise StoreError(f"run {run_id!r} cannot be its own baseline")
            if self.run(baseline) is None:
                raise StoreError(f"unknown baseline run {baseline!r}")
            return {hw: baseline for hw in kinds}
        chosen: dict[str, str] = {}
        for hw in kinds:
            found = self.earlier_runs(run_id, limit=1, hardware=hw)
            if found:
                chosen[hw] = found[0]["run_id"]
        return chosen

    def workers(self) -> list[dict[str, Any]]:
        rows = self.query("SELECT * FROM workers ORDER BY worker_id")
        for row in rows:
            row["hardware"] = json.loads(row["hardware"]) if row["hardware"] else {}
            row["health"] = json.loads(row["health"]) if row["health"] else {}
        return rows

    # -- worker health and the dashboard's views ---------------------------------------
    def record_worker_health(
        self, worker_id: str, seen_at: float, state: str, health: Mapping[str, Any], *, keep: int = 360, token: int = 0
    ) -> None:
        """Append one heartbeat's health to the worker's history, keeping its newest ``keep``."""
        with self._transaction() as con:
            self._fence(con, token)
            con.execute(
                "INSERT INTO worker_health VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [worker_id, seen_at, state, json.dumps(_json_safe(dict(health)))],
            )
            con.execute(
                "DELETE FROM worker_health WHERE worker_id = ? AND seen_at < (SELECT min(seen_at) FROM"
                " (SELECT seen_at FROM worker_health WHERE worker_id = ? ORDER BY seen_at DESC LIMIT ?))",
                [worker_id, worker_id, keep],
            )

    def worker_health(self, worker_id: str, limit: int = 360) -> list[dict[str, Any]]:
        """The newest ``limit`` health records of a worker, oldest first."""
        rows = self.query(
            "SELECT * FROM (SELECT * FROM worker_health WHERE worker_id = ? ORDER BY seen_at DESC LIMIT ?)"
            " ORDER BY seen_at",
            [worker_id, limit],
        )
        for row in rows:
            row["health"] = json.loads(row["health"]) if row["health"] else {}
        return rows

    def mark_silent_workers(self, now: float, offline_after_s: float, *, token: int = 0) -> list[str]:
        """Mark offline every worker silent for longer than ``offline_after_s`` (or three of
        its own heartbeat intervals, if longer); returns their ids."""
        with self._transaction() as con:
            self._fence(con, token)
            rows = con.execute(
                "UPDATE workers SET state = 'offline' WHERE coalesce(state, '') <> 'offline' AND last_seen < ?"
                " - greatest(?, 3 * coalesce(TRY_CAST(health->>'$.heartbeat_interval_s' AS DOUBLE), 0))"
                " RETURNING worker_id",
                [now, offline_after_s],
            ).fetchall()
        return sorted(str(r[0]) for r in rows)

    def run_progress(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest runs, each with {status: count} of its tests."""
        runs = self.runs(limit)
        counts: dict[str, dict[str, int]] = {r["run_id"]: {} for r in runs}
        if runs:
            for row in self.query(
                "SELECT run_id, status, count(*) AS n FROM tests WHERE list_contains(?, run_id) GROUP BY ALL",
                [list(counts)],
            ):
                counts[row["run_id"]][row["status"]] = int(row["n"])
        for run in runs:
            run["info"] = json.loads(run["info"]) if isinstance(run.get("info"), str) else run.get("info")
            run["counts"] = counts[run["run_id"]]
        return runs

    def run_matrix(self, run_id: str, *, failures_per_cell: int = 20) -> list[dict[str, Any]]:
        """One cell per (model, hardware) of a run: {status: count}, its failing tests and the
        model sources its tests ran ("synthetic" for the built-in workloads)."""
        cells: dict[tuple[str, str], dict[str, Any]] = {}
        for row in self.query(
            "SELECT t.model, t.hardware, t.test_id, t.status, coalesce(t.reason, r.error) AS reason,"
            " coalesce(r.metrics->>'$.source', json_extract_string(t.spec, '$.params.model_source.source'),"
            " 'synthetic') AS model_source"
            " FROM tests t LEFT JOIN (SELECT run_id, test_id, error, metrics FROM results QUALIFY row_number() OVER"
            " (PARTITION BY run_id, test_id ORDER BY attempt DESC) = 1) r USING (run_id, test_id)"
            " WHERE t.run_id = ? ORDER BY t.model, t.hardware, t.test_id",
            [run_id],
        ):
            cell = cells.setdefault((row["model"], row["hardware"]), {
                "model": row["model"], "hardware": row["hardware"], "counts": {}, "failures": [], "sources": []})
            cell["counts"][row["status"]] = cell["counts"].get(row["status"], 0) + 1
            if row["model_source"] not in cell["sources"]:
                cell["sources"].append(row["model_source"])
            if row["status"] in ("failed", "error", "timeout") and len(cell["failures"]) < failures_per_cell:
                reason = (row["reason"] or "").strip().splitlines()
                cell["failures"].append({"test_id": row["test_id"], "status": row["status"],
                                         "reason": reason[0][:200] if reason else ""})
        return list(cells.values())

    def metric_trends(self, runs: int = 30, *, suite_name: str | None = None) -> list[dict[str, Any]]:
        """Latency p50 and throughput of passed tests over the newest ``runs`` runs, one
        series per (model, hardware, batch size, precision), points oldest first, with the
        model sources its points ran ("synthetic" for the built-in workloads)."""
        rows = self.query(
            """
            WITH recent AS (SELECT run_id, submitted_at FROM runs
                            WHERE ? IS NULL OR suite_name = ? ORDER BY submitted_at DESC LIMIT ?),
                 last AS (SELECT run_id, test_id, metrics FROM results QUALIFY row_number() OVER
                          (PARTITION BY run_id, test_id ORDER BY attempt DESC) = 1)
            SELECT t.model, t.hardware, t.batch_size, t.precision, t.run_id, recent.submitted_at,
                   coalesce(last.metrics->>'$.source', 'synthetic') AS model_source,
                   TRY_CAST(last.metrics->>'$.latency_p50_ms' AS DOUBLE) AS latency_p50_ms,
                   TRY_CAST(last.metrics->>'$.throughput_items_s' AS DOUBLE) AS throughput_items_s
            FROM tests t JOIN recent USING (run_id) JOIN last USING (run_id, test_id)
            WHERE t.status = 'passed'
            ORDER BY t.model, t.hardware, t.batch_size, t.precision, recent.submitted_at
            """,
            [suite_name, suite_name, runs],
        )
        series: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in rows:
            key = (row["model"], row["hardware"], row["batch_size"], row["precision"])
            entry = series.setdefault(key, {"model": key[0], "hardware": key[1], "batch_size": key[2],
                                            "precision": key[3], "points": [], "sources": []})
            if row["model_source"] not in entry["sources"]:
                entry["sources"].append(row["model_source"])
            entry["points"].append({"run_id": row["run_id"], "at": row["submitted_at"],
                                    "latency_p50_ms": _finite(row["latency_p50_ms"]),
                                    "throughput_items_s": _finite(row["throughput_items_s"])})
        return list(series.values())


def _test_row(run_id: str, test: RenderedTest, now: float) -> dict[str, Any]:
    s = test.spec
    return {
        "run_id": run_id, "test_id": s.test_id, "model": s.model, "family": s.family,
        "hardware": s.hardware, "batch_size": s.batch_size, "precision": s.precision,
        "template": s.template, "template_hash": test.template_hash, "priority": s.priority,
        "memory_gb": s.memory_gb, "depends_on": list(s.depends_on), "timeout_s": s.timeout_s,
        "retries": s.retries, "status": "pending", "attempts": 0, "reason": None,
        "queued_at": None, "finished_at": None, "spec": json.dumps(_json_safe(s.to_dict())),
        "source": test.source,
    }



def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _string_array(values: Sequence[Any], type_: pa.DataType = pa.string()) -> pa.Array:
    """A string (or list-of-string) Arrow array of ``values``. Arrow itself refuses a lone
    surrogate, so the column is converted as it is (nearly always) and only a refused one
    is converted again with those values escaped, rather than checking every value first."""
    try:
        return pa.array(values, type_)
    except UnicodeEncodeError:
        if pa.types.is_list(type_):
            return pa.array([None if v is None else [_utf8(x) for x in v] for v in values], type_)
        return pa.array([_utf8(v) for v in values], type_)


def _arrow_column(values: Sequence[Any], type_: pa.DataType) -> pa.Array:
    """One column as Arrow; text columns go through ``_string_array``."""
    if pa.types.is_string(type_) or (pa.types.is_list(type_) and pa.types.is_string(type_.value_type)):
        return _string_array(values, type_)
    return pa.array(values, type_)


def _compact_encoder() -> Callable[[Any], str]:
    """``json.dumps(value, ensure_ascii=False, allow_nan=False)`` without its per-call cost:
    dumps builds a JSONEncoder and a C encoder on every call, which for a small metrics
    dict is most of the time taken. The C encoder is built once here (no circular-reference
    check: a self-referencing dict fails with RecursionError instead of ValueError); where
    Python has no C encoder, the JSONEncoder's own ``encode`` is used."""
    plain = json.JSONEncoder(ensure_ascii=False, allow_nan=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return plain.encode
    encode = make(None, plain.default, json.encoder.encode_basestring, None, ": ", ", ", False, False, False)
    join = "".join
    return lambda value: join(encode(value, 0))


_encode_compact = _compact_encoder()


def _metrics_json(metrics: Mapping[str, Any]) -> str:
    """One result's metrics as JSON, made safe: NaN, infinities, lone surrogates and odd keys
    are what the slow path fixes."""
    try:
        text = json.dumps(metrics, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
        return text
    except (ValueError, TypeError, UnicodeEncodeError):  # NaN, inf, lone surrogates, odd keys
        return json.dumps(_json_safe(dict(metrics)))


def _metrics_array(metrics: Sequence[Mapping[str, Any]]) -> pa.Array:
    """The metrics column as JSON text, encoded in one pass over the batch; only a batch
    holding a value JSON or UTF-8 refuses (NaN, infinity, a lone surrogate, an odd key) is
    encoded again row by row through ``_metrics_json``."""
    try:
        return pa.array([_encode_compact(m) for m in metrics], pa.string())
    except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
        return pa.array([_metrics_json(m) for m in metrics], pa.string())


_RESULT_FIELDS = tuple(f.name for f in _RESULT_SCHEMA if f.name not in ("ingested_at", "token"))
_result_values = operator.attrgetter(*_RESULT_FIELDS)


def _result_table(results: Sequence[TestResult], now: float, token: int) -> pa.Table:
    """The results as an Arrow table of the results table's columns. One C-level attribute
    fetch per result and a transpose give the columns (no dict per row); each column is then
    converted by Arrow as a whole."""
    n = len(results)
    rows = map(_result_values, results)
    columns = dict(zip(_RESULT_FIELDS, zip(*rows))) if n else {name: () for name in _RESULT_FIELDS}
    arrays = {name: _arrow_column(values, _RESULT_SCHEMA.field(name).type)
              for name, values in columns.items() if name != "metrics"}
    arrays["metrics"] = _metrics_array(columns["metrics"])
    arrays["ingested_at"] = pa.array([now] * n, pa.float64())
    arrays["token"] = pa.array([token] * n, pa.int64())
    return pa.Table.from_arrays([arrays[f.name] for f in _RESULT_SCHEMA], schema=_RESULT_SCHEMA)
