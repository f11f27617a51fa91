"""What every command module shares: the consoles, the error decorator, the options that
recur, settings and logging, the one helper that opens a results file given with --db,
and turning an ``Outcome`` into the exit code.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, NoReturn, Optional, TypeVar

import typer
from rich.console import Console

from .. import lognoise
from ..errors import DtfError
from ..outcome import Outcome
from ..settings import Settings, redact_db

out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])

BrokerOpt = Annotated[Optional[str], typer.Option("--broker", envvar="DTF_BROKER_URL", help="Broker URL, e.g. redis://127.0.0.1:6379/0.")]
TemplatesOpt = Annotated[Optional[list[Path]], typer.Option("--templates", help="Extra template folder (repeatable).")]
DbOpt = Annotated[Optional[str], typer.Option("--db", envvar="DTF_DB", help="Results store: a DuckDB file, or ducklake:<catalog> (docs/ha.md).")]
DataPathOpt = Annotated[Optional[str], typer.Option("--data-path", envvar="DTF_DATA_PATH", help="A DuckLake store's data folder (shared by every host).")]
ReadDbOpt = Annotated[Optional[str], typer.Option("--db", help="Read this DuckDB file (read-only) instead of asking the coordinator.")]
FormatOpt = Annotated[str, typer.Option("--format", help="table or json")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
OutputDirOpt = Annotated[Optional[Path], typer.Option("--output-dir", help="Write report.json, report.md, report.html and junit.xml here.")]
BaselineOpt = Annotated[Optional[str], typer.Option("--baseline", help="Compare performance with this run id, or 'latest' (the latest earlier run of the same suite per hardware).")]
FailOnRegressionOpt = Annotated[bool, typer.Option("--fail-on-regression", help="Exit 1 when a performance regression is flagged (implies --baseline latest).")]


# -- verbosity -------------------------------------------------------------------------------
class Verbosity:
    """Set once by the global --quiet/--verbose: quiet shows warnings and errors only (no
    progress or informational lines, log level WARNING); verbose logs at DEBUG."""

    quiet = False
    verbose = False

    @classmethod
    def set(cls, *, quiet: bool, verbose: bool) -> None:
        if quiet and verbose:
            raise DtfError("--quiet and --verbose: choose one")
        cls.quiet, cls.verbose = quiet, verbose

    @classmethod
    def log_level(cls, configured: str) -> str:
        return "WARNING" if cls.quiet else "DEBUG" if cls.verbose else configured


def info(message: str, *, markup: bool = True) -> None:
    """An informational line on stderr (what started, where results went): not with --quiet."""
    if not Verbosity.quiet:
        err.print(message, markup=markup)


def errors_to_exit(fn: F) -> F:
    """Turn DtfError into one line on stderr and its exit code (2); Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DtfError as exc:
            err.print(f"[red]error:[/red] {exc}", markup=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def conclude(outcome: Outcome) -> NoReturn:
    """Say why (stderr) and exit with the outcome's code."""
    for line in outcome.messages:
        err.print(line, markup=False)
    raise typer.Exit(outcome.code)


# -- settings --------------------------------------------------------------------------------
def setup_logging(level: str) -> None:
    level = Verbosity.log_level(level)
    logging.basicConfig(level=getattr(logging, level.upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lognoise.install()  # Celery's and kombu's broker trouble: one line per event


def settings(**overrides: Any) -> Settings:
    built = Settings.from_env(**overrides)
    setup_logging(built.log_level)
    return built


def broker_settings(broker: Optional[str], *, db_too: bool = False, hint: str = "") -> Settings:
    """Settings for a command that talks to the coordinator: with no broker configured it
    says so at once instead of asking the in-process memory:// broker, where nobody answers."""
    built = settings(broker_url=broker)
    if built.embedded:
        raise DtfError("no broker configured: set DTF_BROKER_URL or --broker"
                       + (", or read a DuckDB file with --db" if db_too else "") + hint)
    return built


def coordinator_client(broker: Optional[str], *, db_too: bool = False) -> Any:
    from ..client import CoordinatorClient

    return CoordinatorClient.for_settings(broker_settings(broker, db_too=db_too))


def template_registry(built: Settings, templates: Optional[list[Path]]) -> Any:
    from ..submission import template_registry as registry

    return registry(built.template_dirs, templates)


def writable_store(built: Settings) -> Any:
    """The results store a coordinator owns (read-write): a local DuckDB file or a DuckLake.
    With ``open_store`` below, the only places the CLI opens a store."""
    from ..store import open_store as open_any

    return open_any(built.db_path, data_path=built.data_path or None, password=built.db_password)


@contextlib.contextmanager
def open_store(db: str) -> Iterator[Any]:
    """The one place the CLI opens a DuckDB file given with --db: locked down
    (Store.open_for_reports: no file, network or extension access); a query it refuses (a
    crafted file whose view reads local files) or a broken file is one line and exit 2,
    never a traceback."""
    import duckdb

    from ..errors import StoreError
    from ..store import open_store as open_any

    with open_any(db, reports=True, password=Settings.from_env().db_password) as store:
        try:
            yield store
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"cannot read results database {redact_db(db)}: {first}") from None


# -- small formatting helpers ------------------------------------------------------------------
def table_or_json(fmt: str) -> None:
    if fmt not in ("table", "json"):
        raise DtfError(f"--format: expected table or json, got {fmt!r}")


def split(value: Optional[str]) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def fmt_value(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
