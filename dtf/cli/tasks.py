"""``dtf tasks list|run``: maintenance tasks on running workers (logic in dtf.maintenance)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ..errors import DtfError
from . import common
from .common import BrokerOpt, FormatOpt, errors_to_exit, split, table_or_json

tasks_app = typer.Typer(help="Maintenance tasks on running workers: warm model caches, clear caches, detect again.",
                        no_args_is_help=True)

_STYLE = {"ok": "green", "failed": "red", "no answer": "yellow"}


@tasks_app.command("list")
@errors_to_exit
def tasks_list(fmt: FormatOpt = "table") -> None:
    """The maintenance task kinds workers run, and the parameters each takes.

    Example: dtf tasks list
    """
    from ..maintenance import TASK_KINDS

    table_or_json(fmt)
    kinds = sorted(TASK_KINDS.values(), key=lambda k: k.name)
    if fmt == "json":
        common.out.print_json(json.dumps([{"kind": k.name, "help": k.help, "params": dict(k.params)} for k in kinds]))
        return
    table = Table(title="maintenance tasks")
    for column in ("kind", "what it does", "parameters"):
        table.add_column(column, overflow="fold")
    for k in kinds:
        table.add_row(k.name, k.help, "\n".join(f"{p}: {d}" for p, d in k.params.items()) or "-")
    common.out.print(table)


def _params(models: Optional[str], what: Optional[str], revision: Optional[str], pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if models:
        params["models"] = split(models)
    if what:
        params["what"] = split(what)
    if revision:
        params["revision"] = revision
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise DtfError(f"--param: expected KEY=VALUE, got {pair!r}")
        params[key.strip()] = value
    return params


@tasks_app.command("run")
@errors_to_exit
def tasks_run(
    kind: Annotated[str, typer.Argument(help="The task: prepare-models, clear-cache, detect (see `dtf tasks list`).")],
    hardware: Annotated[Optional[str], typer.Option("--hardware", help="Every online worker of this hardware kind (cpu, cuda, ...) or dtf.* queue.")] = None,
    worker: Annotated[Optional[str], typer.Option("--worker", help="Only this worker (its --name).")] = None,
    models: Annotated[Optional[str], typer.Option("--models", help="prepare-models, clear-cache --what hf: hub ids, comma-separated.")] = None,
    what: Annotated[Optional[str], typer.Option("--what", help="clear-cache: work-dirs,fork-server,compiled,ort-web,hf (default: work-dirs,fork-server,compiled).")] = None,
    revision: Annotated[Optional[str], typer.Option("--revision", help="prepare-models: branch, tag or commit.")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", help="KEY=VALUE for the task (repeatable).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the workers' answers.")] = 60.0,
    broker: BrokerOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    """Run a maintenance task on every worker of a queue (--hardware) or on one (--worker).

    One row per addressed worker: ok, failed (and why), or no answer within --timeout.
    Exit 0 when every addressed worker succeeded, 1 when one failed, 2 when one did not answer.
    Example: dtf tasks run prepare-models --models bert-base-uncased,gpt2 --hardware cuda
    """
    from ..app import make_app
    from ..maintenance import check_params, exit_code, run_task

    table_or_json(fmt)
    if timeout <= 0:
        raise DtfError(f"--timeout: expected seconds > 0, got {timeout:g}")
    params = _params(models, what, revision, param or [])
    check_params(kind, params)
    app = make_app(common.broker_settings(broker))
    rows = run_task(app, kind, params, hardware=hardware, worker=worker, timeout_s=timeout)
    if fmt == "json":
        common.out.print_json(json.dumps({"kind": kind, "workers": rows}, default=str))
    else:
        table = Table(title=f"dtf tasks run {kind}")
        for column in ("worker", "status", "seconds", "summary"):
            table.add_column(column, overflow="fold")
        for row in rows:
            style = _STYLE.get(row["status"], "")
            seconds = "-" if row["duration_s"] is None else f"{row['duration_s']:.2f}"
            table.add_row(row["worker_id"], f"[{style}]{row['status']}[/{style}]", seconds, row["summary"])
        common.out.print(table)
    raise typer.Exit(exit_code(rows))
