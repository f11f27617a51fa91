"""The results store and its two backends, chosen by the ``--db`` string (``DTF_DB``):

- a path: the local DuckDB file (``base.Store``), the zero-setup default;
- ``ducklake:<catalog>``: a DuckLake (``lake.LakeStore``): the catalog in PostgreSQL
  (``ducklake:postgres:dbname=dtf host=... user=...``) or a DuckDB file
  (``ducklake:/path/meta.ducklake``), the data as Parquet files under ``--data-path``
  (``DTF_DATA_PATH``). Many readers and coordinators on any host.

``open_store`` is the one place that decides; both backends offer the same methods over
the same tables (``schema``), and ``transfer`` copies a store into the other kind.
"""

from __future__ import annotations

from .base import REPORT_CONFIG, Store
from .schema import MIGRATIONS, TestUpdate

__all__ = ["Store", "MIGRATIONS", "TestUpdate", "REPORT_CONFIG", "open_store", "is_lake", "describe"]

LAKE_PREFIX = "ducklake:"


def is_lake(spec: str) -> bool:
    """Whether a ``--db`` string names a DuckLake rather than a local DuckDB file."""
    return str(spec).startswith(LAKE_PREFIX)


def describe(spec: str) -> str:
    """The ``--db`` string as it may be printed or logged: a catalog's password hidden."""
    if not is_lake(spec):
        return str(spec)
    from .lake import redact_catalog

    return redact_catalog(str(spec))


def open_store(
    spec: str,
    *,
    data_path: str | None = None,
    read_only: bool = False,
    reports: bool = False,
    password: str | None = None,
) -> Store:
    """The store a ``--db`` string names: read-write (migrated) by default; ``read_only``
    for a reader; ``reports`` for a reader locked down as reports need it (no file,
    network or extension access beyond the store itself, settings locked). ``data_path``
    and ``password`` matter to a lake only: where its Parquet files live (needed when the
    lake is created; afterwards the catalog remembers it) and the catalog's password
    (better: libpq's PGPASSFILE, or DTF_DB_PASSWORD_FILE)."""
    if is_lake(spec):
        from .lake import LakeStore

        return LakeStore(str(spec)[len(LAKE_PREFIX):], data_path=data_path, read_only=read_only or reports,
                         reports=reports, password=password)
    if reports:
        return Store.open_for_reports(spec)
    return Store(spec, read_only=read_only)
