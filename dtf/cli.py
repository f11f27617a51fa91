"""The dtf command line: parse arguments, build settings, call the library, print.

The only module that prints and sets exit codes: 0 all passed, 1 a test failed, errored
or timed out, 2 bad input or an infrastructure failure (one line on stderr, no traceback).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional, Sequence, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import DtfError, check_option, check_positive
from .model import FINAL_ORDER, UNFINISHED_ORDER, RenderedTest
from .lakecli import register as register_store_commands
from .settings import EMBEDDED_BROKER, Settings, hide_own_secrets, redact_db
from .state import remove_worker_record, write_worker_record

__all__ = ["app", "main"]

app = typer.Typer(
    name="dtf",
    help="Distributed testing framework for AI models on heterogeneous hardware.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
templates_app = typer.Typer(help="Inspect the test templates.", no_args_is_help=True)
app.add_typer(templates_app, name="templates")
models_app = typer.Typer(help="Real models: what this machine can run, fetch into the HF cache, inspect.", no_args_is_help=True)
app.add_typer(models_app, name="models")

out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


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

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2

BrokerOpt = Annotated[Optional[str], typer.Option("--broker", envvar="DTF_BROKER_URL", help="Broker URL, e.g. redis://127.0.0.1:6379/0.")]
TemplatesOpt = Annotated[Optional[list[Path]], typer.Option("--templates", help="Extra template folder (repeatable).")]
DbOpt = Annotated[Optional[str], typer.Option("--db", envvar="DTF_DB", help="Results store: a DuckDB file, or ducklake:<catalog> (docs/ha.md).")]
DataPathOpt = Annotated[Optional[str], typer.Option("--data-path", envvar="DTF_DATA_PATH", help="A DuckLake store's data folder (shared by every host).")]


def _errors(fn: F) -> F:
    """Turn DtfError into one line on stderr and exit 2; Ctrl-C into exit 130."""

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


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _settings(**overrides: Any) -> Settings:
    settings = Settings.from_env(**overrides)
    _setup_logging(settings.log_level)
    return settings


def _broker_settings(broker: Optional[str], *, db_too: bool = False) -> Settings:
    """Settings for a command that talks to the coordinator: with no broker configured it
    says so at once instead of asking the in-process memory:// broker, where nobody answers."""
    settings = _settings(broker_url=broker)
    if settings.embedded:
        raise DtfError("no broker configured: set DTF_BROKER_URL or --broker"
                       + (", or read a DuckDB file with --db" if db_too else ""))
    return settings


# -- preparing a suite ---------------------------------------------------------------------
def _registry(settings: Settings, templates: Sequence[Path] | None) -> Any:
    from .templates import TemplateRegistry

    roots = [Path(p) for p in settings.template_dirs] + list(templates or [])
    return TemplateRegistry(roots)


def _prepare(suite_path: Path, settings: Settings, templates: Sequence[Path] | None) -> tuple[Any, list[RenderedTest]]:
    """Load, validate, expand and render a suite: every bad-input error surfaces here,
    before anything reaches a broker."""
    from .suite import expand_suite, load_suite, render_suite

    registry = _registry(settings, templates)
    suite = load_suite(suite_path)
    from .models.inspect import with_param_counts  # real parameter counts for memory estimates

    suite = with_param_counts(suite)
    from .testtasks import collect_tests  # `tests:` entries: pytest collection here, at submit

    specs = expand_suite(suite, resolve_template=registry.resolve, collect_tests=collect_tests)
    return suite, render_suite(suite, specs, registry.render)


@contextlib.contextmanager
def _report_store(db: str) -> Iterator[Any]:
    """A DuckDB file given with --db, opened locked down (Store.open_for_reports: no file,
    network or extension access); a query it refuses (a crafted file whose view reads local
    files) or a broken file is one line and exit 2, never a traceback."""
    import duckdb

    from .errors import StoreError
    from .store import open_store

    with open_store(db, reports=True, password=Settings.from_env().db_password) as store:
        try:
            yield store
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"cannot read results database {redact_db(db)}: {first}") from None


def _run_meta(suite: Any) -> dict[str, Any]:
    from .provenance import provenance

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    prov = provenance()
    return {
        "run_id": f"{suite.name}-{stamp}-{uuid.uuid4().hex[:6]}",
        "suite_name": suite.name,
        "suite_hash": suite.source_hash,
        "submitted_at": time.time(),
        "git_sha": prov["git_sha"],
        "branch": prov["branch"],
        "ci_url": prov["ci_url"],
        "info": {"ci_provider": prov["ci_provider"], "suite_path": str(suite.path)},
    }


# -- progress and summaries ------------------------------------------------------------------
def _totals(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for per in counts.values():
        for status, n in per.items():
            totals[status] = totals.get(status, 0) + n
    return totals


def _progress_line(status: dict[str, Any]) -> str:
    """One plain line: overall counts, then per hardware kind."""
    totals = _totals(status["counts"])
    total = sum(totals.values())
    done = sum(totals.get(k, 0) for k in _FINAL)
    parts = [f"{k} {totals[k]}" for k in (*_FINAL, "running", "queued", "pending") if totals.get(k)]
    per_hw = "; ".join(
        f"{hw}: " + " ".join(f"{k}={v}" for k, v in sorted(per.items())) for hw, per in sorted(status["counts"].items())
    )
    refused = f"; {status['refused_messages']} hostile or broken messages refused (see dtf.dead)" \
        if status.get("refused_messages") else ""
    return f"{status['run']['run_id']}: {done}/{total} done, {', '.join(parts)}  [{per_hw}]{refused}"


def _wait(client: Any, run_id: str, timeout_s: float | None, *, interval_s: float = 0.5) -> dict[str, Any]:
    """Follow the run until it finishes or ``timeout_s`` passes, showing it live on a
    terminal (a bar per hardware kind) or as periodic plain lines (no terminal, or ``CI``
    set). Returns the last status; ``status["finished"]`` says which it was.

    Each status query asks the coordinator to hold its answer until the run finishes or
    ``interval_s`` passes: progress refreshes every interval, and the end is seen at once."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    warned: set[str] = set()
    view = _LiveProgress() if _interactive() else _PlainProgress()
    with view:
        while True:
            asked = time.monotonic()
            wait_s = interval_s if deadline is None else max(0.0, min(interval_s, deadline - asked))
            status = client.call("status", run_id=run_id, wait_s=wait_s)
            view.show(status)
            for queue in status.get("idle_queues", []):
                if queue not in warned:
                    warned.add(queue)
                    err.print(f"warning: no worker consumes {queue}; its tests wait until one starts")
            if status["finished"] or (deadline is not None and time.monotonic() >= deadline):
                return status
            time.sleep(max(0.0, interval_s - (time.monotonic() - asked)))  # a coordinator that did not hold it


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


_STATUS_STYLE = {"passed": "green", "failed": "red", "error": "red", "timeout": "magenta", "skipped": "yellow"}


def _print_results(data: dict[str, Any]) -> None:
    from .report.parity import parity_label, source_label

    table = Table(title=f"run {data['run']['run_id']} ({data['run']['suite_name']})")
    for col in ("test", "source", "status", "parity", "time s", "peak MB", "p50 ms", "items/s", "reason"):
        table.add_column(col, overflow="fold")
    for row in data["tests"]:
        m = row.get("metrics") or {}
        style = _STATUS_STYLE.get(row["status"], "")
        parity = parity_label(row)
        table.add_row(
            row["test_id"], source_label(row), f"[{style}]{row['status']}[/{style}]" if style else row["status"],
            f"[red]{parity}[/red]" if parity.startswith("FAIL") else parity,
            _fmt(row.get("duration_s")), _fmt(row.get("peak_memory_mb"), 1), _fmt(m.get("latency_p50_ms")),
            _fmt(m.get("throughput_items_s"), 1), (row.get("reason") or "")[:120],
        )
    out.print(table)
    totals: dict[str, int] = {}
    for row in data["tests"]:
        totals[row["status"]] = totals.get(row["status"], 0) + 1
    out.print("totals: " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())))


def _exit_code(data: dict[str, Any]) -> int:
    failing = {"failed", "error", "timeout"}
    return EXIT_FAILED if any(row["status"] in failing for row in data["tests"]) else EXIT_OK


def _table_or_json(fmt: str) -> None:
    if fmt not in ("table", "json"):
        raise DtfError(f"--format: expected table or json, got {fmt!r}")


def _emit(data: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        from .report.parity import lift

        # source, provenance and parity at each result's top level (dtf.report.parity.lift).
        data = {**data, "tests": [lift(row) for row in data["tests"]]}
        # Plain, not rich's print_json: highlighting a large run's JSON took seconds.
        sys.stdout.write(json.dumps(data, default=str, indent=2) + "\n")
        sys.stdout.flush()
    else:
        _print_results(data)


# -- commands --------------------------------------------------------------------------------
@app.command()
@_errors
def run(
    suite: Annotated[Path, typer.Argument(help="Suite YAML file.")],
    db: DbOpt = None,
    data_path: DataPathOpt = None,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Tests run at the same time.")] = 2,
    templates: TemplatesOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    timeout: Annotated[Optional[float], typer.Option(help="Give up after this many seconds (exit 2).")] = None,
    output_dir: OutputDirOpt = None,
    baseline: BaselineOpt = None,
    fail_on_regression: FailOnRegressionOpt = False,
) -> None:
    """Run a suite here, embedded: in-process broker, coordinator and worker, local DuckDB.

    Example: dtf run examples/smoke.yaml --db results.duckdb --output-dir reports --baseline latest
    """
    _table_or_json(fmt)
    from .app import make_app
    from .client import CoordinatorClient
    from .embedded import EmbeddedCluster
    from .hardware import detect, select_queues

    if workers < 1:
        raise DtfError(f"--workers: expected at least 1, got {workers}")
    baseline = _baseline_choice(baseline, fail_on_regression)
    settings = _settings(broker_url=EMBEDDED_BROKER, db_path=db, data_path=data_path)
    settings = settings.with_overrides(broker_url=EMBEDDED_BROKER, sentinels=())
    parsed, tests = _prepare(suite, settings, templates)
    profile = detect()
    queues = select_queues(profile)
    celery_app = make_app(settings)
    started = time.perf_counter()
    with EmbeddedCluster(celery_app, queues=queues, workers=workers, profile=profile) as cluster:
        client = CoordinatorClient(celery_app)
        _check_baseline(client, baseline)
        run_id = client.submit(_run_meta(parsed), tests)
        err.print(f"run {run_id}: {len(tests)} tests, {workers} workers, queues {', '.join(queues)}, db {settings.safe_db}")
        status_now = _wait(client, run_id, timeout)
        data, report_data = _collect(client, run_id, baseline, output_dir)
        if cluster.error is not None:
            raise DtfError(f"embedded coordinator failed: {cluster.error}")
    _emit(data, fmt)
    err.print(f"wall time {time.perf_counter() - started:.1f} s; results in {settings.safe_db} (run {run_id})")
    raise typer.Exit(_conclude(data, report_data, status_now, timeout, output_dir, fail_on_regression))


def _unserved(client: Any, tests: Sequence[RenderedTest]) -> list[str]:
    """Hardware kinds of these tests whose queue no live worker consumes while others are live."""
    from .model import queue_for

    served = {q for w in client.call("workers") if w.get("state") != "offline" for q in (w.get("queues") or ())}
    if not served:
        return []  # no live worker at all (a cluster starting up): nothing to judge by
    return sorted({t.spec.hardware for t in tests if queue_for(t.spec.hardware) not in served})


def _collect(client: Any, run_id: str, baseline: Optional[str], output_dir: Optional[Path]) -> tuple[Any, Any]:
    """A finished run's results, and its report data when reports or a baseline were asked for."""
    data = client.call("results", run_id=run_id)
    wanted = output_dir or baseline
    report_data = client.call("report", run_id=run_id, baseline=baseline, timeout_s=120) if wanted else None
    return data, report_data


@app.command()
@_errors
def submit(
    suite: Annotated[Path, typer.Argument(help="Suite YAML file.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the run to finish; exit 1 on failures.")] = False,
    timeout: Annotated[Optional[float], typer.Option(help="With --wait: give up after S seconds (exit 2).")] = None,
    broker: BrokerOpt = None,
    templates: TemplatesOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json (with --wait)")] = "table",
    output_dir: OutputDirOpt = None,
    baseline: BaselineOpt = None,
    fail_on_regression: FailOnRegressionOpt = False,
    wait_unserved: Annotated[bool, typer.Option("--wait-unserved", help="With --wait: also wait for hardware no live worker serves (default: its tests are skipped, and named).")] = False,
) -> None:
    """Submit a suite to the coordinator through the broker; --wait watches it to the end.

    With --wait, tests for hardware that no live worker serves (say cuda on a CPU-only
    cluster) are skipped with the reason, so the run finishes; --wait-unserved waits for
    a worker instead.

    With --wait it writes the reports (--output-dir) and exits 0 when all passed, 1 on
    failures (or regressions with --fail-on-regression), 2 on bad input, an
    infrastructure failure or a timeout (naming the tests that never ran).

    Example: DTF_BROKER_URL=redis://127.0.0.1:6379/0 dtf submit examples/smoke.yaml --wait --output-dir reports --baseline latest
    """
    _table_or_json(fmt)
    from .app import make_app
    from .client import CoordinatorClient

    if not wait and (output_dir or baseline or fail_on_regression or timeout is not None):
        raise DtfError("--timeout, --output-dir, --baseline and --fail-on-regression need --wait")
    baseline = _baseline_choice(baseline, fail_on_regression)
    settings = _settings(broker_url=broker)
    if settings.embedded:
        raise DtfError("no broker configured: set DTF_BROKER_URL or --broker (or use `dtf run` for the embedded mode)")
    parsed, tests = _prepare(suite, settings, templates)
    client = CoordinatorClient(make_app(settings))
    _check_baseline(client, baseline)
    meta = _run_meta(parsed)
    client.check_payloads(meta, tests)  # an oversized test is refused before any broker call
    unserved = _unserved(client, tests)
    if unserved:
        count = sum(1 for t in tests if t.spec.hardware in unserved)
        kinds = ", ".join(unserved)
        if wait and not wait_unserved:
            meta["info"]["skip_hardware"] = unserved
            err.print(f"warning: no live worker serves {kinds}: its {count} tests are skipped (--wait-unserved waits for one)")
        else:
            err.print(f"warning: no live worker serves {kinds}: its {count} tests wait until one starts")
    run_id = client.submit(meta, tests)
    out.print(run_id)
    if not wait:
        return
    try:
        status_now = _wait(client, run_id, timeout)
    except KeyboardInterrupt:
        err.print(f"stopped watching; the run goes on. Resume with: dtf status {run_id} --wait")
        raise typer.Exit(130) from None
    data, report_data = _collect(client, run_id, baseline, output_dir)
    _emit(data, fmt)
    raise typer.Exit(_conclude(data, report_data, status_now, timeout, output_dir, fail_on_regression))


@app.command()
@_errors
def status(
    run_id: Annotated[str, typer.Argument(help="Run id printed by submit.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the run finishes.")] = False,
    timeout: Annotated[Optional[float], typer.Option(help="With --wait: give up after S seconds (exit 2).")] = None,
    broker: BrokerOpt = None,
) -> None:
    """Show a run's progress per hardware; with --wait, watch it until it finishes.

    Example: dtf status smoke-20261129-180000-abc123 --wait
    """
    from .app import make_app
    from .client import CoordinatorClient

    client = CoordinatorClient(make_app(_broker_settings(broker)))
    st = _wait(client, run_id, timeout) if wait else client.call("status", run_id=run_id)
    out.print(_progress_line(st), markup=False)
    out.print(f"state: {st['run']['status']}")
    if wait and not st["finished"]:
        data = client.call("results", run_id=run_id)
        err.print(_timeout_message(timeout, run_id, data["tests"]))
        raise typer.Exit(EXIT_ERROR)
    if st["finished"]:
        raise typer.Exit(EXIT_FAILED if st["run"]["status"] == "failed" else EXIT_OK)


@app.command()
@_errors
def results(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    broker: BrokerOpt = None,
    db: Annotated[Optional[str], typer.Option("--db", help="Read this DuckDB file directly instead of asking the coordinator.")] = None,
) -> None:
    """Show one row per test of a run, from the coordinator or straight from a DuckDB file.

    Example: dtf results RUN_ID --format json
    """
    _table_or_json(fmt)
    if db:
        with _report_store(db) as store:
            run_row = store.run(run_id)
            if run_row is None:
                raise DtfError(f"unknown run {run_id!r} in {redact_db(db)}")
            data = {"run": run_row, "tests": store.final_results(run_id)}
    else:
        from .app import make_app
        from .client import CoordinatorClient

        data = CoordinatorClient(make_app(_broker_settings(broker, db_too=True))).call("results", run_id=run_id)
    _emit(data, fmt)
    raise typer.Exit(_exit_code(data))


@app.command()
@_errors
def coordinator(
    db: DbOpt = None,
    data_path: DataPathOpt = None,
    broker: BrokerOpt = None,
    standalone: Annotated[bool, typer.Option("--standalone", help="Lead at once, without the leader lock (one coordinator only).")] = False,
    node_id: Annotated[Optional[str], typer.Option("--node-id", help="Name in the leader lock (default host-pid-random).")] = None,
    lease_ttl_ms: Annotated[Optional[int], typer.Option("--lease-ttl-ms", envvar="DTF_LEADER_TTL_MS", help="Leader lease ttl; renewed every ttl/3.")] = None,
) -> None:
    """Run a coordinator: stands by until it holds the leader lock, then owns the DuckDB file,
    ingests results and dispatches tests. Run two on the host that holds the file for HA.

    Example: DTF_SENTINELS=s1:26379,s2:26379,s3:26379 dtf coordinator --db /var/lib/dtf/dtf.duckdb
    """
    from .app import make_app
    from .coordinator import Candidate, Coordinator
    from .ha import LeaderLock, redis_from_settings
    from .store import open_store

    settings = _settings(broker_url=broker, db_path=db, data_path=data_path, leader_ttl_ms=lease_ttl_ms)

    def open_db(spec: str) -> Any:
        return open_store(spec, data_path=settings.data_path or None, password=settings.db_password)

    hide_own_secrets()  # read: out of os.environ and /proc/<pid>/environ
    if not settings.embedded:
        from .app import check_broker_credentials

        check_broker_credentials(settings)  # a wrong password: one line, exit 2, not retries forever
    if settings.embedded:
        raise DtfError("no broker configured: set DTF_BROKER_URL or --broker")
    celery_app = make_app(settings)
    stop = threading.Event()
    if standalone:
        with open_db(settings.db_path) as store:
            token = store.max_token() + 1
            err.print(f"dtf coordinator (standalone, token {token}): broker {settings.safe_broker}, db {settings.safe_db}")
            _serve_until_signal(lambda: Coordinator(celery_app, store, token=lambda: token).serve(stop), stop)
        return
    lock = LeaderLock(lambda: redis_from_settings(settings), node_id=node_id, ttl_ms=settings.leader_ttl_ms)
    err.print(f"dtf coordinator {lock.node_id}: candidate (lease ttl {lock.ttl_ms} ms), "
              f"broker {settings.safe_broker}, db {settings.safe_db}")
    _serve_until_signal(lambda: Candidate(celery_app, lock, settings.db_path, open_store=open_db).run(stop), stop)


def _serve_until_signal(serve: Callable[[], None], stop: threading.Event) -> None:
    import signal

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        serve()
    except DtfError:
        raise
    except Exception as exc:  # noqa: BLE001 - broker errors from kombu/redis
        raise DtfError(f"coordinator stopped: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


@app.command()
@_errors
def worker(
    broker: BrokerOpt = None,
    queues: Annotated[Optional[str], typer.Option("--queues", "-Q", envvar="DTF_QUEUES", help="Comma list: replaces the detected queues.")] = None,
    tags: Annotated[Optional[str], typer.Option("--tags", envvar="DTF_TAGS", help="Comma list of extra tags/queues, e.g. gpu,cuda.")] = None,
    no_cpu: Annotated[bool, typer.Option("--no-cpu", help="Do not consume dtf.cpu.")] = False,
    name: Annotated[Optional[str], typer.Option("--name", "-n", envvar="DTF_WORKER_NAME", help="Worker name (default dtf-<kinds>@<host>).")] = None,
    concurrency: Annotated[Optional[int], typer.Option("--concurrency", "-c", envvar="DTF_CONCURRENCY", help="Tests at the same time (default: from --profile).")] = None,
    profile: Annotated[str, typer.Option("--profile", envvar="DTF_PROFILE", help="benchmark (one test per device), test, or light (many short tests).")] = "test",
    max_cpu: Annotated[Optional[float], typer.Option("--max-cpu-percent", envvar="DTF_MAX_CPU_PERCENT", help="Take no new tests while CPU use is above this.")] = None,
    max_memory: Annotated[Optional[float], typer.Option("--max-memory-percent", envvar="DTF_MAX_MEMORY_PERCENT", help="Take no new tests while memory use is above this.")] = None,
    max_gpu_memory: Annotated[Optional[float], typer.Option("--max-gpu-memory-percent", envvar="DTF_MAX_GPU_MEMORY_PERCENT", help="Take no new tests while any GPU's memory use is above this.")] = None,
    cooldown: Annotated[float, typer.Option("--guard-cooldown", envvar="DTF_GUARD_COOLDOWN", help="Seconds below every limit before taking tests again.")] = 30.0,
    max_rejections: Annotated[int, typer.Option("--max-rejections", envvar="DTF_MAX_REJECTIONS", help="A test too big for the workers that take it fails after this many hand-backs.")] = 5,
    heartbeat: Annotated[float, typer.Option("--heartbeat-interval", envvar="DTF_HEARTBEAT_INTERVAL", help="Seconds between heartbeats to the coordinator.")] = 10.0,
    pool: Annotated[str, typer.Option("--pool", help="Celery pool: threads (default) or prefork.")] = "threads",
    events: Annotated[Optional[bool], typer.Option("--events/--no-events", help="Send Celery task events from the start (env DTF_TASK_EVENTS; Flower switches them on by itself).")] = None,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", envvar="DTF_LOG_LEVEL")] = "INFO",
) -> None:
    """Run a worker that consumes the queues this machine's hardware can serve.

    Example: DTF_BROKER_URL=redis://127.0.0.1:6379/0 dtf worker --tags gpu,cuda --profile benchmark --max-memory-percent 90
    """
    from .app import make_app
    from .guard import GuardLimits
    from .hardware import detect, select_queues, worker_name
    from .worker import PROFILES, WorkerRuntime

    settings = _settings(broker_url=broker, log_level=loglevel, task_events=events)
    hide_own_secrets()  # read: out of os.environ and /proc/<pid>/environ, where tests could look
    if not settings.embedded:
        from .app import check_broker_credentials

        check_broker_credentials(settings)  # a wrong password: one line, exit 2, not retries forever
    if settings.embedded:
        raise DtfError("no broker configured: set DTF_BROKER_URL or --broker (or use `dtf run` for the embedded mode)")
    if profile not in PROFILES:
        raise DtfError(f"--profile: unknown profile {profile!r} (expected one of {', '.join(PROFILES)})")
    for flag, value in (("--max-cpu-percent", max_cpu), ("--max-memory-percent", max_memory), ("--max-gpu-memory-percent", max_gpu_memory)):
        if value is not None and not 0 < value <= 100:
            raise DtfError(f"{flag}: expected a percentage in (0, 100], got {value:g}")
    if concurrency is not None and concurrency < 1:
        raise DtfError(f"--concurrency: expected at least 1, got {concurrency}")
    if heartbeat <= 0 or cooldown < 0 or max_rejections < 1:
        raise DtfError("--heartbeat-interval must be positive, --guard-cooldown not negative, --max-rejections at least 1")
    hw = detect()
    queue_list = select_queues(hw, queues=_split(queues) or None, tags=_split(tags), no_cpu=no_cpu)
    if not queue_list:
        raise DtfError("no queues to consume (check --queues/--tags/--no-cpu)")
    worker_id = worker_name(hw, name)
    extra = tuple(q for q in queue_list if not q.startswith("dtf.") or q.count(".") > 1)
    celery_app = make_app(settings, extra_queues=extra)
    execution = PROFILES[profile]
    celery_app.conf.worker_prefetch_multiplier = execution.prefetch_multiplier
    limits = GuardLimits(max_cpu, max_memory, max_gpu_memory, cooldown)
    runtime = WorkerRuntime(celery_app, worker_id=worker_id, queues=queue_list, profile=hw, execution=execution,
                            limits=limits, max_rejections=max_rejections, heartbeat_interval_s=heartbeat)
    runtime.install()
    if limits.active:
        celery_app.steps["consumer"].add(runtime.consumer_step())
    replayed = runtime.replay_spool()
    concurrency = concurrency or runtime.concurrency
    runtime.concurrency = concurrency
    guard = ", ".join(f"{k.removeprefix('max_').replace('_', ' ')} <= {v:g}" for k, v in limits.to_dict().items() if k.startswith("max_") and v is not None)
    err.print(f"{worker_id}: queues {', '.join(queue_list)}; profile {profile}, concurrency {concurrency}"
              + (f"; guard {guard} (cool-down {cooldown:g} s)" if guard else "")
              + f"; broker {settings.safe_broker}" + (f"; replayed {replayed} spooled results" if replayed else ""))
    stop = threading.Event()
    beats = threading.Thread(target=runtime.heartbeat_forever, args=(stop,), daemon=True, name="dtf-heartbeat")
    beats.start()
    try:
        record = write_worker_record(settings.state_dir, worker_id, queue_list)  # for `dtf worker-health`
    except OSError as exc:
        raise DtfError(f"DTF_STATE_DIR {settings.state_dir}: cannot write: {exc.strerror or exc}") from None
    try:
        celery_app.Worker(
            hostname=worker_id, queues=queue_list, concurrency=concurrency, pool=pool,
            loglevel=loglevel, without_mingle=True, without_gossip=True, quiet=True,
        ).start()
    finally:
        remove_worker_record(record)
        stop.set()
        beats.join(timeout=5)  # lets the last heartbeat say "offline"


@app.command("worker-health")
def worker_health(
    name: Annotated[Optional[str], typer.Option("--name", "-n", envvar="DTF_WORKER_NAME", help="Check this worker (default: every worker running here).")] = None,
    broker: BrokerOpt = None,
    timeout: Annotated[float, typer.Option("--timeout", envvar="DTF_HEALTH_TIMEOUT", help="Seconds to wait for the worker's answer.")] = 10.0,
) -> None:
    """Check that the worker(s) running here are alive and answer through the broker.

    What the container HEALTHCHECK, the compose health check and the Kubernetes
    livenessProbe run. Exit 0: healthy; 1: no worker here, its process is gone, or it did not
    answer a ping through the broker within --timeout (also a bad setting: Docker reserves 2).

    Example: dtf worker-health --timeout 5
    """
    from .state import check_worker_health

    try:
        settings = _settings(broker_url=broker)
        if settings.embedded:
            raise DtfError("no broker configured: set DTF_BROKER_URL or --broker")
        if timeout <= 0:
            raise DtfError(f"--timeout: expected a positive number of seconds, got {timeout:g}")
        from .app import make_app

        verdict = check_worker_health(make_app(settings), settings.state_dir, name=name, timeout_s=timeout)
    except DtfError as exc:
        err.print(f"unhealthy: {exc}", markup=False)
        raise typer.Exit(EXIT_FAILED) from None
    if not verdict.healthy:
        err.print(f"unhealthy: {verdict.message}", markup=False)
        raise typer.Exit(EXIT_FAILED)
    out.print(verdict.message, markup=False)


def _split(value: Optional[str]) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@app.command()
@_errors
def detect(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Detect this machine's platform and hardware and the queues a worker here would serve.

    Example: dtf detect --json
    """
    from .hardware import detect as detect_hw, format_profile, select_queues

    profile = detect_hw()
    if as_json:
        out.print_json(json.dumps({**profile.to_dict(), "queues": select_queues(profile)}))
        return
    table = Table(title="dtf detect", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    for label, value in format_profile(profile):
        table.add_row(label, value)
    table.add_row("queues", ", ".join(select_queues(profile)))
    out.print(table)


@app.command("workers")
@_errors
def workers_cmd(
    broker: BrokerOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Keep the table on screen, refreshed.")] = False,
    interval: Annotated[float, typer.Option("--interval", help="With --watch: seconds between refreshes.")] = 2.0,
) -> None:
    """List the workers the coordinator knows: state, health, queues, tests running, last heartbeat.

    A worker silent for 45 s (or three of its heartbeat intervals) shows as offline.
    Example: dtf workers --watch
    """
    _table_or_json(fmt)
    from .app import make_app
    from .client import CoordinatorClient

    client = CoordinatorClient(make_app(_broker_settings(broker)))
    if fmt == "json":
        out.print_json(json.dumps(client.call("workers"), default=str))
        return
    if not watch:
        out.print(_workers_table(client.call("workers"), time.time()))
        return
    from rich.live import Live

    try:
        if not out.is_terminal:  # a pipe or a log file: one table per refresh, appended
            while True:
                out.print(_workers_table(client.call("workers"), time.time()))
                time.sleep(max(interval, 0.2))
        with Live(_workers_table(client.call("workers"), time.time()), console=out, auto_refresh=False) as live:
            while True:
                time.sleep(max(interval, 0.2))
                live.update(_workers_table(client.call("workers"), time.time()), refresh=True)
    except KeyboardInterrupt:
        return


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago" if seconds < 7200 else f"{seconds / 3600:.0f}h ago"


def _gpu_cell(gpus: Sequence[dict[str, Any]]) -> str:
    return " ".join(f"{g.get('index', '?')}:{_fmt(g.get('utilization_percent'), 0)}%/{_fmt(g.get('memory_percent'), 0)}%"
                    for g in gpus) or "-"


_STATE_STYLE = {"online": "green", "constrained": "yellow", "offline": "red"}


def _workers_table(rows: Sequence[dict[str, Any]], now: float) -> Table:
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
        table.add_row(
            w["worker_id"], w.get("hostname") or "", shown + (f" ({reasons})" if reasons and state == "constrained" else ""),
            ", ".join(w.get("queues") or []), ", ".join((w.get("hardware") or {}).get("model_sources") or []) or "-",
            _fmt(h.get("cpu_percent"), 0), _fmt(h.get("memory_percent"), 0),
            _fmt((h.get("load") or [None])[0]), _fmt(h.get("disk_free_gb"), 1), _gpu_cell(h.get("gpus") or []),
            _fmt(h.get("running")), h.get("profile") or "-",
            _age(now - float(w["last_seen"])) if w.get("last_seen") else "-",
        )
    return table


@app.command()
@_errors
def flower(
    broker: BrokerOpt = None,
    port: Annotated[int, typer.Option("--port", help="HTTP port.")] = 5555,
    address: Annotated[str, typer.Option("--address", help="Address to bind; anything but loopback needs auth.")] = "127.0.0.1",
    auth: Annotated[Optional[str], typer.Option("--auth", help="Flower OAuth: regex of e-mails allowed (with --auth-provider and FLOWER_OAUTH2_* variables).")] = None,
    auth_provider: Annotated[Optional[str], typer.Option("--auth-provider", help="Flower OAuth provider class, e.g. flower.views.auth.GithubLoginHandler.")] = None,
) -> None:
    """Start Flower on the dtf broker: live tasks and workers (results are in `dtf dashboard`).

    Basic auth comes from DTF_FLOWER_BASIC_AUTH or DTF_FLOWER_BASIC_AUTH_FILE (user:password).
    Example: DTF_FLOWER_BASIC_AUTH_FILE=/etc/dtf/flower.auth dtf flower --address 0.0.0.0 --port 5555
    """
    import os

    from .app import make_app
    from .flower import WebAuth, basic_auth_from_env, check_exposure, run_flower

    settings = _settings(broker_url=broker)
    if settings.embedded:
        raise DtfError("no broker configured: set DTF_BROKER_URL or --broker")
    web_auth = WebAuth(basic_auth_from_env(os.environ), auth, auth_provider)
    warning = check_exposure("Flower", address, port, web_auth)
    if warning:
        err.print(f"warning: {warning}; its HTTP API stays off without auth")
    err.print(f"dtf flower: http://{address}:{port}/ on broker {settings.safe_broker}")
    run_flower(make_app(settings), port=port, address=address, auth=web_auth)


@app.command()
@_errors
def dashboard(
    broker: BrokerOpt = None,
    port: Annotated[int, typer.Option("--port", help="HTTP port (0: any free one).")] = 8765,
    address: Annotated[str, typer.Option("--address", help="Address to bind; anything but loopback needs auth.")] = "127.0.0.1",
    db: Annotated[Optional[str], typer.Option("--db", help="Read this DuckDB file (read-only) instead of asking the coordinator.")] = None,
) -> None:
    """Serve a read-only results page: runs and live progress, pass/fail matrix, latency/throughput trends, workers.

    Basic auth comes from DTF_DASHBOARD_BASIC_AUTH(_FILE), else DTF_FLOWER_BASIC_AUTH(_FILE).
    Example: dtf dashboard --port 8765   (then open http://127.0.0.1:8765/)
    """
    import os

    from .dashboard import BrokerSource, CachedSource, DashboardServer, DbSource, DASHBOARD_AUTH_ENV, dashboard_auth
    from .flower import check_exposure

    settings = _settings(broker_url=broker)
    web_auth = dashboard_auth(os.environ)
    warning = check_exposure("the dashboard", address, port, web_auth, auth_env=DASHBOARD_AUTH_ENV)
    if db:
        source: Any = DbSource(db, password=settings.db_password)
    else:
        if settings.embedded:
            raise DtfError("no broker configured: set DTF_BROKER_URL or --broker, or read a file with --db")
        from .app import make_app
        from .client import CoordinatorClient

        source = BrokerSource(CoordinatorClient(make_app(settings)))
    try:
        server = DashboardServer(CachedSource(source), address, port, web_auth)
    except OSError as exc:
        raise DtfError(f"cannot listen on {address}:{port}: {exc.strerror}") from None
    if warning:
        err.print(f"warning: {warning}")
    err.print(f"dtf dashboard: {server.url} reading {redact_db(db) if db else settings.safe_broker}")
    try:
        server.serve_forever()
    finally:
        server.server_close()


@app.command("deploy-script")
@_errors
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
) -> None:
    """Write the scripts that install and start a worker on a platform (no secrets in clear).

    Example: dtf deploy-script --platform linux --out ./deploy --broker redis://redis.internal:6379/0 --tags gpu,cuda
    """
    from .deploy import load_host_profile, render_deploy, render_profile, split_broker_url

    settings = _settings()
    if broker and split_broker_url(broker).had_password:
        err.print("note: the password in the broker URL was not written; put it in the file named by DTF_REDIS_PASSWORD_FILE")
    if host_profile:
        files = render_profile(load_host_profile(host_profile), out_dir, broker=broker, platform=platform,
                               sentinels=settings.sentinels, prefix=prefix, install_source=install_source)
    else:
        files = render_deploy(platform, out_dir, broker=broker, name=name, tags=_split(tags), queues=_split(queues),
                              gpu=gpu, sentinels=settings.sentinels, concurrency=concurrency, profile=profile,
                              prefix=prefix, install_source=install_source)
    for path in files:
        out.print(str(path))


@templates_app.command("list")
@_errors
def templates_list(templates: TemplatesOpt = None) -> None:
    """List templates with their families, hardware and parameters.

    Example: dtf templates list
    """
    registry = _registry(_settings(), templates)
    table = Table(title="templates")
    for col in ("name", "families", "hardware", "parameters", "description"):
        table.add_column(col, overflow="fold")
    for info in registry.list():
        table.add_row(info.name, ", ".join(info.families), ", ".join(info.hardware),
                      ", ".join(f"{k}={v.get('default') if isinstance(v, dict) else v}" for k, v in info.parameters.items()),
                      info.description)
    out.print(table)


@templates_app.command("render")
@_errors
def templates_render(
    name: Annotated[str, typer.Argument(help="Template name, e.g. text_embedding/cpu.")],
    model: Annotated[str, typer.Option("--model")] = "example-model",
    hardware: Annotated[str, typer.Option("--hardware")] = "cpu",
    batch_size: Annotated[int, typer.Option("--batch-size")] = 1,
    precision: Annotated[str, typer.Option("--precision")] = "fp32",
    templates: TemplatesOpt = None,
) -> None:
    """Render one template to stdout as the worker would run it.

    Example: dtf templates render text_embedding/cpu --model bert-base-uncased --batch-size 4
    """
    from .model import HARDWARE_KINDS, PRECISIONS, TestSpec
    from .suite import detect_family

    check_option("--hardware", hardware, HARDWARE_KINDS, "hardware")
    check_option("--precision", precision, PRECISIONS, "precision")
    check_positive("--batch-size", batch_size)
    registry = _registry(_settings(), templates)
    spec = TestSpec(test_id=f"{model}/{hardware}/bs{batch_size}/{precision}", model=model,
                    family=detect_family(model), hardware=hardware, batch_size=batch_size,
                    precision=precision, template=name)
    sys.stdout.write(registry.render(spec).source)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@models_app.command("list")
@_errors
def models_list(as_json: JsonOpt = False) -> None:
    """What this machine can run: model sources and their packages, ONNX providers, the HF cache.

    Example: dtf models list
    """
    from .models.commands import list_models

    raise typer.Exit(list_models(out, as_json=as_json))


@models_app.command("fetch")
@_errors
def models_fetch(
    name: Annotated[str, typer.Argument(help="Hub id, e.g. prajjwal1/bert-tiny.")],
    revision: Annotated[Optional[str], typer.Option("--revision", help="Branch, tag or commit.")] = None,
) -> None:
    """Download a model into the Hugging Face cache (needs the network; exit 2 offline).

    Example: dtf models fetch prajjwal1/bert-tiny
    """
    from .models.commands import fetch_model

    raise typer.Exit(fetch_model(out, name, revision=revision))


@models_app.command("inspect")
@_errors
def models_inspect(
    name: Annotated[str, typer.Argument(help="Model name or hub id.")],
    source: Annotated[str, typer.Option("--source", help="hf or timm.")] = "hf",
    weights: Annotated[str, typer.Option("--weights", help="pretrained (config from path or cache) or random (else defaults).")] = "pretrained",
    path: Annotated[Optional[str], typer.Option("--path", help="A save_pretrained folder.")] = None,
    revision: Annotated[Optional[str], typer.Option("--revision")] = None,
    task: Annotated[str, typer.Option("--task")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch for the scheduler's estimate.")] = 1,
    hardware: Annotated[str, typer.Option("--hardware", help="Hardware for the scheduler's estimate.")] = "cpu",
    as_json: JsonOpt = False,
) -> None:
    """Architecture, parameter count and memory per precision, on torch's meta device (no weights).

    Example: dtf models inspect bert-base-uncased --weights random
    """
    from .models.commands import inspect_command

    raise typer.Exit(inspect_command(out, name, source=source, weights=weights, path=path, revision=revision, task=task,
                                     batch_size=batch_size, hardware=hardware, as_json=as_json))


@app.command()
def version() -> None:
    """Print the dtf version."""
    out.print(__version__)


@app.command()
@_errors
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
    from .signing import default_key_file, generate_key, key_id, read_key_file, write_key_file

    path = out_file or default_key_file()
    old = read_key_file(path) if rotate and path.exists() else ()
    if path.exists() and not (force or rotate):
        raise DtfError(f"{path} exists: --rotate to add a new signing key, --force to replace it")
    key = generate_key()
    write_key_file(path, [key, *old], replace=True)
    out.print(str(path))
    err.print(f"signing key {key_id(key)} written to {path}" + (f"; {len(old)} older key(s) still verify" if old else ""))


# -- submit-and-wait: progress, reports, verdicts ---------------------------------------------
OutputDirOpt = Annotated[Optional[Path], typer.Option("--output-dir", help="Write report.json, report.md, report.html and junit.xml here.")]
BaselineOpt = Annotated[Optional[str], typer.Option("--baseline", help="Compare performance with this run id, or 'latest' (the latest earlier run of the same suite per hardware).")]
FailOnRegressionOpt = Annotated[bool, typer.Option("--fail-on-regression", help="Exit 1 when a performance regression is flagged (implies --baseline latest).")]
_FINAL = tuple(s.value for s in FINAL_ORDER)
_UNFINISHED = tuple(s.value for s in UNFINISHED_ORDER)
_PLAIN_EVERY_S = 5.0  # at most one plain progress line this often while it changes
_PLAIN_HEARTBEAT_S = 30.0  # and one anyway this often, so CI logs show the wait is alive


def _interactive() -> bool:
    """A live progress bar only on a terminal outside CI; plain lines otherwise."""
    import os

    return err.is_terminal and not os.environ.get("CI")


class _PlainProgress:
    """Progress as plain lines on stderr: when it changes (at most every few seconds), as
    a heartbeat when it does not, and always the last one."""

    def __init__(self) -> None:
        self.last_line, self.last_print = "", 0.0

    def __enter__(self) -> "_PlainProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def show(self, status: dict[str, Any]) -> None:
        line, now = _progress_line(status), time.monotonic()
        due = now - self.last_print >= (_PLAIN_EVERY_S if line != self.last_line else _PLAIN_HEARTBEAT_S)
        if due or (status["finished"] and line != self.last_line):
            err.print(line, markup=False)
            self.last_line, self.last_print = line, now


class _LiveProgress:
    """A rich progress bar per hardware kind: done of total, and passed, failed, running,
    queued counts."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description:>7}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[summary]}"), TimeElapsedColumn(), console=err, transient=False,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> "_LiveProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def show(self, status: dict[str, Any]) -> None:
        for hw, per in sorted(status["counts"].items()):
            total, done = sum(per.values()), sum(per.get(k, 0) for k in _FINAL)
            failed = sum(per.get(k, 0) for k in ("failed", "error", "timeout"))
            summary = (f"[green]{per.get('passed', 0)} passed[/] [red]{failed} failed[/] "
                       f"[cyan]{per.get('running', 0)} running[/] {per.get('queued', 0) + per.get('pending', 0)} queued"
                       + (f" [yellow]{per['skipped']} skipped[/]" if per.get("skipped") else ""))
            if hw not in self.tasks:
                self.tasks[hw] = self.progress.add_task(hw, total=total, summary=summary)
            self.progress.update(self.tasks[hw], total=total, completed=done, summary=summary)


def _baseline_choice(baseline: Optional[str], fail_on_regression: bool) -> Optional[str]:
    """--fail-on-regression with no --baseline compares with the latest earlier run."""
    if baseline is not None and not baseline.strip():
        raise DtfError("--baseline: give a run id or 'latest'")
    return baseline or ("latest" if fail_on_regression else None)


def _check_baseline(client: Any, baseline: Optional[str]) -> None:
    """An explicit baseline run must exist: fail before submitting, not after the run."""
    if baseline and baseline != "latest":
        try:
            client.call("status", run_id=baseline)
        except DtfError as exc:
            raise DtfError(f"--baseline {baseline}: {exc}") from None


def _never_ran(tests: Sequence[dict[str, Any]]) -> list[str]:
    return [t["test_id"] for t in tests if t["status"] in _UNFINISHED]


def _timeout_message(timeout_s: Optional[float], run_id: str, tests: Sequence[dict[str, Any]]) -> str:
    left = _never_ran(tests)
    shown = ", ".join(left[:20]) + (f" and {len(left) - 20} more" if len(left) > 20 else "")
    return (f"error: timed out after {timeout_s or 0:g} s waiting for run {run_id}: {len(left)} tests never finished"
            + (f": {shown}" if left else "") + f" (the run goes on; resume with `dtf status {run_id} --wait`)")


def _build_report(report_data: dict[str, Any]) -> dict[str, Any]:
    from .report import build_report

    return build_report(report_data["run"], report_data["tests"], baseline=report_data.get("baseline"),
                        dtf_version=__version__)


def _write_reports(doc: dict[str, Any], output_dir: Path, fail_on_regression: bool) -> None:
    from .report import write_reports

    try:
        written = write_reports(doc, output_dir, regressions_fail=fail_on_regression)
    except OSError as exc:
        raise DtfError(f"--output-dir {output_dir}: cannot write reports: {exc.strerror or exc}") from None
    err.print("reports: " + ", ".join(str(p) for p in written.values()))


def _regression_summary(doc: dict[str, Any]) -> Optional[str]:
    comparison = doc.get("comparison")
    if comparison is None:
        return None
    runs = ", ".join(r["run_id"] for r in (doc.get("baseline") or {}).get("runs") or []) or "none found"
    counts = comparison["counts"]
    flagged = [e for e in comparison["entries"] if e["verdict"] == "regression"]
    detail = "; ".join(f"{e['test_id']} {e['change']:+.0%}" + (f" ({e['stack_change']})" if e.get("stack_change") else "")
                       for e in flagged[:10])
    return (f"performance vs baseline {runs}: {counts['regression']} regression(s), {counts['improvement']} improvement(s), "
            f"{counts['unchanged']} unchanged, {counts['noisy']} within noise" + (f" — {detail}" if detail else ""))


def _conclude(
    data: dict[str, Any],
    report_data: Optional[dict[str, Any]],
    status_now: dict[str, Any],
    timeout_s: Optional[float],
    output_dir: Optional[Path],
    fail_on_regression: bool,
) -> int:
    """Write the reports, say what happened, and choose the exit code: 2 when the wait
    timed out (naming the tests that never ran), else the run's verdict."""
    code = _exit_code(data)
    if report_data is not None:
        from .report import exit_code

        doc = _build_report(report_data)
        if output_dir is not None:
            _write_reports(doc, output_dir, fail_on_regression)
        summary = _regression_summary(doc)
        if summary:
            err.print(summary)
        code = exit_code(doc, fail_on_regression=fail_on_regression)
    if not status_now["finished"]:
        err.print(_timeout_message(timeout_s, data["run"]["run_id"], data["tests"]))
        return EXIT_ERROR
    return code


_REPORT_FORMATS = ("json", "md", "html", "junit")


@app.command()
@_errors
def report(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    fmt: Annotated[str, typer.Option("--format", help="json, md, html or junit.")] = "md",
    out_path: Annotated[Optional[Path], typer.Option("--out", help="Write the report to this file instead of stdout.")] = None,
    output_dir: OutputDirOpt = None,
    baseline: BaselineOpt = None,
    fail_on_regression: FailOnRegressionOpt = False,
    broker: BrokerOpt = None,
    db: Annotated[Optional[str], typer.Option("--db", help="Read this DuckDB file (read-only) instead of asking the coordinator.")] = None,
) -> None:
    """Render a run's report as JSON, Markdown, HTML with charts or JUnit XML.

    JSON has everything; Markdown suits CI summaries; the HTML is one self-contained
    file; --output-dir writes all four. Exits with the run's verdict: 0 passed, 1
    failures (or regressions with --fail-on-regression), 2 unfinished.

    Example: dtf report RUN_ID --format html --out report.html --baseline latest
    """
    from .report import exit_code, render

    if fmt not in _REPORT_FORMATS:
        raise DtfError(f"--format: unknown report format {fmt!r} (expected one of {', '.join(_REPORT_FORMATS)})")
    baseline = _baseline_choice(baseline, fail_on_regression)
    if db:
        with _report_store(db) as store:
            report_data = store.report_data(run_id, baseline=baseline)
    else:
        from .app import make_app
        from .client import CoordinatorClient

        client = CoordinatorClient(make_app(_broker_settings(broker, db_too=True)))
        report_data = client.call("report", run_id=run_id, baseline=baseline, timeout_s=120)
    doc = _build_report(report_data)
    if output_dir is not None:
        _write_reports(doc, output_dir, fail_on_regression)
    if out_path is not None:
        try:
            out_path.write_text(render(doc, fmt, regressions_fail=fail_on_regression), encoding="utf-8")
        except OSError as exc:
            raise DtfError(f"--out {out_path}: {exc.strerror or exc}") from None
    elif output_dir is None:
        sys.stdout.write(render(doc, fmt, regressions_fail=fail_on_regression))
    raise typer.Exit(exit_code(doc, fail_on_regression=fail_on_regression))


@app.command("runs")
@_errors
def runs_cmd(
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many, newest first.")] = 20,
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    broker: BrokerOpt = None,
    db: Annotated[Optional[str], typer.Option("--db", help="Read this DuckDB file (read-only) instead of asking the coordinator.")] = None,
) -> None:
    """List recent runs, newest first: the ids to pass to report, status or --baseline.

    Example: dtf runs --limit 5
    """
    _table_or_json(fmt)
    if db:
        with _report_store(db) as store:
            rows = store.runs(limit)
    else:
        from .app import make_app
        from .client import CoordinatorClient

        rows = CoordinatorClient(make_app(_broker_settings(broker, db_too=True))).call("runs", limit=limit)
    if fmt == "json":
        out.print_json(json.dumps(rows, default=str))
        return
    table = Table(title="runs")
    for col in ("run", "suite", "status", "tests", "submitted", "commit", "branch"):
        table.add_column(col, overflow="fold")
    for r in rows:
        when = datetime.fromtimestamp(r["submitted_at"]).strftime("%Y-%m-%d %H:%M:%S") if r.get("submitted_at") else "-"
        table.add_row(r["run_id"], r.get("suite_name") or "", r.get("status") or "", str(r.get("total") or ""),
                      when, (r.get("git_sha") or "")[:10], r.get("branch") or "")
    out.print(table)


register_store_commands(app, _errors)  # dtf export, dtf import (dtf/lakecli.py)


def main() -> None:
    import faulthandler
    import signal

    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 <pid>` dumps every thread's stack: hangs are debuggable
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    app()


if __name__ == "__main__":
    main()
