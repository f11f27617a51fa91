"""The results store: the interface every backend offers and its local DuckDB file backend.

``Store`` holds every query and write transaction dtf runs (fencing, Arrow batch writes,
the reads behind status, results, reports and the dashboard) over one DuckDB connection.
It is also the local backend: ``Store(path)`` opens a DuckDB file. ``dtf.store.lake``'s
``LakeStore`` is the same class over a DuckLake catalog, overriding only what depends on
the backend: how it connects, the key-less DDL, and the writes that lean on primary keys
in the local file (ON CONFLICT) and are made idempotent by an anti-join there instead.
``dtf.store.open_store`` picks the backend from the ``--db`` string.

One process owns the file read-write (the leader coordinator, or the embedded run), and
it keeps one connection open: connect-per-batch is about 7x slower. Every write goes
through a registered Arrow table, never one INSERT per row, and every result is keyed
(run_id, test_id, attempt) so a redelivered result is a no-op.

Why one module of ~800 lines: every method is one transaction over the same connection and
fencing rule, and a backend overrides methods of this one class; split by table, the
fencing and locking discipline would be repeated in each part (schema, migrations and Arrow
conversion, which need neither, live in ``dtf.store.schema``).
"""

from __future__ import annotations

import functools
import json
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar
from contextlib import contextmanager

import duckdb
import pyarrow as pa

from ..errors import FencingError, StoreError
from ..model import RenderedTest, TestResult
from .history import HistoryQueries
from .schema import (
    KEYS, MIGRATIONS, TestUpdate, _finite, _json_safe, _result_table, _table, _test_row, _utf8,
    _TEST_SCHEMA, _UPDATE_SCHEMA,
)

__all__ = ["Store", "MIGRATIONS", "TestUpdate", "REPORT_CONFIG"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _checked(table: str) -> str:
    """``table`` if it is one of dtf's tables: the one name a keyed write interpolates."""
    if table not in KEYS:
        raise ValueError(f"not a dtf table: {table!r}")
    return table


class _Conflict(StoreError):
    """A write transaction lost to a concurrent one (DuckLake's optimistic commit); the
    whole write is safe to run again, and ``_retry_conflicts`` does."""


def _retry_conflicts(method: _F) -> _F:
    """Run a write method again (a few times) when its transaction lost a commit race. The
    local file never raises _Conflict (one process holds it); on a lake the retry reads the
    fencing token again, so a deposed leader's retry ends in FencingError."""

    @functools.wraps(method)
    def wrapper(self: "Store", *args: Any, **kwargs: Any) -> Any:
        for attempt in range(5):
            try:
                return method(self, *args, **kwargs)
            except _Conflict:
                if attempt == 4:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    return wrapper  # type: ignore[return-value]


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

#: DuckDB threads of a writable local file (Store._connect): one; its writer is the coordinator.
WRITER_THREADS = 1


class Store(HistoryQueries):
    """The store interface, over a local DuckDB file opened by this process (read-write, or
    read-only), with one persistent connection."""

    #: "duckdb" for the local file, "ducklake" for a lake (dtf.store.lake).
    backend = "duckdb"

    def __init__(self, path: str | Path, *, read_only: bool = False, config: Mapping[str, Any] | None = None) -> None:
        self.path = str(path)  # what messages name the store by: never holds a password
        self.read_only = read_only
        try:
            self._con = self._connect(read_only, dict(config or {}))
            self.closed = False
        except (duckdb.Error, OSError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StoreError(f"cannot open results database {self.path}: {first}") from None
        self._lock = threading.RLock()
        self._stale_views: list[str] = []
        if not read_only:
            self.migrate()

    def _connect(self, read_only: bool, config: dict[str, Any]) -> duckdb.DuckDBPyConnection:
        """The one connection of this store (the local file here; a lake overrides it).

        A writable file runs DuckDB at one thread unless ``config`` says otherwise: its
        writer is the coordinator, whose batches are small, and DuckDB's default of a thread
        per core spends a third more CPU time on the same append and update
        (bench/ingest.py), CPU the workers on the same machine could use."""
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        if not read_only:
            config.setdefault("threads", WRITER_THREADS)
        return duckdb.connect(self.path, read_only=read_only, config=config)

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A second connection to the same database, for a read that streams while the main
        connection goes on writing."""
        return self._con.cursor()

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
                    raise self._write_error(exc) from exc
                raise

    def _write_error(self, exc: duckdb.Error) -> StoreError:
        """What a failed write transaction raises (a lake turns a lost commit race into
        _Conflict, or FencingError when a newer leader won it)."""
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return StoreError(f"cannot write results database {self.path}: {first}")

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

    def _ddl(self, sql: str) -> str:
        """A migration's statements as this backend runs them (the local file: unchanged)."""
        return sql

    # -- the writes that lean on keys: a lake overrides these two --------------------
    def _insert_new(self, con: duckdb.DuckDBPyConnection, table: str, select: str, params: Sequence[Any] = ()) -> int:
        """Insert the rows of ``select`` (every column of ``table``, in order) whose key
        (schema.KEYS) is not stored yet; a key repeated inside ``select`` is stored once.
        Returns the rows stored."""
        _checked(table)
        row = con.execute(f"INSERT INTO {table} {select} ON CONFLICT DO NOTHING", list(params)).fetchone()
        return int(row[0]) if row else 0

    def _upsert(self, con: duckdb.DuckDBPyConnection, table: str, select: str, params: Sequence[Any],
                update: Sequence[str]) -> None:
        """Insert the rows of ``select``; where the key is stored already, set the ``update``
        columns from them instead."""
        keys = ", ".join(KEYS[_checked(table)])
        sets = ", ".join(f"{c} = excluded.{c}" for c in update)
        con.execute(f"INSERT INTO {table} {select} ON CONFLICT ({keys}) DO UPDATE SET {sets}", list(params))

    @_retry_conflicts
    def migrate(self) -> list[str]:
        """Apply the named migrations not yet recorded; return the ones applied."""
        applied: list[str] = []
        with self._transaction() as con:
            con.execute(self._ddl(
                "CREATE TABLE IF NOT EXISTS migrations (name VARCHAR PRIMARY KEY, applied_at DOUBLE)"
            ))
            done = {row[0] for row in con.execute("SELECT name FROM migrations").fetchall()}
            for name, sql in MIGRATIONS:
                if name in done:
                    continue
                con.execute(self._ddl(sql))
                con.execute("INSERT INTO migrations VALUES (?, ?)", [name, time.time()])
                applied.append(name)
        return applied

    # -- fencing ----------------------------------------------------------------------
    def max_token(self) -> int:
        rows = self.query("SELECT value FROM meta WHERE key = 'max_token'")
        return int(rows[0]["value"]) if rows else 0

    #: Write the token row in every fenced transaction, not only when the token rises. A
    #: lake sets this: its writers on other hosts serialize only on rows they both write,
    #: so a deposed leader's transaction that read the old token then fails to commit.
    _fence_writes_always = False

    def _fence(self, con: duckdb.DuckDBPyConnection, token: int) -> None:
        rows = con.execute("SELECT value FROM meta WHERE key = 'max_token'").fetchall()
        current = int(rows[0][0]) if rows else 0
        if token < current:
            raise FencingError(f"write with fencing token {token} refused: database has seen {current}")
        if token > current or self._fence_writes_always:
            self._upsert(con, "meta", "SELECT 'max_token' AS key, ? AS value", [str(token)], ["value"])

    # -- writes -----------------------------------------------------------------------
    @_retry_conflicts
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

    def _insert_run_row(self, con: duckdb.DuckDBPyConnection, run: Mapping[str, Any], total: int, now: float) -> None:
        self._insert_new(
            con, "runs",
            "SELECT ? AS run_id, ? AS suite_name, ? AS suite_hash, ? AS submitted_at, ? AS git_sha, ? AS branch,"
            " ? AS ci_url, ? AS status, NULL::DOUBLE AS finished_at, ? AS total, ?::JSON AS info",
            [
                run["run_id"], run.get("suite_name"), run.get("suite_hash"),
                run.get("submitted_at", now), run.get("git_sha"), run.get("branch"),
                run.get("ci_url"), "running", total, json.dumps(run.get("info") or {}),
            ],
        )

    def _insert_tests(self, con: duckdb.DuckDBPyConnection, run_id: str, tests: Sequence[RenderedTest], now: float) -> None:
        table = _table([_test_row(run_id, t, now) for t in tests], _TEST_SCHEMA)
        with self._arrow_view(con, "new_tests", table):
            self._insert_new(con, "tests", "SELECT * FROM new_tests")

    @_retry_conflicts
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
    ) -> tuple[int, int]:
        """Store one chunk of a submit (idempotent: a redelivered chunk changes nothing) and
        return how many distinct chunks of it are stored, and the largest total any of them
        announced: the submit is complete when the two are equal (a sender that cuts chunks
        as it renders announces "one more" on each chunk but its last). Its tests go into ``tests`` under
        ``run_id``, unseen by run queries until ``finish_submit`` adds the run row; a chunk
        with an error stores no tests, and fails the submit when it finishes."""
        now = time.time()
        with self._transaction() as con:
            self._fence(con, token)
            self._insert_new(
                con, "staged_chunks",
                "SELECT ? AS submit_id, ? AS chunk, ? AS chunks, ? AS run_id, ? AS received_at,"
                " ?::JSON AS run, ?::JSON AS reply, ? AS error",
                [submit_id, chunk, chunks, run_id, now, json.dumps(dict(run)) if run is not None else None,
                 json.dumps(dict(reply)) if reply is not None else None, error],
            )
            if tests and error is None:
                self._insert_tests(con, run_id, tests, now)
            staged, expected = con.execute("SELECT count(*), max(chunks) FROM staged_chunks WHERE submit_id = ?",
                                           [submit_id]).fetchone() or (0, 0)
        return int(staged), int(expected)

    @_retry_conflicts
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

    @_retry_conflicts
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
            cursor = self._cursor()
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

    @_retry_conflicts
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
        coordinator's write path. (This is the local file's
        way; a lake stores only the keys it does not hold, in one pass: see LakeStore.)

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
                return self._insert_new(con, "results", "SELECT * FROM batch_results")
        try:
            con.from_arrow(table).insert_into("results")
        except duckdb.ConstraintException as exc:
            raise _DuplicateKey() from exc
        return table.num_rows

    @_retry_conflicts
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

    @_retry_conflicts
    def upsert_worker(self, info: Mapping[str, Any], *, token: int = 0) -> None:
        now = time.time()
        with self._transaction() as con:
            self._fence(con, token)
            self._upsert(
                con, "workers",
                "SELECT ? AS worker_id, ? AS hostname, ? AS platform, ?::JSON AS hardware, ?::VARCHAR[] AS queues,"
                " ? AS state, ?::JSON AS health, ? AS first_seen, ? AS last_seen",
                [
                    info["worker_id"], info.get("hostname"), info.get("platform"),
                    json.dumps(_json_safe(info.get("hardware") or {})), list(info.get("queues") or []),
                    info.get("state", "online"), json.dumps(_json_safe(info.get("health") or {})),
                    now, info.get("last_seen", now),
                ],
                ["hostname", "platform", "hardware", "queues", "state", "health", "last_seen"],
            )

    @_retry_conflicts
    def mark_workers(self, worker_ids: Sequence[str], state: str) -> None:
        if not worker_ids:
            return
        with self._transaction() as con:
            con.execute(
                "UPDATE workers SET state = ? WHERE list_contains(?, worker_id)",
                [state, list(worker_ids)],
            )

    def housekeeping(self, now: float, *, token: int = 0) -> list[str]:
        """Periodic upkeep the leader runs (coordinator's sweep); returns what it did. The
        local file needs none; a lake merges small files and expires old snapshots."""
        return []

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
    @_retry_conflicts
    def record_worker_health(
        self, worker_id: str, seen_at: float, state: str, health: Mapping[str, Any], *, keep: int = 360, token: int = 0
    ) -> None:
        """Append one heartbeat's health to the worker's history, keeping its newest ``keep``."""
        with self._transaction() as con:
            self._fence(con, token)
            self._insert_new(
                con, "worker_health", "SELECT ? AS worker_id, ? AS seen_at, ? AS state, ?::JSON AS health",
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

    @_retry_conflicts
    def mark_silent_workers(self, now: float, offline_after_s: float, *, token: int = 0) -> list[str]:
        """Mark offline every worker silent for longer than ``offline_after_s`` (or three of
        its own heartbeat intervals, if longer); returns their ids."""
        with self._transaction() as con:
            self._fence(con, token)
            # SELECT then UPDATE rather than UPDATE ... RETURNING, which DuckLake does not support.
            rows = con.execute(
                "SELECT worker_id FROM workers WHERE coalesce(state, '') <> 'offline' AND last_seen < ?"
                " - greatest(?, 3 * coalesce(TRY_CAST(health->>'$.heartbeat_interval_s' AS DOUBLE), 0))",
                [now, offline_after_s],
            ).fetchall()
            silent = sorted(str(r[0]) for r in rows)
            if silent:
                con.execute("UPDATE workers SET state = 'offline' WHERE list_contains(?, worker_id)", [silent])
        return silent

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


