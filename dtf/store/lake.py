"""The DuckLake backend: the same store over a DuckLake catalog (PostgreSQL, or a DuckDB
file) with its data as Parquet files on shared storage.

What differs from the local file, and why:

- **Extensions, loaded by path.** ``ducklake`` and ``postgres`` come from the Python
  packages ``duckdb-extension-ducklake`` and ``duckdb-extension-postgres`` (the ``lake``
  extra), built for one DuckDB release; their files are loaded by path, so nothing is
  downloaded at run time. With another DuckDB, the extensions DuckDB itself installed
  (``INSTALL ducklake; INSTALL postgres``, once, with network) are loaded by name.
- **No keys.** DuckLake has no PRIMARY KEY or UNIQUE constraints: the migrations run
  without their key clauses (``schema.keyless``), and every keyed write stores only the
  rows whose key is not there yet (an anti-join on the table's key, restricted to the
  batch's runs for results), so a redelivered result is still a no-op.
- **Fencing across hosts.** Every fenced transaction writes the token row, so two leaders'
  transactions always touch one common row and DuckLake's optimistic commit lets only one
  through; the loser runs again, reads the newer token, and is refused (FencingError).
- **No file lock.** Any number of processes attach the catalog at once: a standby leads
  as soon as it holds the lease, and readers query while a coordinator writes.
- **Housekeeping.** Each write is a snapshot and a small Parquet file (or rows inlined in
  the catalog); the leader merges small files and expires old snapshots on a schedule.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import duckdb

from ..errors import FencingError, StoreError
from ..model import TestResult
from ..settings import redact_db
from .base import REPORT_CONFIG, Store, _checked, _Conflict, _retry_conflicts
from .schema import KEYS, TestUpdate, _result_table, keyless

__all__ = ["LakeStore", "redact_catalog", "extension_files", "ALIAS"]

#: The name the lake is attached under (and made the default database), so a user's SQL
#: over ``results`` reads the same on both backends.
ALIAS = "lake"

def redact_catalog(text: str) -> str:
    """A catalog string (or anything quoting one) with its password hidden."""
    return redact_db(text)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _wheel_extension(package: str) -> Path | None:
    """The ``.duckdb_extension`` file a duckdb-extension-* package ships for this DuckDB."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "extensions" / f"v{duckdb.__version__}"
    found = sorted(folder.glob("*.duckdb_extension")) if folder.is_dir() else []
    return found[0] if found else None


def _named_link(file: Path, name: str) -> Path:
    """``file`` under the name DuckDB derives its entry point from. The postgres package
    ships ``postgres.duckdb_extension``, whose entry point is ``postgres_scanner_...``:
    loaded as is, DuckDB looks for ``postgres_duckdb_cpp_init`` and refuses it. A symlink
    in a private folder gives it its real name without copying 30 MB."""
    for base in (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dtf" / "duckdb-extensions",
                 Path(tempfile.gettempdir()) / f"dtf-duckdb-extensions-{os.getuid() if hasattr(os, 'getuid') else 0}"):
        folder = base / f"v{duckdb.__version__}"
        link = folder / f"{name}.duckdb_extension"
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            if link.is_symlink() and Path(os.readlink(link)) == file:
                return link
            tmp = folder / f".{name}.{os.getpid()}.tmp"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(file)
            os.replace(tmp, link)
            return link
        except OSError:
            continue
    raise StoreError(f"cannot link the {name} extension into a cache folder")


def extension_files() -> dict[str, str]:
    """{extension: what LOAD takes} for ducklake and postgres: a file of the lake extra's
    packages when they match this DuckDB, else the bare name (DuckDB's own install)."""
    files: dict[str, str] = {}
    for name, package, entry in (("ducklake", "duckdb_extension_ducklake", "ducklake"),
                                 ("postgres", "duckdb_extension_postgres", "postgres_scanner")):
        file = _wheel_extension(package)
        if file is None:
            files[name] = name
        else:
            files[name] = str(file if file.stem == entry else _named_link(file.resolve(), entry))
    return files


def _load_extensions(con: duckdb.DuckDBPyConnection) -> None:
    for name, what in extension_files().items():
        try:
            con.execute(f"LOAD {_quote(what) if os.sep in what else what}")
        except duckdb.Error as exc:
            if name == "postgres":
                continue  # only a PostgreSQL catalog needs it; ATTACH says so if this one does
            first = str(exc).splitlines()[0]
            raise StoreError(
                f"the DuckLake store needs DuckDB's {name} extension ({first}). Install dtf's lake extra"
                f" (pip install 'dtf[lake]': duckdb 1.5.5 with the extensions as packages), or with DuckDB"
                f" {duckdb.__version__} run INSTALL ducklake; INSTALL postgres; once where the network is"
                " reachable (docs/ha.md)") from None


class LakeStore(Store):
    """The store over a DuckLake: ``catalog`` is what follows ``ducklake:`` in ``--db``."""

    backend = "ducklake"
    _fence_writes_always = True
    #: How often the leader's housekeeping merges small files, and how old a snapshot gets
    #: before it is expired (readers running a query that long ago keep working).
    compact_every_s = 600.0
    keep_snapshots_s = 3600.0

    def __init__(
        self,
        catalog: str,
        *,
        data_path: str | None = None,
        read_only: bool = False,
        reports: bool = False,
        password: str | None = None,
    ) -> None:
        self.catalog = catalog
        self.data_path = data_path
        self.reports = reports
        self._password = password
        self._last_housekeeping = time.monotonic()  # the first round one interval after start
        super().__init__(redact_catalog(f"ducklake:{catalog}"), read_only=read_only or reports)

    # -- connection -------------------------------------------------------------------
    def _attach_string(self) -> str:
        target = f"ducklake:{self.catalog}"
        if self._password and self.catalog.startswith("postgres:"):
            target += f" password={self._password}"
        return target

    def _connect(self, read_only: bool, config: dict[str, Any]) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(":memory:", config={k: v for k, v in REPORT_CONFIG.items()
                                                 if k not in ("enable_external_access", "lock_configuration")})
        try:
            _load_extensions(con)
            options = []
            if self.data_path:
                if "://" not in self.data_path and not read_only:
                    Path(self.data_path).mkdir(parents=True, exist_ok=True)
                options.append(f"DATA_PATH {_quote(self.data_path)}")
            if read_only:
                options.append("READ_ONLY")
            con.execute(f"ATTACH {_quote(self._attach_string())} AS {ALIAS}" + (f" ({', '.join(options)})" if options else ""))
            con.execute(f"USE {ALIAS}")
            if self.reports:
                self._lock_down(con)
        except duckdb.Error as exc:
            con.close()
            raise duckdb.Error(redact_catalog(str(exc))) from None
        return con

    def _lock_down(self, con: duckdb.DuckDBPyConnection) -> None:
        """Reports' settings (REPORT_CONFIG) on an attached lake: file access only to the
        lake's data (and a DuckDB-file catalog), then no more external access, settings
        locked. PostgreSQL access stays what the catalog's role may do: give readers a
        role that can only SELECT (docs/ha.md)."""
        rows = con.execute("SELECT value FROM ducklake_options(?) WHERE option_name = 'data_path'", [ALIAS]).fetchall()
        allowed = [str(r[0]) for r in rows if r[0]]
        if not self.catalog.startswith(("postgres:", "mysql:", "sqlite:")) and "://" not in self.catalog:
            allowed.append(str(Path(self.catalog).resolve().parent) + os.sep)
        if allowed:
            con.execute("SET allowed_directories = ?", [allowed])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = self._con.cursor()
        cursor.execute(f"USE {ALIAS}")
        return cursor

    # -- keys ------------------------------------------------------------------------
    def _ddl(self, sql: str) -> str:
        return keyless(sql)

    def _insert_new(self, con: duckdb.DuckDBPyConnection, table: str, select: str, params: Sequence[Any] = ()) -> int:
        keys = KEYS[_checked(table)]
        match = " AND ".join(f"t.{k} IS NOT DISTINCT FROM s.{k}" for k in keys)
        # The stored rows are searched only under the first key column's values in the
        # batch (a result's run): DuckLake skips files whose run_id range misses them.
        first = keys[0]
        row = con.execute(
            f"INSERT INTO {table} SELECT * FROM ({select}) s"
            f" WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {match}"
            f" AND t.{first} IN (SELECT {first} FROM ({select})))"
            f" QUALIFY row_number() OVER (PARTITION BY {', '.join('s.' + k for k in keys)}) = 1",
            list(params) * 2,
        ).fetchone()
        return int(row[0]) if row else 0

    def _upsert(self, con: duckdb.DuckDBPyConnection, table: str, select: str, params: Sequence[Any],
                update: Sequence[str]) -> None:
        keys = KEYS[_checked(table)]
        sets = ", ".join(f"{c} = s.{c}" for c in update)
        match = " AND ".join(f"{table}.{k} = s.{k}" for k in keys)
        con.execute(f"UPDATE {table} SET {sets} FROM ({select}) s WHERE {match}", list(params))
        self._insert_new(con, table, select, params)

    def _fence(self, con: duckdb.DuckDBPyConnection, token: int) -> None:
        """As the local file's, but the token row is written in every fenced transaction
        (see ``_fence_writes_always``), with one plain UPDATE: each statement on a lake
        costs catalog round trips, and this runs once per batch."""
        rows = con.execute("SELECT value FROM meta WHERE key = 'max_token'").fetchall()
        current = int(rows[0][0]) if rows else 0
        if token < current:
            raise FencingError(f"write with fencing token {token} refused: database has seen {current}")
        if rows:
            con.execute("UPDATE meta SET value = ? WHERE key = 'max_token'", [str(max(token, current))])
        else:
            con.execute("INSERT INTO meta VALUES ('max_token', ?)", [str(token)])

    def _write_error(self, exc: duckdb.Error) -> StoreError:
        text = redact_catalog(str(exc))
        if "conflict" in text.lower():
            # Another writer committed first. Run the write again: a deposed leader's retry
            # reads the newer token and is fenced; anyone else's simply goes through.
            return _Conflict(f"cannot write results database {self.path}: {text.splitlines()[0]}")
        return StoreError(f"cannot write results database {self.path}: {text.splitlines()[0]}")

    @_retry_conflicts
    def ingest_batch(
        self,
        results: Sequence[TestResult],
        updates: Sequence[TestUpdate] = (),
        *,
        finished_runs: Sequence[tuple[str, str]] = (),
        token: int = 0,
    ) -> int:
        """One transaction, as on the local file; with no key to trip over, the results are
        always written through the anti-join (new keys only), in one pass."""
        now = time.time()
        return self._write_batch(_result_table(results, now, token), updates, finished_runs, now, token,
                                 skip_duplicates=True)


    # -- housekeeping ----------------------------------------------------------------
    def housekeeping(self, now: float, *, token: int = 0, force: bool = False) -> list[str]:
        """Every ``compact_every_s``: flush rows inlined in the catalog to Parquet, merge
        small adjacent files, expire snapshots older than ``keep_snapshots_s`` and delete
        the files only they used. Runs only while ``token`` is still the newest (a
        deposed leader leaves it to the new one). Returns the steps done."""
        if self.read_only or (not force and time.monotonic() - self._last_housekeeping < self.compact_every_s):
            return []
        self._last_housekeeping = time.monotonic()
        if token < self.max_token():
            return []
        done = []
        cutoff = f"now() - INTERVAL '{int(self.keep_snapshots_s)} seconds'"
        with self._lock:
            for step, sql in (
                ("flush_inlined_data", f"CALL ducklake_flush_inlined_data('{ALIAS}')"),
                ("merge_adjacent_files", f"CALL ducklake_merge_adjacent_files('{ALIAS}')"),
                ("expire_snapshots", f"CALL ducklake_expire_snapshots('{ALIAS}', older_than => {cutoff})"),
                ("cleanup_old_files", f"CALL ducklake_cleanup_old_files('{ALIAS}', older_than => {cutoff})"),
            ):
                try:
                    self._con.execute(sql).fetchall()
                    done.append(step)
                except duckdb.Error as exc:  # a race with a reader or another writer: next round
                    done.append(f"{step} skipped: {redact_catalog(str(exc)).splitlines()[0]}")
        return done
