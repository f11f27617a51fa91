"""Local state of the dtf processes on one machine, under one directory.

The state directory is ``DTF_STATE_DIR``, else ``$XDG_STATE_HOME/dtf``, else
``~/.local/state/dtf``. It holds:

* ``workers/<worker>.json``: one file per running ``dtf worker`` (name, pid, queues),
  written at start and removed at a clean stop; ``dtf worker-health`` finds the workers
  of this machine (or container) here;
* ``spool/``: results waiting to be published (unless ``DTF_SPOOL_DIR`` says otherwise).

``check_worker_health`` is what ``dtf worker-health`` runs, the command the container
HEALTHCHECK, the compose health check and the Kubernetes livenessProbe call: a worker is
healthy when its process is alive and it answers a ping through the broker, which it reads
on the same connection and event loop as its tests.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = [
    "default_state_dir",
    "WorkerRecord",
    "write_worker_record",
    "remove_worker_record",
    "worker_records",
    "check_worker_health",
    "HealthVerdict",
]

WORKERS_SUBDIR = "workers"


def default_state_dir(env: Mapping[str, str]) -> str:
    """``DTF_STATE_DIR``, else ``$XDG_STATE_HOME/dtf``, else ``~/.local/state/dtf``."""
    if env.get("DTF_STATE_DIR"):
        return env["DTF_STATE_DIR"]
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "dtf")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


@dataclass(frozen=True)
class WorkerRecord:
    """What a running worker leaves in the state directory."""

    worker_id: str
    pid: int
    queues: tuple[str, ...]
    started_at: float
    path: Path

    @property
    def alive(self) -> bool:
        return _pid_alive(self.pid)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    except OSError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:  # a zombie (killed, not yet reaped) is not a running worker
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def write_worker_record(state_dir: str | Path, worker_id: str, queues: Sequence[str], pid: int | None = None) -> Path:
    folder = Path(state_dir) / WORKERS_SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_safe(worker_id)}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"worker_id": worker_id, "pid": pid or os.getpid(), "queues": list(queues),
                               "started_at": time.time()}), encoding="utf-8")
    os.replace(tmp, path)
    return path


def remove_worker_record(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def worker_records(state_dir: str | Path) -> list[WorkerRecord]:
    """Every worker record in the state directory, live or left by a killed worker."""
    records = []
    for path in sorted((Path(state_dir) / WORKERS_SUBDIR).glob("*.json")):
        try:
            raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            records.append(WorkerRecord(str(raw["worker_id"]), int(raw["pid"]), tuple(raw.get("queues") or ()),
                                        float(raw.get("started_at") or 0.0), path))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # half-written or foreign: not a worker record
    return records


@dataclass(frozen=True)
class HealthVerdict:
    healthy: bool
    message: str


def _ping(app: Any, names: list[str], timeout_s: float) -> set[str]:
    """The names among ``names`` that answered a ping through the broker within ``timeout_s``.

    Raises the broker's error when it cannot be reached at all."""
    from celery.utils.nodenames import default_nodename

    nodes = {default_nodename(n): n for n in names}  # Celery names "w" as "celery@w"
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout_s)
        replies = app.control.ping(destination=list(nodes), timeout=timeout_s, connection=conn)
    return {nodes.get(node, node) for reply in replies or [] for node in reply}


def check_worker_health(app: Any, state_dir: str | Path, *, name: str | None = None, timeout_s: float = 10.0) -> HealthVerdict:
    """Healthy when every worker of this machine (or the named one) is alive and answers
    a ping through the broker within ``timeout_s``."""
    records = worker_records(state_dir)
    if name:
        records = [r for r in records if r.worker_id == name]
    live = [r for r in records if r.alive]
    if not live:
        if records:
            gone = ", ".join(f"{r.worker_id} (pid {r.pid})" for r in records)
            return HealthVerdict(False, f"worker {gone} is not running")
        if not name:
            return HealthVerdict(False, f"no dtf worker runs here (nothing in {Path(state_dir) / WORKERS_SUBDIR})")
    names = [r.worker_id for r in live] or [str(name)]
    outcome: dict[str, Any] = {}

    def ping() -> None:
        try:
            outcome["answered"] = _ping(app, names, timeout_s)
        except Exception as exc:  # noqa: BLE001 - any broker failure is "unhealthy", in one line
            outcome["error"] = exc

    thread = threading.Thread(target=ping, daemon=True, name="dtf-health-ping")
    thread.start()
    thread.join(timeout_s * 2 + 5)  # kombu may retry a publish for ever; the probe may not
    if "error" in outcome:
        exc = outcome["error"]
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return HealthVerdict(False, f"cannot reach the broker: {first}")
    if "answered" not in outcome:
        return HealthVerdict(False, "the broker did not answer")
    silent = [n for n in names if n not in outcome["answered"]]
    if silent:
        return HealthVerdict(False, f"worker {', '.join(silent)} did not answer a ping through the broker within {timeout_s:g} s")
    return HealthVerdict(True, f"ok: {', '.join(names)} answered")
