"""The names and shapes on the wire: queues, the run_test task, results, submits, control ops.

Every message dtf publishes is built here, once: a test task (``task_payload``, published
by ``send_test``), a result (``result_body``), the chunks of a submit (``submit_body``).
What may *arrive* is checked by dtf.wire.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from kombu import Exchange, Message, Queue

from ..model import HARDWARE_KINDS, RenderedTest, TestResult, queue_for
from ..requirements import is_route_queue

if TYPE_CHECKING:  # Celery is imported only where an app is made (dtf.app): clients start without it
    from celery import Celery

__all__ = [
    "RUN_TEST", "RESULTS_QUEUE", "CONTROL_QUEUE", "MARKER_QUEUE", "REPLY_PREFIX", "TASK_EXCHANGE", "QUERY_OPS",
    "hardware_queues", "task_queue", "control_queue", "results_queue", "wire_format", "task_payload", "send_test", "task_id_for",
    "result_body", "submit_bodies", "submit_body", "dumps", "first_line", "drop_undecodable", "producer_batch",
]

log = logging.getLogger("dtf.bus")

RUN_TEST = "dtf.run_test"
RESULTS_QUEUE = "dtf.results"
CONTROL_QUEUE = "dtf.coordinator"
REPLY_PREFIX = "dtf.reply."  # a client's private, auto-deleted reply queue (dtf.wire.REPLY_TO checks it)
# One message nobody consumes: when it is missing, the broker lost its data (dtf.coordinator
# re-creates the queues and re-publishes in-flight tests from DuckDB).
MARKER_QUEUE = "dtf.coordinator.marker"
TASK_EXCHANGE = Exchange("dtf", type="direct", durable=True)

# Operations that only read: a client may send them again (to the next leader) when no
# answer comes. The coordinator answers exactly these (checked at its import). The other
# control ops (submit, heartbeat, started) are named in dtf.wire.CONTROL_OPS.
QUERY_OPS = frozenset({"status", "results", "runs", "report", "workers", "ping", "worker_health", "run_progress",
                       "run_matrix", "metric_trends", "routes", "scale", "test_state"})


# -- queues -----------------------------------------------------------------------------------
def task_queue(name: str) -> Queue:
    """A queue of test tasks on the dtf exchange, routed by its own name."""
    return Queue(name, TASK_EXCHANGE, routing_key=name, durable=True)


def hardware_queues(extra: tuple[str, ...] = ()) -> list[Queue]:
    names = [queue_for(kind) for kind in HARDWARE_KINDS] + [q for q in extra if q]
    return [task_queue(name) for name in dict.fromkeys(names)]


def control_queue() -> Queue:
    return Queue(CONTROL_QUEUE, durable=True)


def results_queue() -> Queue:
    return Queue(RESULTS_QUEUE, durable=True)


def wire_format(app: "Celery | Any") -> tuple[str, list[str]]:
    """(serializer, accepted content) for every message this app's process publishes or
    consumes, tasks, results and control alike: JSON, or dtf-signed when a key is set.
    ``app`` is a Celery app, or anything with its ``conf`` (dtf.client.BrokerLink)."""
    return str(app.conf.task_serializer), list(app.conf.accept_content)


# -- test tasks ---------------------------------------------------------------------------------
def task_payload(run_id: str, attempt: int, test: RenderedTest | Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body of a run_test task. ``test`` is a RenderedTest or its dict form (the
    coordinator passes the stored spec, source and template hash through as they are)."""
    return {"run_id": run_id, "attempt": attempt, "test": test.to_dict() if isinstance(test, RenderedTest) else dict(test)}


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
    target: str | Queue = queue
    declare: list[Queue] = []
    if queue not in app.amqp.queues and is_route_queue(queue):
        # A requirement queue (dtf.<kind>.r-<hash>, dtf.requirements): declared once per
        # connection (kombu caches it), so its binding exists before a worker subscribes.
        # Any other undeclared name still raises (task_create_missing_queues is off).
        target = task_queue(queue)
        declare = [target]
    with app.producer_or_acquire(producer) as pooled:  # None: one from the app's pool
        app.amqp.send_task_message(pooled, RUN_TEST, message, queue=target, declare=declare)


def task_id_for(run_id: str, test_id: str, attempt: int) -> str:
    """Deterministic task ids: the same test attempt always has the same id."""
    return f"{run_id}:{test_id}:{attempt}"


# -- results and submits ------------------------------------------------------------------------
def result_body(result: TestResult) -> dict[str, Any]:
    """The body of a ``dtf.results`` message (dtf.wire.result_from_wire reads it back)."""
    return {"result": result.to_dict()}


# A submit chunk holds at most this many bytes of tests (as JSON), or one test when a single
# test is larger (up to the payload cap): dtf.wire refuses a raw control message over twice
# the chunk cap before parsing it, so neither side ever parses an unbounded message.
CHUNK_MAX_BYTES = 8 << 20


def chunk_cap(max_payload: int) -> int:
    return max(CHUNK_MAX_BYTES, max_payload)


def raw_item_cap(queue: str, max_payload: int) -> int:
    """The most bytes a raw Redis item popped from ``queue`` may have before it is parsed
    (kombu's envelope, and base64 when signed, included): twice the largest body its kind
    of message can have, plus room for the headers."""
    if queue == CONTROL_QUEUE:
        base = chunk_cap(max_payload)  # submit chunks
    elif queue.startswith(REPLY_PREFIX):
        base = 8 * max_payload  # query answers (dtf.bus.rpc.request caps them at this)
    else:
        base = max(max_payload, 4 << 20)  # tests (the payload cap) and results (capped fields)
    return 2 * base + (64 << 10)


def submit_bodies(submit_id: str, run: Mapping[str, Any], tests: Sequence[Mapping[str, Any]],
                  chunk_size: int = 200) -> list[dict[str, Any]]:
    """Every ``submit`` message of a run held in memory (tests and bench; the client sends a
    large suite chunk by chunk with ``submit_body`` as it renders it)."""
    chunks = [list(tests[i:i + chunk_size]) for i in range(0, len(tests), chunk_size)] or [[]]
    return [submit_body(submit_id, run, i, len(chunks), chunk) for i, chunk in enumerate(chunks)]


def submit_body(submit_id: str, run: Mapping[str, Any], chunk: int, chunks: int,
                tests: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Chunk ``chunk`` of ``chunks`` of a submit; the run's metadata rides on the first.

    A sender that does not know the total yet (it cuts chunks by bytes as it renders) sends
    ``chunks = chunk + 2`` ("at least one more") and the true total on the last chunk; the
    coordinator starts the run once it holds as many chunks as the largest total announced."""
    return {"op": "submit", "submit_id": submit_id, "run_id": str(run["run_id"]), "chunk": chunk, "chunks": chunks,
            "tests": list(tests), **({"run": dict(run)} if chunk == 0 else {})}


# -- small shared helpers -----------------------------------------------------------------------
def producer_batch(producer: Any, size: int = 1000) -> Any:
    """kombu's ``Producer.batch`` (kombu >= 5.7: the Redis transport buffers the publishes
    and sends up to ``size`` in one round trip) for more than one message, where the
    producer has it; else a context that does nothing (each publish goes at once)."""
    batch = getattr(producer, "batch", None)
    return batch(size) if batch is not None and size > 1 else contextlib.nullcontext()


def dumps(obj: Any) -> str:
    """The JSON a body is measured by against the payload cap."""
    return json.dumps(obj)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def drop_undecodable(message: Message, exc: BaseException) -> None:
    """A message in a content type we refuse (pickle, unsigned when signing is on) or that
    does not decode is logged and acked: never executed, and never left at the head of the
    queue where it would block every message behind it."""
    log.error("dropping a message we refuse to decode (content type %s): %s",
              message.content_type, first_line(exc))
    message.ack()
