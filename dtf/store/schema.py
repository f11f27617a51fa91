"""What both stores share below the SQL: the tables as named migrations, the Arrow schemas
of the batches written into them, and the conversion of dtf's objects into those batches.

The migrations are written for the local DuckDB file, keys included; the DuckLake store
applies the same statements with the key clauses taken out (``keyless``), since DuckLake
has no PRIMARY KEY or UNIQUE constraints, and keeps the same guarantees by writing only
rows whose key is not stored yet (``KEYS`` names each table's key).
"""

from __future__ import annotations

import json
import math
import operator
import re
from typing import Any, Callable, Mapping, Sequence

import pyarrow as pa

from ..model import RenderedTest, TestResult

__all__ = ["MIGRATIONS", "KEYS", "TestUpdate", "keyless"]

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
    (
        "0004_quarantine",
        # Quarantined tests (dtf quarantine, or automatic above a flake rate): per test and
        # hardware kind ('*': every kind), with the reason, who put it there and an expiry.
        """
        CREATE TABLE IF NOT EXISTS quarantine (
            test_id VARCHAR, hardware VARCHAR, reason VARCHAR, added_by VARCHAR,
            added_at DOUBLE, expires_at DOUBLE,
            PRIMARY KEY (test_id, hardware));
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



#: The key of each table: what PRIMARY KEY enforces in the local file, and what the
#: DuckLake store checks before it writes a row.
KEYS: Mapping[str, tuple[str, ...]] = {
    "meta": ("key",),
    "migrations": ("name",),
    "runs": ("run_id",),
    "tests": ("run_id", "test_id"),
    "results": ("run_id", "test_id", "attempt"),
    "workers": ("worker_id",),
    "worker_health": ("worker_id", "seen_at"),
    "staged_chunks": ("submit_id", "chunk"),
    "quarantine": ("test_id", "hardware"),
}

_KEY_CLAUSE = re.compile(r",\s*PRIMARY KEY\s*\([^)]*\)|\s+PRIMARY KEY\b", re.IGNORECASE)


def keyless(sql: str) -> str:
    """A migration's DDL without its PRIMARY KEY clauses (for DuckLake, which has none)."""
    return _KEY_CLAUSE.sub("", sql)


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
