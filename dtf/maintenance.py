"""Maintenance tasks: things an operator asks of running workers, not tests.

``dtf tasks run KIND`` sends one request to every worker of a hardware queue, or to one
named worker (dtf.bus.maintenance: a per-worker control queue bound by name and by queue),
and prints one row per worker: it succeeded, failed (with why), or did not answer in time.

The kinds are a registry: a kind is one function registered with ``@task_kind``. It runs
on the worker, in the worker's maintenance thread, with the worker's ``WorkerRuntime`` and
the request's params (plain JSON), and returns a ``TaskOutcome``. Its docstring's first
line is what ``dtf tasks list`` shows; ``params`` names the parameters it reads (the CLI
refuses others). Adding a kind::

    @task_kind("disk-usage", params={"path": "folder to measure (default: the spool)"})
    def disk_usage(runtime: WorkerRuntime, params: Mapping[str, Any]) -> TaskOutcome:
        \"\"\"Report how much disk a folder takes on the worker.\"\"\"
        ...
        return TaskOutcome(True, f"{mb:.1f} MB", {"mb": mb})

and ``dtf tasks run disk-usage --param path=/data --hardware cpu`` runs it. Workers run the
kinds their own dtf version knows: a worker without the kind refuses the request (it is
dead-lettered there) and shows as not answering.

The built-in kinds: ``prepare-models`` (every named model in the worker's HF cache, fetched
when the worker may reach the hub, else a failure naming each missing model), ``clear-cache``
(what dtf caches on the worker; the HF cache only when asked by name), ``detect`` (detect the
hardware again and heartbeat it at once).
"""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from kombu import Consumer, Message, Producer

from .app import DtfApp
from .bus import drop_undecodable, first_line, publish_control, reply, wire_format
from .bus.maintenance import broadcast, maintenance_queue, request_body, route_for_queue, route_for_worker
from .errors import DtfError
from .model import HARDWARE_KINDS, queue_for
from .wire import MessageRefused, dead_letter, maintenance_reply_from_wire, maintenance_request_from_wire
from .worker import WorkerRuntime

__all__ = ["TaskOutcome", "TaskKind", "TASK_KINDS", "task_kind", "MaintenanceListener", "run_task", "address", "check_params", "exit_code",
           "CLEAR_TARGETS", "DEFAULT_CLEAR"]

log = logging.getLogger("dtf.maintenance")


@dataclass(frozen=True)
class TaskOutcome:
    """What a kind reports from one worker: success, one line, and details for --format json."""

    ok: bool
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


TaskFn = Callable[[WorkerRuntime, Mapping[str, Any]], TaskOutcome]


@dataclass(frozen=True)
class TaskKind:
    name: str
    run: TaskFn
    help: str
    params: Mapping[str, str]  # parameter name -> what it means


TASK_KINDS: dict[str, TaskKind] = {}


def task_kind(name: str, *, params: Mapping[str, str] | None = None) -> Callable[[TaskFn], TaskFn]:
    """Register ``fn`` as the maintenance task ``name`` (see the module docstring)."""

    def register(fn: TaskFn) -> TaskFn:
        doc = (fn.__doc__ or name).strip().splitlines()[0]
        TASK_KINDS[name] = TaskKind(name, fn, doc, dict(params or {}))
        return fn

    return register


def _names(value: Any) -> list[str]:
    """A list param, given as a list or as one comma-separated string."""
    items = value if isinstance(value, list) else str(value or "").split(",")
    return [str(v).strip() for v in items if str(v).strip()]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


# -- the built-in kinds -----------------------------------------------------------------------------
@task_kind("prepare-models", params={"models": "hub ids, comma-separated (required)", "revision": "branch, tag or commit"})
def prepare_models(runtime: WorkerRuntime, params: Mapping[str, Any]) -> TaskOutcome:
    """Warm the worker's Hugging Face cache with the named models, or fail naming the missing ones."""
    from .models import hub

    models = _names(params.get("models"))
    if not models:
        return TaskOutcome(False, "no models named (--models)")
    revision = str(params["revision"]) if params.get("revision") else None
    offline = _truthy(os.environ.get("HF_HUB_OFFLINE"))
    per: dict[str, dict[str, Any]] = {}
    for name in models:
        try:
            folder, rev = hub.resolve(name, revision)
            per[name] = {"state": "cached", "revision": rev, "path": folder}
            continue
        except hub.ModelMissing as exc:
            missing = str(exc)
        except hub.PackageMissing as exc:
            per[name] = {"state": "missing", "error": str(exc)}
            continue
        if offline:
            per[name] = {"state": "missing", "error": f"{missing}; HF_HUB_OFFLINE is set on this worker"}
            continue
        try:
            folder = hub.fetch(name, revision)
            per[name] = {"state": "fetched", "revision": Path(folder).name, "path": folder}
        except Exception as exc:  # noqa: BLE001 - the hub raises many kinds; each is this model's failure
            per[name] = {"state": "missing", "error": f"{name}: download failed: {first_line(exc)}"}
    absent = [n for n, v in per.items() if v["state"] == "missing"]
    if absent:
        why = "HF_HUB_OFFLINE is set" if offline else "the hub is not reachable"
        return TaskOutcome(False, f"missing: {', '.join(absent)} (not in the HF cache {hub.cache_dir()}; {why})",
                           {"models": per, "cache": str(hub.cache_dir())})
    fetched = sum(1 for v in per.values() if v["state"] == "fetched")
    return TaskOutcome(True, f"{len(models)} model(s) ready ({len(models) - fetched} cached, {fetched} fetched)",
                       {"models": per, "cache": str(hub.cache_dir())})


CLEAR_TARGETS = ("work-dirs", "fork-server", "compiled", "ort-web", "hf")
DEFAULT_CLEAR = ("work-dirs", "fork-server", "compiled")  # ort-web (reinstalling needs npm) and the HF cache only when named


def _size(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _remove_tree(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"path": str(path), "freed_mb": 0.0, "note": "nothing there"}
    size = _size(path)
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    return {"path": str(path), "freed_mb": round(size / (1 << 20), 2)}


def _compiled_dirs() -> list[Path]:
    """torch.compile's caches: TorchInductor's and Triton's (their variables, else their defaults)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    inductor = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or os.path.join(tempfile.gettempdir(), f"torchinductor_{user}")
    triton = os.environ.get("TRITON_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".triton", "cache")
    return [Path(inductor), Path(triton)]


def _clear_one(target: str, runtime: WorkerRuntime, models: list[str]) -> dict[str, Any]:
    if target == "work-dirs":
        from .runner import clear_work_dirs

        return {"removed": clear_work_dirs(), "note": "directories kept for reuse; running tests keep theirs"}
    if target == "fork-server":
        if runtime.running:
            return {"stopped": False, "note": f"{runtime.running} test(s) running: the fork server is kept"}
        from .forkserver import stop_default_server

        return {"stopped": stop_default_server(), "note": "the next CPU test starts a fresh one"}
    if target == "compiled":
        return {"dirs": [_remove_tree(p) for p in _compiled_dirs()]}
    if target == "ort-web":
        from .state import default_state_dir

        if os.environ.get("DTF_ORT_WEB_DIR"):
            return {"note": "DTF_ORT_WEB_DIR is set: that folder is the operator's, left alone"}
        return {"dirs": [_remove_tree(Path(default_state_dir(os.environ)) / "webgpu")],
                "note": "reinstall with `python -m dtf.models.webgpu setup` (needs the npm registry)"}
    from .models.hub import cache_dir

    if not models:
        return {"dirs": [_remove_tree(cache_dir())]}
    return {"dirs": [_remove_tree(cache_dir() / f"models--{m.replace('/', '--')}") for m in models]}


@task_kind("clear-cache", params={"what": f"comma-separated, of {', '.join(CLEAR_TARGETS)} (default: work-dirs, fork-server, compiled)",
                                  "models": "with what=hf: only these models' cache entries"})
def clear_cache(runtime: WorkerRuntime, params: Mapping[str, Any]) -> TaskOutcome:
    """Clear what dtf caches on the worker: work dirs, fork server and compiled code by default; ORT-web and the HF cache when named."""
    what = _names(params.get("what")) or list(DEFAULT_CLEAR)
    unknown = [w for w in what if w not in CLEAR_TARGETS]
    if unknown:
        return TaskOutcome(False, f"unknown cache {', '.join(unknown)} (expected {', '.join(CLEAR_TARGETS)})")
    details: dict[str, Any] = {}
    failed: list[str] = []
    for target in what:
        try:
            details[target] = _clear_one(target, runtime, _names(params.get("models")))
        except OSError as exc:
            details[target] = {"error": f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")}
            failed.append(target)
    freed = sum(d.get("freed_mb", 0.0) for v in details.values() for d in v.get("dirs", []))
    if failed:
        return TaskOutcome(False, f"could not clear {', '.join(failed)}", details)
    return TaskOutcome(True, f"cleared {', '.join(what)} ({freed:.1f} MB freed)", details)


@task_kind("detect")
def detect_now(runtime: WorkerRuntime, params: Mapping[str, Any]) -> TaskOutcome:
    """Detect the worker's hardware again now and announce it in a heartbeat at once."""
    from .hardware import detect, select_queues

    profile = detect()
    runtime.profile = profile
    with runtime.app.producer_or_acquire() as producer:
        publish_control(producer, runtime.heartbeat_body(), serializer=wire_format(runtime.app)[0],
                        retry_policy={"max_retries": 2})
    would = select_queues(profile)
    new = [q for q in would if q not in runtime.queues]
    gpus = ", ".join(sorted({g.name for g in profile.gpus if g.name})) or "no GPU"
    summary = f"{profile.logical_cores or '?'} cores, {gpus}; kinds {', '.join(profile.hardware_kinds)}; heartbeat sent"
    if new:
        summary += f"; restart the worker to serve {', '.join(new)}"
    return TaskOutcome(True, summary, {"hardware": profile.to_dict(), "queues": list(runtime.queues),
                                       "detected_queues": would})


# -- the worker side: one thread that listens on the worker's maintenance queue ----------------------
class MaintenanceListener:
    """Consumes ``dtf.maint.<worker>`` in a thread of its own (so a worker busy with tests
    still answers), runs each request's kind and replies; reconnects when the broker drops."""

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self.app: DtfApp = runtime.app
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.ready = threading.Event()  # set once the queue is declared and consumed

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="dtf-maintenance")
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def handle(self, body: Any) -> dict[str, Any] | None:
        """The reply to one request, or None when it is refused (logged, dead-lettered) or expired."""
        request = maintenance_request_from_wire(body, frozenset(TASK_KINDS))
        if request["expires_at"] and time.time() > request["expires_at"]:
            log.info("dropping an expired %s request", request["kind"])
            return None
        kind = TASK_KINDS[request["kind"]]
        started = time.monotonic()
        try:
            outcome = kind.run(self.runtime, request["params"])
        except Exception as exc:  # noqa: BLE001 - a failing kind is a failed answer, never a dead listener
            log.exception("maintenance task %s failed", kind.name)
            outcome = TaskOutcome(False, f"{type(exc).__name__}: {first_line(exc)}")
        log.info("maintenance task %s: %s", kind.name, outcome.summary)
        return {"worker_id": self.runtime.worker_id, "hostname": self.runtime.hostname, "kind": kind.name,
                "ok": outcome.ok, "summary": outcome.summary, "details": outcome.details,
                "duration_s": round(time.monotonic() - started, 3)}

    def _loop(self) -> None:
        serializer, accept = wire_format(self.app)
        queue = maintenance_queue(self.runtime.worker_id, self.runtime.queues)
        while not self._stop.is_set():
            try:
                with self.app.connection_for_read() as conn:
                    conn.ensure_connection(max_retries=3, interval_start=0.5, interval_step=0.5, timeout=5)
                    channel = conn.channel()
                    bound = queue(channel)
                    bound.declare()
                    bound.purge()  # requests left from an earlier run of this worker are stale
                    producer = Producer(conn.channel(), serializer=serializer)

                    def on_message(body: Any, message: Message) -> None:
                        message.ack()  # at most once: a maintenance request is never run twice
                        try:
                            answer = self.handle(body)
                        except MessageRefused as exc:
                            dead_letter(_redis_client(conn), queue.name, str(exc), body)
                            return
                        if answer is not None:
                            reply(producer, body, answer)

                    with Consumer(channel, [bound], callbacks=[on_message], accept=accept,
                                  on_decode_error=drop_undecodable):
                        self.ready.set()
                        while not self._stop.is_set():
                            try:
                                conn.drain_events(timeout=0.5)
                            except socket.timeout:
                                pass
                    try:
                        bound.delete()
                    except Exception:  # noqa: BLE001 - cleanup only
                        pass
            except Exception as exc:  # noqa: BLE001 - the broker went away: try again
                self.ready.clear()
                log.warning("maintenance listener: %s; reconnecting", first_line(exc))
                self._stop.wait(1.0)


def _redis_client(conn: Any) -> Any:
    try:
        return conn.default_channel.client
    except Exception:  # noqa: BLE001 - not Redis (the in-memory broker)
        return None


# -- the client side: address, send, gather -------------------------------------------------------------
def address(hardware: str | None, worker: str | None) -> tuple[str, str]:
    """(routing key, what it addresses) for ``--hardware`` or ``--worker``; exactly one is given."""
    if bool(hardware) == bool(worker):
        raise DtfError("address the task with exactly one of --hardware KIND and --worker NAME")
    if worker:
        return route_for_worker(worker), f"worker {worker}"
    assert hardware is not None
    queue = queue_for(hardware) if hardware in HARDWARE_KINDS else hardware
    if not queue.startswith("dtf."):
        raise DtfError(f"--hardware: {hardware!r} is neither a hardware kind ({', '.join(HARDWARE_KINDS)}) nor a dtf.* queue")
    return route_for_queue(queue), queue


def _known_workers(app: DtfApp, hardware: str | None, worker: str | None) -> set[str] | None:
    """The workers the coordinator knows online for this address; None when it cannot say."""
    if worker:
        return {worker}
    from .client import CoordinatorClient

    queue = address(hardware, None)[1]
    try:
        rows = CoordinatorClient(app, timeout_s=5.0).call("workers")
    except DtfError as exc:
        log.warning("cannot ask the coordinator which workers serve %s (%s): waiting the whole timeout", queue, exc)
        return None
    return {str(r["worker_id"]) for r in rows or [] if r.get("state") != "offline" and queue in (r.get("queues") or [])}


def check_params(kind: str, params: Mapping[str, Any]) -> TaskKind:
    if kind not in TASK_KINDS:
        raise DtfError(f"unknown task {kind!r} (known: {', '.join(sorted(TASK_KINDS))}; see `dtf tasks list`)")
    found = TASK_KINDS[kind]
    extra = [p for p in params if p not in found.params]
    if extra:
        takes = ", ".join(found.params) or "no parameters"
        raise DtfError(f"{kind}: unknown parameter {', '.join(extra)} (it takes {takes})")
    return found


def run_task(app: DtfApp, kind: str, params: Mapping[str, Any], *, hardware: str | None = None,
             worker: str | None = None, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """Send ``kind`` to the addressed workers; one row per worker: worker, status (ok, failed,
    no answer), summary, details, duration. Sorted by worker id."""
    check_params(kind, params)
    route, target = address(hardware, worker)
    expected = _known_workers(app, hardware, worker)
    if expected is not None and not expected:
        raise DtfError(f"no online worker serves {target} (see `dtf workers`)")
    serializer, accept = wire_format(app)
    refused: list[str] = []
    conn = app.connection_for_write()
    try:
        conn.ensure_connection(max_retries=1, interval_start=0.2, interval_step=0.2, timeout=5)
    except Exception as exc:  # noqa: BLE001 - kombu raises many kinds
        conn.release()
        raise DtfError(f"cannot reach broker {app.settings.safe_broker}: {first_line(exc)}") from None
    with conn:
        answers = broadcast(conn, request_body(kind, params, timeout_s=timeout_s), route, serializer=serializer,
                            accept=accept, timeout_s=timeout_s, max_bytes=app.settings.max_payload_bytes,
                            expected=expected, check_reply=maintenance_reply_from_wire, on_refused=refused.append)
    for reason in refused:
        log.warning("refused a maintenance reply: %s", reason)
    rows: list[dict[str, Any]] = []
    for wid in sorted(set(expected or ()) | answers.keys()):
        got = answers.get(wid)
        if got is None:
            rows.append({"worker_id": wid, "status": "no answer", "summary": f"no answer within {timeout_s:g} s",
                         "details": {}, "duration_s": None, "hostname": ""})
        else:
            rows.append({"worker_id": wid, "status": "ok" if got["ok"] else "failed", "summary": got["summary"],
                         "details": got["details"], "duration_s": got["duration_s"], "hostname": got["hostname"]})
    return rows


def exit_code(rows: Iterable[Mapping[str, Any]]) -> int:
    """0 every addressed worker succeeded; 1 one failed; 2 none answered or one did not answer."""
    statuses = [r["status"] for r in rows]
    if "failed" in statuses:
        return 1
    return 2 if not statuses or "no answer" in statuses else 0
