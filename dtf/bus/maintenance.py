"""Maintenance tasks on the wire: one request to many workers, one reply from each.

Every worker listens on a control queue of its own, ``dtf.maint.<worker>``, bound to the
direct exchange ``dtf.maint`` twice over: by its name (routing key ``worker:<name>``) and
by each hardware queue it consumes (``queue:dtf.cuda``). A request published with
``queue:dtf.cuda`` therefore reaches every worker of that queue exactly once (one copy per
bound queue, however many of its bindings match), and ``worker:<name>`` reaches one.

A request carries ``reply_to`` (the client's private ``dtf.reply.*`` queue), a correlation
id and ``expires_at``: a worker that finds a request past it (it was down, or busy with an
earlier one) drops it unanswered. Each worker answers with ``reply`` (dtf.bus.rpc); the
client gathers the answers until every worker it addressed has answered or its time is up.
Requests and replies travel in the app's wire format (signed when a key is set) and are
checked against their schemas in dtf.wire before anything acts on them.
"""

from __future__ import annotations

import socket
import time
import uuid
from typing import Any, Callable, Iterable, Mapping

from kombu import Connection, Consumer, Exchange, Message, Producer, Queue, binding

from ..errors import BrokerError, PayloadTooLarge
from .protocol import REPLY_PREFIX, drop_undecodable, dumps
from .rpc import delete_quietly

__all__ = ["MAINT_EXCHANGE", "MAINT_PREFIX", "MAINT_OP", "maintenance_queue", "route_for_queue", "route_for_worker",
           "request_body", "broadcast"]

MAINT_EXCHANGE = Exchange("dtf.maint", type="direct", durable=False)
MAINT_PREFIX = "dtf.maint."  # a worker's maintenance queue: never a task queue (dtf.wire checks it)
MAINT_OP = "maintenance"


def route_for_queue(queue: str) -> str:
    return f"queue:{queue}"


def route_for_worker(worker_id: str) -> str:
    return f"worker:{worker_id}"


def maintenance_queue(worker_id: str, queues: Iterable[str]) -> Queue:
    """The worker's own maintenance queue with its bindings (by name and by each queue it consumes)."""
    keys = [route_for_worker(worker_id), *(route_for_queue(q) for q in queues)]
    return Queue(f"{MAINT_PREFIX}{worker_id}", exchange=MAINT_EXCHANGE, durable=False,
                 bindings=[binding(MAINT_EXCHANGE, routing_key=k) for k in dict.fromkeys(keys)])


def request_body(kind: str, params: Mapping[str, Any], *, timeout_s: float) -> dict[str, Any]:
    """A maintenance request (reply_to and correlation_id are added by ``broadcast``)."""
    return {"op": MAINT_OP, "kind": kind, "params": dict(params), "expires_at": time.time() + timeout_s}


def broadcast(conn: Connection, body: Mapping[str, Any], route: str, *, serializer: str, accept: list[str],
              timeout_s: float, max_bytes: int, expected: set[str] | None,
              check_reply: Callable[[Any], dict[str, Any]],
              on_refused: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Publish ``body`` on ``dtf.maint`` with routing key ``route`` and gather the replies.

    Returns worker id -> checked reply. Waits until every worker in ``expected`` answered,
    or ``timeout_s`` (all of it when ``expected`` is None: who listens is not known)."""
    reply_name = f"{REPLY_PREFIX}{uuid.uuid4().hex}"
    correlation = uuid.uuid4().hex
    answers: dict[str, dict[str, Any]] = {}

    def on_reply(raw: Any, message: Message) -> None:
        message.ack()
        if not (isinstance(raw, dict) and raw.get("correlation_id") == correlation):
            return
        try:
            checked = check_reply(raw)
        except Exception as exc:  # noqa: BLE001 - a malformed reply is reported, never acted on
            if on_refused is not None:
                on_refused(str(exc))
            return
        answers.setdefault(str(checked["worker_id"]), checked)

    queue = Queue(reply_name, auto_delete=True, durable=False)
    outgoing = dict(body, reply_to=reply_name, correlation_id=correlation)
    size = len(dumps(outgoing))
    if size > max_bytes:
        raise PayloadTooLarge(f"maintenance request is {size} bytes, over the {max_bytes}-byte cap")
    with Consumer(conn.channel(), [queue], callbacks=[on_reply], accept=accept, on_decode_error=drop_undecodable):
        producer = Producer(conn.channel(), serializer=serializer)
        try:
            producer.publish(outgoing, exchange=MAINT_EXCHANGE, routing_key=route, declare=[MAINT_EXCHANGE], retry=True)
        except Exception as exc:  # noqa: BLE001 - kombu's Redis transport: no queue bound to the exchange at all
            if "route" not in str(exc).lower() and "table empty" not in str(exc).lower():
                raise BrokerError(f"cannot publish the maintenance request: {exc}") from None
        deadline = time.monotonic() + timeout_s
        while expected is None or not expected <= answers.keys():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                conn.drain_events(timeout=min(left, 0.5))
            except socket.timeout:
                pass
    delete_quietly(queue, conn)
    return answers
