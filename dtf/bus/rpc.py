"""Control messages and their replies: the one way anything is said to the coordinator
(``publish_control``: clients, workers' heartbeats and started notices), the one way a
client waits for the answer (``request``), and the one way the coordinator answers (``reply``).

A query carries ``reply_to`` (a private, auto-deleted ``dtf.reply.*`` queue) and a
correlation id; the client waits for the one reply that carries that id.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from typing import Any, Iterable, Mapping

from kombu import Connection, Consumer, Message, Producer, Queue

from ..errors import BrokerError, PayloadTooLarge
from .protocol import CONTROL_QUEUE, QUERY_OPS, REPLY_PREFIX, control_queue, drop_undecodable, dumps

__all__ = ["RESEND_QUERY_AFTER_S", "publish_control", "request", "reply"]

RESEND_QUERY_AFTER_S = 4.0


def publish_control(producer: Producer, body: Mapping[str, Any], *, serializer: str | None = None,
                    retry_policy: Mapping[str, Any] | None = None) -> None:
    """Put one message on ``dtf.coordinator`` (declared, so a first message finds it)."""
    producer.publish(dict(body), exchange="", routing_key=CONTROL_QUEUE, declare=[control_queue()], retry=True,
                     **({"serializer": serializer} if serializer else {}),
                     **({"retry_policy": dict(retry_policy)} if retry_policy is not None else {}))


def reply(producer: Producer, request_body: Mapping[str, Any], payload: Mapping[str, Any]) -> None:
    """Answer a control message on its ``reply_to`` queue (nothing when it asked for none)."""
    reply_to = request_body.get("reply_to")
    if reply_to:
        producer.publish(dict(payload, correlation_id=request_body.get("correlation_id")),
                         exchange="", routing_key=str(reply_to), retry=True)


def request(conn: Connection, bodies: Iterable[Mapping[str, Any]], *, serializer: str, accept: list[str],
            timeout_s: float, max_bytes: int, broker_name: str) -> dict[str, Any]:
    """Publish messages whose first carries reply_to, and wait for the one reply.

    A lone query is published again every RESEND_QUERY_AFTER_S (plus the time the coordinator
    may hold it): one taken by a leader that then died would otherwise wait for the control
    visibility timeout. BrokerError when nobody answers within ``timeout_s``."""
    reply_name = f"{REPLY_PREFIX}{uuid.uuid4().hex}"
    correlation = uuid.uuid4().hex
    answer: dict[str, Any] = {}
    got = threading.Event()

    def on_reply(body: Any, message: Message) -> None:
        if isinstance(body, dict) and body.get("correlation_id") == correlation:
            answer.update(body)
            got.set()
        message.ack()

    queue = Queue(reply_name, auto_delete=True, durable=False)
    with Consumer(conn.channel(), [queue], callbacks=[on_reply], accept=accept, on_decode_error=drop_undecodable):
        producer = Producer(conn.channel(), serializer=serializer)

        def send(body: Mapping[str, Any]) -> None:
            size = len(dumps(body))
            if size > max_bytes:
                raise PayloadTooLarge(f"message is {size} bytes, over the cap")
            publish_control(producer, body)

        # ``bodies`` may be a generator (a large submit rendered chunk by chunk while it is
        # sent): only the first body is kept, for a lone query's resend.
        items = iter(bodies)
        first = dict(next(items))
        first.update(reply_to=reply_name, correlation_id=correlation)
        send(first)
        lone = True
        for body in items:
            lone = False
            send(body)
        outgoing = [first]
        deadline = time.monotonic() + timeout_s
        resend = lone and first.get("op") in QUERY_OPS
        held_s = float(first.get("wait_s") or 0.0)  # a held query is not a lost one
        resend_at = time.monotonic() + RESEND_QUERY_AFTER_S + held_s
        while not got.is_set():
            if resend and time.monotonic() >= resend_at:
                publish_control(producer, outgoing[0])
                resend_at = time.monotonic() + RESEND_QUERY_AFTER_S + held_s
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerError(
                    f"no coordinator answered on {CONTROL_QUEUE} via {broker_name} within "
                    f"{timeout_s:g} s (is `dtf coordinator` running?)"
                )
            try:
                conn.drain_events(timeout=min(left, 0.5))
            except socket.timeout:
                pass
    delete_quietly(queue, conn)
    return answer


def delete_quietly(queue: Any, conn: Any) -> None:
    """Delete a reply queue when its answers are in (cleanup only: errors are ignored)."""
    try:
        queue(conn.channel()).delete()
    except Exception:  # noqa: BLE001 - cleanup only
        pass
