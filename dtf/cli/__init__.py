"""The dtf command line: parse options, build settings, call the library, print, exit.

The only package that prints and sets exit codes: 0 all passed, 1 a test failed, errored
or timed out, 2 bad input or an infrastructure failure (one line on stderr, no traceback).
Which code a run ends with is decided by dtf.outcome; the commands live one module per
group: runs (run, submit, status, results, report, runs), serve (coordinator, worker,
worker-health, flower, dashboard), fleet (detect, workers, deploy-script, keygen,
version), templates, models, tasks (maintenance tasks on workers); progress follows a run; common holds what they share.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from . import fleet, runs, serve
from .common import Verbosity, err, errors_to_exit
from .models import models_app
from .tasks import tasks_app
from .templates import templates_app
from .stores import register as register_store_commands
from .history import register as register_history_commands

__all__ = ["app", "main", "templates_app", "models_app"]

app = typer.Typer(
    name="dtf",
    help="Distributed testing framework for AI models on heterogeneous hardware.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _flags_show_no_type() -> None:
    """typer's help prints a type after every option, "<bool>" after flags too, as if
    --wait took a value: show none for flags."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "dtf_flags", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> Any:
        return None if self.is_flag and self.metavar is None else shown(self, ctx)

    display_type_rich.dtf_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_show_no_type()


@app.callback()
def _global_options(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only: no progress or informational lines.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at DEBUG level.")] = False,
) -> None:
    """Distributed testing framework for AI models on heterogeneous hardware."""
    if quiet and verbose:
        err.print("[red]error:[/red] --quiet and --verbose: choose one", markup=True)
        raise typer.Exit(2)
    Verbosity.set(quiet=quiet, verbose=verbose)


app.add_typer(templates_app, name="templates")
app.add_typer(models_app, name="models")
app.add_typer(tasks_app, name="tasks")
for command, name in (
    (runs.run, None), (runs.submit, None), (runs.status, None), (runs.results, None),
    (serve.coordinator, None), (serve.worker, None), (serve.worker_health, "worker-health"),
    (fleet.detect, None), (fleet.workers, None), (serve.flower, None), (serve.dashboard, None),
    (fleet.deploy_script, "deploy-script"), (fleet.version, None), (fleet.keygen, None),
    (runs.report, None), (runs.runs, None), (runs.cancel, None),
):
    app.command(name)(command)
register_store_commands(app, errors_to_exit)  # dtf export, dtf import
register_history_commands(app, errors_to_exit)  # dtf predict, dtf scale, dtf quarantine


def main() -> None:
    import faulthandler
    import signal

    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 <pid>` dumps every thread's stack: hangs are debuggable
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    app(args=optional_values(sys.argv[1:]))


#: Options whose value is optional: alone they mean this value (``--reuse`` = ``--reuse=any``).
OPTIONAL_VALUES = {"--reuse": "any"}


def optional_values(args: list[str]) -> list[str]:
    """typer has no option with an optional value; a bare one gets its meaning spelled out."""
    return [f"{a}={OPTIONAL_VALUES[a]}" if a in OPTIONAL_VALUES else a for a in args]
