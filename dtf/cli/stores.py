"""``dtf export`` and ``dtf import``: copy a results store into another, across backends
(dtf.store.transfer). Registered on the main typer app by ``register``."""

from __future__ import annotations

from typing import Annotated, Any, Callable, Optional

import typer

__all__ = ["register"]


def _copy(source: str, dest: str, data_path: Optional[str], source_data_path: Optional[str]) -> None:
    from rich.console import Console

    from ..settings import Settings, redact_db
    from ..store import open_store
    from ..store.transfer import copy_store

    password = Settings.from_env().db_password
    with open_store(source, data_path=source_data_path, read_only=True, password=password) as src, \
            open_store(dest, data_path=data_path, password=password) as dst:
        counts = copy_store(src, dst)
    Console(stderr=True).print(f"copied {redact_db(source)} -> {redact_db(dest)}: "
                               + ", ".join(f"{table} {n}" for table, n in counts.items()))


def register(app: typer.Typer, errors: Callable[[Any], Any]) -> None:
    """Add the two commands to ``app``, wrapped by the CLI's error handler ``errors``."""

    @app.command("export")
    @errors
    def export(
        to: Annotated[str, typer.Option("--to", help="Destination store: a DuckDB file, or ducklake:<catalog>.")],
        db: Annotated[Optional[str], typer.Option("--db", envvar="DTF_DB", help="Source store (default dtf.duckdb).")] = None,
        data_path: Annotated[Optional[str], typer.Option("--data-path", help="Data folder of a DuckLake destination.")] = None,
    ) -> None:
        """Copy every run, test, result and worker of --db into --to (idempotent: rerun to resume).

        Example: dtf export --db dtf.duckdb --to "ducklake:postgres:dbname=dtf host=pg" --data-path /shared/dtf/
        """
        _copy(db or "dtf.duckdb", to, data_path, None)

    @app.command("import")
    @errors
    def import_(
        source: Annotated[str, typer.Option("--from", help="Source store: a DuckDB file, or ducklake:<catalog>.")],
        db: Annotated[Optional[str], typer.Option("--db", envvar="DTF_DB", help="Destination store (default dtf.duckdb).")] = None,
        data_path: Annotated[Optional[str], typer.Option("--data-path", envvar="DTF_DATA_PATH", help="Data folder of a DuckLake destination.")] = None,
    ) -> None:
        """Copy every run, test, result and worker of --from into --db (idempotent: rerun to resume).

        Example: dtf import --from "ducklake:postgres:dbname=dtf host=pg" --db local.duckdb
        """
        _copy(source, db or "dtf.duckdb", data_path, None)
