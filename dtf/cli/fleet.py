"""The machines: ``dtf detect``, ``workers``, ``deploy-script``, ``keygen``, ``version``."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional, Sequence

import typer
from rich.table import Table

from .. import __version__
from ..errors import DtfError
from . import common
from .common import BrokerOpt, FormatOpt, JsonOpt, errors_to_exit, fmt_value, split, table_or_json

_STATE_STYLE = {"online": "green", "constrained": "yellow", "offline": "red"}


@errors_to_exit
def detect(as_json: JsonOpt = False) -> None:
    """Detect this machine's platform and hardware and the queues a worker here would serve.

    Example: dtf detect --json
    """
    from ..hardware import detect as detect_hw, format_profile, select_queues

    profile = detect_hw()
    if as_json:
        common.out.print_json(json.dumps({**profile.to_dict(), "queues": select_queues(profile)}))
        return
    table = Table(title="dtf detect", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    for label, value in format_profile(profile):
        table.add_row(label, value)
    table.add_row("queues", ", ".join(select_queues(profile)))
    common.out.print(table)


@errors_to_exit
def workers(
    broker: BrokerOpt = None,
    fmt: FormatOpt = "table",
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Keep the table on screen, refreshed.")] = False,
    interval: Annotated[float, typer.Option("--interval", help="With --watch: seconds between refreshes.")] = 2.0,
) -> None:
    """List the workers the coordinator knows: state, health, queues, tests running, last heartbeat.

    A worker silent for 45 s (or three of its heartbeat intervals) shows as offline.
    Example: dtf workers --watch
    """
    table_or_json(fmt)
    client = common.coordinator_client(broker)
    out = common.out
    if fmt == "json":
        out.print_json(json.dumps(client.call("workers"), default=str))
        return
    if not watch:
        out.print(workers_table(client.call("workers"), time.time()))
        return
    from rich.live import Live

    try:
        if not out.is_terminal:  # a pipe or a log file: one table per refresh, appended
            while True:
                out.print(workers_table(client.call("workers"), time.time()))
                time.sleep(max(interval, 0.2))
        with Live(workers_table(client.call("workers"), time.time()), console=out, auto_refresh=False) as live:
            while True:
                time.sleep(max(interval, 0.2))
                live.update(workers_table(client.call("workers"), time.time()), refresh=True)
    except KeyboardInterrupt:
        return


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago" if seconds < 7200 else f"{seconds / 3600:.0f}h ago"


def _gpu_cell(gpus: Sequence[dict[str, Any]]) -> str:
    return " ".join(f"{g.get('index', '?')}:{fmt_value(g.get('utilization_percent'), 0)}%/{fmt_value(g.get('memory_percent'), 0)}%"
                    for g in gpus) or "-"


def workers_table(rows: Sequence[dict[str, Any]], now: float) -> Table:
    table = Table(title=f"workers ({datetime.fromtimestamp(now).strftime('%H:%M:%S')})")
    for col in ("worker", "host", "state", "queues", "sources", "cpu %", "mem %", "load", "disk free GB", "gpu util/mem",
                "running", "profile", "last seen"):
        table.add_column(col, overflow="fold")
    for w in rows:
        h = w.get("health") or {}
        state = w.get("state") or ""
        style = _STATE_STYLE.get(state, "")
        reasons = "; ".join((h.get("guard") or {}).get("reasons") or [])
        shown = f"[{style}]{state}[/{style}]" if style else state
        routing = h.get("routing") or {}
        sick = "; ".join(f"{kind} off: {why}" for kind, why in (routing.get("unhealthy") or {}).items())
        tags = ", ".join(routing.get("tags") or [])
        table.add_row(
            w["worker_id"], w.get("hostname") or "",
            shown + (f" ({reasons})" if reasons and state == "constrained" else "") + (f" (health check: {sick})" if sick else ""),
            ", ".join(w.get("queues") or []) + (f" (tags {tags})" if tags else ""),
            ", ".join((w.get("hardware") or {}).get("model_sources") or []) or "-",
            fmt_value(h.get("cpu_percent"), 0), fmt_value(h.get("memory_percent"), 0),
            fmt_value((h.get("load") or [None])[0]), fmt_value(h.get("disk_free_gb"), 1), _gpu_cell(h.get("gpus") or []),
            fmt_value(h.get("running")), h.get("profile") or "-",
            _age(now - float(w["last_seen"])) if w.get("last_seen") else "-",
        )
    return table


@errors_to_exit
def deploy_script(
    platform: Annotated[str, typer.Option("--platform", help="linux, macos, windows, docker or kubernetes.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the files into.")],
    broker: BrokerOpt = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Worker name.")] = None,
    tags: Annotated[Optional[str], typer.Option("--tags", help="Comma list of extra tags.")] = None,
    queues: Annotated[Optional[str], typer.Option("--queues", help="Comma list replacing the detected queues.")] = None,
    gpu: Annotated[Optional[str], typer.Option("--gpu", help="cuda or rocm: GPU resources for kubernetes/docker.")] = None,
    concurrency: Annotated[Optional[int], typer.Option("--concurrency")] = None,
    profile: Annotated[Optional[str], typer.Option("--profile", help="benchmark, test or light.")] = None,
    host_profile: Annotated[Optional[Path], typer.Option("--host-profile", help="A workers/profiles/*.yaml file.")] = None,
    prefix: Annotated[Optional[str], typer.Option("--prefix", help="Install folder on the target.")] = None,
    install_source: Annotated[str, typer.Option("--install-source", help="What pip installs: a git URL, wheel or path.")] = "dtf",
    signing_key_file: Annotated[Optional[str], typer.Option(
        "--signing-key-file", help="The fleet's signing key (dtf keygen) as the target reads it; for docker, the compose secret's source.",
    )] = None,
) -> None:
    """Write the scripts that install and start a worker on a platform (no secrets in clear).

    Example: dtf deploy-script --platform linux --out ./deploy --broker redis://redis.internal:6379/0 --tags gpu,cuda
    """
    from ..deploy import load_host_profile, render_deploy, render_profile, split_broker_url

    settings = common.settings()
    if broker and split_broker_url(broker).had_password:
        common.err.print("note: the password in the broker URL was not written; put it in the file named by DTF_REDIS_PASSWORD_FILE")
    if host_profile:
        files = render_profile(load_host_profile(host_profile), out_dir, broker=broker, platform=platform,
                               sentinels=settings.sentinels, prefix=prefix, install_source=install_source,
                               signing_key_file=signing_key_file)
    else:
        files = render_deploy(platform, out_dir, broker=broker, name=name, tags=split(tags), queues=split(queues),
                              gpu=gpu, sentinels=settings.sentinels, concurrency=concurrency, profile=profile,
                              prefix=prefix, install_source=install_source, signing_key_file=signing_key_file)
    for path in files:
        common.out.print(str(path))


def version() -> None:
    """Print the dtf version."""
    common.out.print(__version__)


@errors_to_exit
def keygen(
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Key file (default: the state dir's signing.key).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key file.")] = False,
    rotate: Annotated[bool, typer.Option("--rotate", help="Sign with a new key; keep verifying with the old ones.")] = False,
) -> None:
    """Write a new message-signing key (readable by this user only) and print its path.

    Copy the file to every host that runs dtf (or point DTF_SIGNING_KEY_FILE at it). With
    --rotate the new key signs and the old keys still verify; drop them later with --force.

    Example: dtf keygen && scp ~/.local/state/dtf/signing.key worker1:.local/state/dtf/
    """
    from ..signing import default_key_file, generate_key, key_id, read_key_file, write_key_file

    path = out_file or default_key_file()
    old = read_key_file(path) if rotate and path.exists() else ()
    if path.exists() and not (force or rotate):
        raise DtfError(f"{path} exists: --rotate to add a new signing key, --force to replace it")
    key = generate_key()
    write_key_file(path, [key, *old], replace=True)
    common.out.print(str(path))
    common.info(f"signing key {key_id(key)} written to {path}" + (f"; {len(old)} older key(s) still verify" if old else ""))
