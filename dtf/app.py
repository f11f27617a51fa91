"""The Celery app: configuration and the one task a worker runs.

A thin adapter: the task decodes its JSON payload, calls the worker's handler, and returns.
The app is a ``DtfApp``: a Celery app that carries, as declared fields, the ``Settings`` it
was made from and the handler of its task (set by dtf.worker.WorkerRuntime.install). Queue
names, payloads and connection options live in dtf.bus.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping

from celery import Celery, Task
from celery.exceptions import CPendingDeprecationWarning

from .bus import RUN_TEST, TASK_EXCHANGE, broker_options, hardware_queues
from .model import queue_for
from .settings import Settings
from .signing import serializer_for

__all__ = ["DtfApp", "TestHandler", "make_app", "check_broker_credentials", "quiet_cancel_warning"]

# Called by the task with (payload, task request).
TestHandler = Callable[[Mapping[str, Any], Any], None]


class DtfApp(Celery):
    """A Celery app made by ``make_app``: its settings, and who runs its tests in this process."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.test_handler: TestHandler | None = None  # None: not a worker process

    def __reduce_keys__(self) -> dict[str, Any]:
        return {**super().__reduce_keys__(), "settings": self.settings}


def make_app(settings: Settings, *, extra_queues: tuple[str, ...] = ()) -> DtfApp:
    """A Celery app for one settings object; never the global current_app."""
    broker = broker_options(settings)
    if not settings.embedded:
        from .wire import install_transport_guard

        install_transport_guard(settings.max_payload_bytes)  # a malformed item on a Redis list never reaches kombu or Celery
    app = DtfApp(settings, main="dtf", broker=broker.url, set_as_current=False)
    app.conf.update(
        broker_transport_options=broker.transport_options,
        broker_use_ssl=broker.use_ssl,
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
        # A test runs in a process of its own and outlives a broker connection: it finishes,
        # and its result goes out with backoff or through the spool (dtf.resend). Cancelling
        # would kill it (prefork) or fail with "does not implement kill_job" (threads); the
        # copy of the task the broker redelivers is dropped by the worker that gets it when
        # the coordinator already has its result (WorkerRuntime._already_handled).
        worker_cancel_long_running_tasks_on_connection_loss=False,
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
    quiet_cancel_warning()
    if settings.embedded:
        app.conf.broker_transport = "dtf.memory_transport:Transport"  # stops in 0.1 s, not 2 s
    signed = serializer_for(settings)  # signing is on by default (dtf.signing)
    if signed != "json":
        # Signed messages only: an unsigned or forged task is refused before it is decoded.
        app.conf.update(task_serializer=signed, result_serializer=signed,
                        accept_content=[signed], result_accept_content=[signed])

    if broker.password:
        # kombu takes the master's password from the URL or broker_password, never from
        # transport options; sentinel URLs mangle passwords, so set it here.
        app.conf.broker_password = broker.password
        if broker.user:
            app.conf.broker_user = broker.user

    # shared=False: every app made in this process keeps its own task and handler.
    @app.task(name=RUN_TEST, bind=True, acks_late=True, reject_on_worker_lost=True, shared=False)
    def run_test(self: Task, payload: Mapping[str, Any]) -> None:
        # The closure's app, not self.app: tasks of a non-current app may resolve to the default.
        handler = app.test_handler
        if handler is None:
            raise RuntimeError("dtf.run_test reached a process that is not a dtf worker")
        handler(payload, self.request)

    return app


def quiet_cancel_warning() -> None:
    """Celery warns on every connection loss that it will cancel running tasks by default in
    6.0; dtf sets worker_cancel_long_running_tasks_on_connection_loss explicitly, so the
    warning (a screen of text per reconnect) says nothing to an operator. Celery's logging
    setup puts its own "always" filter first: call this again after it."""
    warnings.filterwarnings("ignore", message=r"\s*In Celery 5.1 we introduced an optional breaking change",
                            category=CPendingDeprecationWarning)


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
