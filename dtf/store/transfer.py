"""Copy every row of one store into another, across backends: a local DuckDB file promoted
to a DuckLake, a lake brought back into a file (``dtf export`` / ``dtf import``).

Rows go table by table as Arrow record batches, each written through the destination's
idempotent insert (rows whose key it holds already are skipped), so a copy interrupted
half-way can simply be run again. The fencing token becomes the higher of the two
stores', so a coordinator that led on either store cannot write to the copy with a stale
token."""

from __future__ import annotations

from typing import Callable

from .base import Store
from .schema import KEYS

__all__ = ["copy_store", "TABLES"]

#: The tables a copy carries, in an order that keeps a reader of the destination sane
#: (runs last: a run appears once its tests and results are there). ``meta`` is handled
#: on its own (the token); ``migrations`` belongs to each store.
TABLES: tuple[str, ...] = ("workers", "worker_health", "staged_chunks", "tests", "results", "runs")


def copy_store(source: Store, dest: Store, *, batch_rows: int = 100_000,
               progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Copy ``source`` into ``dest`` (opened read-write); returns {table: rows written}."""
    written: dict[str, int] = {}
    for table in TABLES:
        assert table in KEYS
        with source._lock:
            reader = source._cursor()
        try:
            reader.execute(f"SELECT * FROM {table}")
            stream = getattr(reader, "to_arrow_reader", None) or reader.fetch_record_batch
            batches = stream(batch_rows)
            total = 0
            for batch in batches:
                total += _write(dest, table, batch)
                if progress is not None:
                    progress(table, total)
        finally:
            reader.close()
        written[table] = total
    token = max(source.max_token(), dest.max_token())
    if token > dest.max_token():
        dest.ingest_batch([], token=token)  # raises the destination's token, nothing else
    return written


def _write(dest: Store, table: str, batch: object) -> int:
    with dest._transaction() as con, dest._arrow_view(con, "copy_rows", batch):  # type: ignore[arg-type]
        return dest._insert_new(con, table, "SELECT * FROM copy_rows")
