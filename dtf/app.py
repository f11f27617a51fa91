"""The Celery app: configuration, queues and the one task a worker runs.

A thin adapter: the task decodes its JSON payload, calls the runner, hands the result to
the worker's result publisher, and returns. Everything else lives in the library.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from celery import Celery, Task
from kombu import Exchange, Queue

from .errors import DtfError
from .model import HARDWARE_KINDS, RenderedTest, TestResult, queue_for
from .settings import Settings, tls_options

__all__ = [
    "RUN_TEST",
    "RESULTS_QUEUE",
    "CONTROL_QUEUE",
    "TASK_EXCHANGE",
    "make_app",
    "hardware_queues",
    "broker_connection_args",
    "wire_format",
]

RUN_TEST = "dtf.run_test"
RESULTS_QUEUE = "dtf.results"
CONTROL_QUEUE = "dtf.coordinator"
TASK_EXCHANGE = Exchange("dtf", type="direct", durable=True)

# Called by the task with (payload, task request); set by the worker process at start-up.
TestHandler = Callable[[Mapping[str, Any], Any], None]


def hardware_queues(extra: tuple[str, ...] = ()) -> list[Queue]:
    names = [queue_for(kind) for kind in HARDWARE_KINDS] + [q for q in extra if q]
    return [Queue(name, TASK_EXCHANGE, routing_key=name, durable=True) for name in dict.fromkeys(names)]


def _with_credentials(url: str, settings: Settings) -> str:
    """Put the configured user/password into a redis:// URL that does not carry them."""
    parts = urlsplit(url)
    if not settings.redis_password or parts.password is not None or not parts.scheme.startswith("redis"):
        return url
    user = quote(settings.redis_username or "", safe="")
    host = parts.hostname or "localhost"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{user}:{quote(settings.redis_password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def broker_connection_args(settings: Settings) -> tuple[str, dict[str, Any]]:
    """(broker URL, transport options) for Celery and kombu from one settings object."""
    options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_s}
    if settings.embedded:
        # The in-memory transport polls; 1 s default would add up to a second per message.
        return "memory://localhost/", {"polling_interval": 0.005}
    # A killed worker's unacked tasks come back after the visibility timeout plus one sweep;
    # kombu sweeps only every interval x throttle (10 x 10 s by default), so sweep every 5 s.
    options["unacked_restore_interval"] = 5.0
    options["unacked_restore_throttle"] = 1
    if settings.sentinels:
        url = ";".join(f"sentinel://{hostport}" for hostport in settings.sentinels)
        options["master_name"] = settings.sentinel_master
        # With several Sentinels, one alone must not name the master: a partitioned or stale
        # one would win. A single configured Sentinel has no peers to agree with.
        options["min_other_sentinels"] = 1 if len(settings.sentinels) > 1 else 0
        options["socket_timeout"] = settings.redis_socket_timeout_s
        options["socket_connect_timeout"] = settings.redis_socket_timeout_s
        sentinel_kwargs: dict[str, Any] = {}
        sentinel_password = settings.sentinel_password or settings.redis_password
        if settings.redis_password:
            # Passwords go in kwargs, not the URL: sentinel URL parsing mangles them (kombu#1007).
            options["password"] = settings.redis_password
            if settings.redis_username:
                options["username"] = settings.redis_username
        if sentinel_password:
            sentinel_kwargs["password"] = sentinel_password
            if settings.redis_username:
                sentinel_kwargs["username"] = settings.redis_username
        if sentinel_kwargs:
            options["sentinel_kwargs"] = sentinel_kwargs
        return url, options
    if any(k.lower() == "password" for k, _ in parse_qsl(urlsplit(settings.broker_url).query)):
        # kombu fails on it with a TypeError traceback; say how to do it instead.
        raise DtfError("DTF_BROKER_URL: a password= query parameter is not supported; "
                       "set DTF_REDIS_PASSWORD or DTF_REDIS_PASSWORD_FILE")
    return _with_credentials(settings.broker_url, settings), options


def make_app(settings: Settings, *, extra_queues: tuple[str, ...] = ()) -> Celery:
    """A Celery app for one settings object; never the global current_app."""
    url, transport_options = broker_connection_args(settings)
    if not settings.embedded:
        from .wire import install_transport_guard

        install_transport_guard()  # a malformed item on a Redis list never reaches kombu or Celery
    app = Celery("dtf", broker=url, set_as_current=False)
    tls = tls_options(settings)
    app.conf.update(
        broker_transport_options=transport_options,
        broker_use_ssl=tls,
        broker_connection_retry_on_startup=True,
        broker_pool_limit=10,
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_create_missing_queues=False,  # a queue nobody consumes must be an error, not a hole
        task_queues=hardware_queues(extra_queues),
        task_default_queue=queue_for("cpu"),
        task_default_exchange=TASK_EXCHANGE.name,
        task_default_routing_key=queue_for("cpu"),
        worker_hijack_root_logger=False,
        worker_send_task_events=settings.task_events,
        task_send_sent_event=False,
        worker_enable_remote_control=not settings.embedded,
        broker_connection_timeout=5,
    )
    if settings.embedded:
        app.conf.broker_transport = "dtf.memory_transport:Transport"  # stops in 0.1 s, not 2 s
    app.dtf_settings = settings  # type: ignore[attr-defined]
    app.dtf_handler = None  # type: ignore[attr-defined]
    keys = settings.signing_keys
    if not keys and not settings.embedded:
        from .signing import default_signing_keys

        keys = default_signing_keys(settings)  # signing is on by default (dtf.signing)
    if keys:
        # Signed messages only: an unsigned or forged task is refused before it is decoded.
        signed = _signed_serializer(settings, keys)
        app.conf.update(task_serializer=signed, result_serializer=signed,
                        accept_content=[signed], result_accept_content=[signed])

    if settings.sentinels and settings.redis_password:
        # kombu takes the master's password from the URL or broker_password, never from
        # transport options; sentinel URLs mangle passwords, so set it here.
        app.conf.broker_password = settings.redis_password
        if settings.redis_username:
            app.conf.broker_user = settings.redis_username

    # shared=False: every app made in this process keeps its own task and handler.
    @app.task(name=RUN_TEST, bind=True, acks_late=True, reject_on_worker_lost=True, shared=False)
    def run_test(self: Task, payload: Mapping[str, Any]) -> None:
        # The closure's app, not self.app: tasks of a non-current app may resolve to the default.
        handler: TestHandler | None = getattr(app, "dtf_handler", None)
        if handler is None:
            raise RuntimeError("dtf.run_test reached a process that is not a dtf worker")
        handler(payload, self.request)

    return app


def _signed_serializer(settings: Settings, keys: tuple[str, ...]) -> str:
    from .signing import MessageSigner, register_serializer

    return register_serializer(MessageSigner(keys, max_age_s=settings.signing_max_age_s))


def check_broker_credentials(settings: Settings) -> None:
    """Ask the broker once whether it takes our credentials; BrokerError (one line, exit 2)
    when it refuses them. Celery and the coordinator retry a refused login forever, as if
    the broker were down; a wrong password is not something waiting fixes. An unreachable
    broker passes here: the processes' own retries handle that."""
    import redis

    from .errors import BrokerError
    from .ha import redis_from_settings

    if settings.embedded:
        return
    client = None
    try:
        client = redis_from_settings(settings)
        client.ping()
    except (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
        raise BrokerError(f"broker {settings.safe_broker} refused the credentials: {_one_line(exc)} "
                          "(check DTF_REDIS_PASSWORD / DTF_REDIS_USERNAME)") from None
    except redis.exceptions.ResponseError as exc:
        if any(word in str(exc) for word in ("NOAUTH", "WRONGPASS", "NOPERM", "invalid password")):
            raise BrokerError(f"broker {settings.safe_broker} refused the credentials: {_one_line(exc)} "
                              "(check DTF_REDIS_PASSWORD / DTF_REDIS_USERNAME)") from None
    except Exception:  # noqa: BLE001 - unreachable or failing over: left to the normal retries
        return
    finally:
        if client is not None:
            client.close()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def wire_format(app: Celery) -> tuple[str, list[str]]:
    """(serializer, accepted content) for every message this app's process publishes or
    consumes, tasks, results and control alike: JSON, or dtf-signed when a key is set."""
    return str(app.conf.task_serializer), list(app.conf.accept_content)


def test_payload(run_id: str, attempt: int, test: RenderedTest) -> dict[str, Any]:
    """The JSON body of a run_test task."""
    return {"run_id": run_id, "attempt": attempt, "test": test.to_dict()}


def send_test(app: Celery, producer: Any, payload: Mapping[str, Any], queue: str, task_id: str) -> None:
    """Publish one run_test task: what ``app.send_task`` does, minus two per-message costs.

    Celery puts a repr of the arguments (up to 1 KiB of the test's source) in every message
    header and declares the queue again on every publish; here the header names the test
    and attempt, and the queue is not declared (the anonymous exchange routes by queue
    name, and workers declare the queues they consume)."""
    spec = payload["test"]["spec"]
    message = app.amqp.create_task_message(
        task_id, RUN_TEST, args=[payload], kwargs={},
        argsrepr=f"[{spec.get('test_id')!r} attempt {payload.get('attempt')}]", kwargsrepr="{}",
    )
    with app.producer_or_acquire(producer) as pooled:  # None: one from the app's pool
        app.amqp.send_task_message(pooled, RUN_TEST, message, queue=queue, declare=[])


def task_id_for(run_id: str, test_id: str, attempt: int) -> str:
    """Deterministic task ids: the same test attempt always has the same id."""
    return f"{run_id}:{test_id}:{attempt}"


def result_body(result: TestResult) -> dict[str, Any]:
    return {"kind": "result", "result": result.to_dict()}
