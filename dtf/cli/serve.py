"""Long-running processes: ``dtf coordinator``, ``worker``, ``worker-health``, ``flower``,
``dashboard``. The worker is assembled by dtf.celery_worker, as in the embedded mode."""

from __future__ import annotations

import threading
from typing import Annotated, Any, Callable, Optional

import typer

from ..errors import DtfError
from ..outcome import EXIT_FAILED
from ..settings import hide_own_secrets, redact_db
from . import common
from .common import BrokerOpt, DataPathOpt, DbOpt, ReadDbOpt, Verbosity, errors_to_exit, info, split


def _check_credentials(settings: Any) -> None:
    from ..app import check_broker_credentials

    check_broker_credentials(settings)  # a wrong password: one line, exit 2, not retries forever


@errors_to_exit
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
    from ..app import make_app
    from ..coordinator import Candidate, Coordinator
    from ..ha import LeaderLock, redis_from_settings

    from ..store import open_store

    settings = common.settings(broker_url=broker, db_path=db, data_path=data_path, leader_ttl_ms=lease_ttl_ms)

    def open_db(spec: str) -> Any:
        return open_store(spec, data_path=settings.data_path or None, password=settings.db_password)

    hide_own_secrets()  # read: out of os.environ and /proc/<pid>/environ
    if settings.embedded:
        raise DtfError("no broker configured: set DTF_BROKER_URL or --broker")
    _check_credentials(settings)
    celery_app = make_app(settings)
    stop = threading.Event()
    if standalone:
        with common.writable_store(settings) as store:
            token = store.max_token() + 1
            info(f"dtf coordinator (standalone, token {token}): broker {settings.safe_broker}, db {settings.safe_db}")
            _serve_until_signal(lambda: Coordinator(celery_app, store, token=lambda: token).serve(stop), stop)
        return
    lock = LeaderLock(lambda: redis_from_settings(settings), node_id=node_id, ttl_ms=settings.leader_ttl_ms)
    info(f"dtf coordinator {lock.node_id}: candidate (lease ttl {lock.ttl_ms} ms), "
         f"broker {settings.safe_broker}, db {settings.safe_db}")
    def leading(token: int) -> None:
        info(f"dtf coordinator {lock.node_id}: leading (fencing token {token})", markup=False)

    _serve_until_signal(lambda: Candidate(celery_app, lock, settings.db_path, open_store=open_db, on_lead=leading).run(stop),
                        stop)


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


@errors_to_exit
def worker(
    broker: BrokerOpt = None,
    queues: Annotated[Optional[str], typer.Option("--queues", "-Q", envvar="DTF_QUEUES", help="Comma list: replaces the detected queues.")] = None,
    tags: Annotated[Optional[str], typer.Option("--tags", envvar="DTF_TAGS", help="Comma list of tags this worker offers (suites ask with requires: {tags: [...]}), e.g. a100,nvlink.")] = None,
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
    pool: Annotated[str, typer.Option("--pool", help="Celery pool: threads (default), prefork or solo.")] = "threads",
    events: Annotated[Optional[bool], typer.Option("--events/--no-events", help="Send Celery task events from the start (env DTF_TASK_EVENTS; Flower switches them on by itself).")] = None,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", envvar="DTF_LOG_LEVEL", help="DEBUG, INFO, WARNING, ERROR or CRITICAL (-q and -v override it).")] = "INFO",
    health_check: Annotated[bool, typer.Option("--health-check/--no-health-check", help="Run a known-answer check per hardware kind before consuming its queues, and again periodically.")] = True,
) -> None:
    """Run a worker that consumes the queues this machine's hardware can serve.

    Example: DTF_BROKER_URL=redis://127.0.0.1:6379/0 dtf worker --tags gpu,cuda --profile benchmark --max-memory-percent 90
    """
    from ..app import make_app
    from ..celery_worker import assemble_worker, check_worker_options
    from ..guard import GuardLimits
    from ..hardware import detect, select_queues, worker_name
    from ..worker import PROFILES, WorkerRuntime

    loglevel = Verbosity.log_level(loglevel)
    settings = common.settings(broker_url=broker, log_level=loglevel, task_events=events)
    hide_own_secrets()  # read: out of os.environ and /proc/<pid>/environ, where tests could look
    if settings.embedded:
        raise DtfError("no broker configured: set DTF_BROKER_URL or --broker (or use `dtf run` for the embedded mode)")
    _check_credentials(settings)
    if profile not in PROFILES:
        raise DtfError(f"--profile: unknown profile {profile!r} (expected one of {', '.join(PROFILES)})")
    for flag, value in (("--max-cpu-percent", max_cpu), ("--max-memory-percent", max_memory), ("--max-gpu-memory-percent", max_gpu_memory)):
        if value is not None and not 0 < value <= 100:
            raise DtfError(f"{flag}: expected a percentage in (0, 100], got {value:g}")
    check_worker_options(pool=pool, loglevel=loglevel, concurrency=concurrency)
    if heartbeat <= 0 or cooldown < 0 or max_rejections < 1:
        raise DtfError("--heartbeat-interval must be positive, --guard-cooldown not negative, --max-rejections at least 1")
    hw = detect()
    queue_list = select_queues(hw, queues=split(queues) or None, tags=split(tags), no_cpu=no_cpu)
    if not queue_list:
        raise DtfError("no queues to consume (check --queues/--tags/--no-cpu)")
    worker_id = worker_name(hw, name)
    extra = tuple(q for q in queue_list if not q.startswith("dtf.") or q.count(".") > 1)
    celery_app = make_app(settings, extra_queues=extra)
    limits = GuardLimits(max_cpu, max_memory, max_gpu_memory, cooldown)
    runtime = WorkerRuntime(celery_app, worker_id=worker_id, queues=queue_list, profile=hw, execution=PROFILES[profile],
                            limits=limits, max_rejections=max_rejections, heartbeat_interval_s=heartbeat,
                            tags=split(tags), health_checks=health_check)
    assembled = assemble_worker(celery_app, runtime, concurrency=concurrency, pool=pool, loglevel=loglevel)
    guard = ", ".join(f"{k.removeprefix('max_').replace('_', ' ')} <= {v:g}" for k, v in limits.to_dict().items() if k.startswith("max_") and v is not None)
    for kind, reason in runtime.routing.unhealthy().items():
        common.err.print(f"warning: {kind} health check failed; not consuming its queues: {reason}", markup=False)
    info(f"{worker_id}: queues {', '.join(queue_list)}; profile {profile}, concurrency {assembled.concurrency}"
         + (f"; guard {guard} (cool-down {cooldown:g} s)" if guard else "")
         + f"; broker {settings.safe_broker}" + (f"; replayed {assembled.replayed} spooled results" if assembled.replayed else ""))
    assembled.serve(settings.state_dir)


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
    from ..state import check_worker_health

    try:
        settings = common.broker_settings(broker)
        if timeout <= 0:
            raise DtfError(f"--timeout: expected a positive number of seconds, got {timeout:g}")
        from ..app import make_app

        verdict = check_worker_health(make_app(settings), settings.state_dir, name=name, timeout_s=timeout)
    except DtfError as exc:
        common.err.print(f"unhealthy: {exc}", markup=False)
        raise typer.Exit(EXIT_FAILED) from None
    if not verdict.healthy:
        common.err.print(f"unhealthy: {verdict.message}", markup=False)
        raise typer.Exit(EXIT_FAILED)
    common.out.print(verdict.message, markup=False)


@errors_to_exit
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

    from ..app import make_app
    from ..flower import WebAuth, basic_auth_from_env, check_exposure, run_flower

    settings = common.broker_settings(broker)
    web_auth = WebAuth(basic_auth_from_env(os.environ), auth, auth_provider)
    warning = check_exposure("Flower", address, port, web_auth)
    if warning:
        common.err.print(f"warning: {warning}; its HTTP API stays off without auth")
    info(f"dtf flower: http://{address}:{port}/ on broker {settings.safe_broker}")
    run_flower(make_app(settings), port=port, address=address, auth=web_auth)


@errors_to_exit
def dashboard(
    broker: BrokerOpt = None,
    port: Annotated[int, typer.Option("--port", help="HTTP port (0: any free one).")] = 8765,
    address: Annotated[str, typer.Option("--address", help="Address to bind; anything but loopback needs auth.")] = "127.0.0.1",
    db: ReadDbOpt = None,
) -> None:
    """Serve a read-only results page: runs and live progress, pass/fail matrix, latency/throughput trends, workers.

    Basic auth comes from DTF_DASHBOARD_BASIC_AUTH(_FILE), else DTF_FLOWER_BASIC_AUTH(_FILE).
    Example: dtf dashboard --port 8765   (then open http://127.0.0.1:8765/)
    """
    import os

    from ..dashboard import DASHBOARD_AUTH_ENV, BrokerSource, CachedSource, DashboardServer, DbSource, dashboard_auth
    from ..flower import check_exposure

    settings = common.settings(broker_url=broker)
    web_auth = dashboard_auth(os.environ)
    warning = check_exposure("the dashboard", address, port, web_auth, auth_env=DASHBOARD_AUTH_ENV)
    if db:
        source: Any = DbSource(db, password=settings.db_password)
    else:
        if settings.embedded:
            raise DtfError("no broker configured: set DTF_BROKER_URL or --broker, or read a file with --db")
        from ..app import make_app
        from ..client import CoordinatorClient

        source = BrokerSource(CoordinatorClient(make_app(settings)))
    try:
        server = DashboardServer(CachedSource(source), address, port, web_auth)
    except OSError as exc:
        raise DtfError(f"cannot listen on {address}:{port}: {exc.strerror}") from None
    if warning:
        common.err.print(f"warning: {warning}")
    info(f"dtf dashboard: {server.url} reading {redact_db(db) if db else settings.safe_broker}")
    try:
        server.serve_forever()
    finally:
        server.server_close()
