"""Talking to the coordinator over the broker: what the CLI, the dashboard and workers use.

Requests go to the ``dtf.coordinator`` queue; a query carries ``reply_to`` (a private,
auto-deleted reply queue) and a correlation id, and waits for the one answer. This module
imports neither DuckDB nor Arrow, so clients and workers start without them.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from typing import Any, Mapping, Sequence

from celery import Celery
from kombu import Connection, Consumer, Message, Producer, Queue

from .app import CONTROL_QUEUE, RESULTS_QUEUE, wire_format
from .errors import BrokerError, DtfError, PayloadTooLarge
from .model import RenderedTest

__all__ = ["CoordinatorClient", "QUERY_OPS", "control_queue", "results_queue", "control_transport_options"]

log = logging.getLogger("dtf.client")

RESEND_QUERY_AFTER_S = 4.0
# Operations that only read: the client may send them again (to the next leader) when no
# answer comes. The coordinator answers exactly these (checked at its import).
QUERY_OPS = frozenset({"status", "results", "runs", "report", "workers", "ping", "worker_health", "run_progress",
                       "run_matrix", "metric_trends"})
# The coordinator queues keep their own unacked bookkeeping, so that what a dead leader had
# taken comes back after a short visibility timeout without touching the workers' tasks
# (whose visibility timeout must outlast the longest test).
CONTROL_UNACKED_KEY = "dtf.coordinator.unacked"


def control_transport_options(settings: Any) -> dict[str, Any]:
    """Transport options for the leader's own connection (none for the in-memory broker)."""
    if settings.embedded:
        return {}
    return {
        "unacked_key": CONTROL_UNACKED_KEY,
        "unacked_index_key": f"{CONTROL_UNACKED_KEY}_index",
        "unacked_mutex_key": f"{CONTROL_UNACKED_KEY}_mutex",
        "visibility_timeout": settings.control_visibility_timeout_s,
        "unacked_restore_throttle": 10,  # the sync loop sweeps on every empty poll otherwise
    }


def control_queue() -> Queue:
    return Queue(CONTROL_QUEUE, durable=True)


def results_queue() -> Queue:
    return Queue(RESULTS_QUEUE, durable=True)


def _dumps(obj: Any) -> str:
    return json.dumps(obj)


class CoordinatorClient:
    """What the CLI and workers use to talk to the coordinator over the broker."""

    def __init__(self, app: Celery, *, timeout_s: float = 15.0) -> None:
        self.app = app
        self.timeout_s = timeout_s
        settings = app.dtf_settings  # type: ignore[attr-defined]
        self.broker_name = settings.safe_broker
        self.max_payload = settings.max_payload_bytes
        self.failover = bool(settings.sentinels)

    def _connection(self) -> Connection:
        conn = self.app.connection_for_write()
        try:
            conn.ensure_connection(max_retries=1, interval_start=0.2, interval_step=0.2, timeout=5)
        except Exception as exc:  # noqa: BLE001 - kombu raises many kinds
            conn.release()
            raise BrokerError(f"cannot reach broker {self.broker_name}: {_first_line(exc)}") from None
        return conn

    def send(self, body: Mapping[str, Any]) -> None:
        """Fire and forget a control message."""
        with self._connection() as conn:
            Producer(conn.channel(), serializer=wire_format(self.app)[0]).publish(
                dict(body), exchange="", routing_key=CONTROL_QUEUE, declare=[control_queue()], retry=True
            )

    def call(self, op: str, *, timeout_s: float | None = None, **params: Any) -> Any:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        if params.get("wait_s"):
            timeout += float(params["wait_s"])  # the coordinator may hold the answer this long
        if not (self.failover and op in QUERY_OPS):
            return self._call_many([dict(params, op=op)], timeout_s=timeout)
        # With Sentinels a master failover takes seconds; a query rides it out within its timeout.
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._call_many([dict(params, op=op)], timeout_s=max(0.5, deadline - time.monotonic()))
            except DtfError as exc:
                if not isinstance(exc, BrokerError) or time.monotonic() >= deadline - 0.5:
                    raise
                log.info("broker unavailable during %s (%s); retrying", op, _first_line(exc))
                time.sleep(0.5)
            except Exception as exc:  # noqa: BLE001 - kombu and redis raise many kinds
                if time.monotonic() >= deadline - 0.5:
                    raise BrokerError(f"lost the broker {self.broker_name}: {_first_line(exc)}") from None
                log.info("broker connection lost during %s (%s); retrying", op, _first_line(exc))
                time.sleep(0.5)

    def _call_many(self, bodies: Sequence[dict[str, Any]], *, timeout_s: float | None = None) -> Any:
        """Publish messages whose first carries reply_to, and wait for the one reply."""
        reply_name = f"dtf.reply.{uuid.uuid4().hex}"
        correlation = uuid.uuid4().hex
        timeout = self.timeout_s if timeout_s is None else timeout_s
        reply: dict[str, Any] = {}
        got = threading.Event()

        def on_reply(body: Any, message: Message) -> None:
            if isinstance(body, dict) and body.get("correlation_id") == correlation:
                reply.update(body)
                got.set()
            message.ack()

        with self._connection() as conn:
            queue = Queue(reply_name, auto_delete=True, durable=False)
            serializer, accept = wire_format(self.app)
            with Consumer(conn.channel(), [queue], callbacks=[on_reply], accept=accept,
                          on_decode_error=_drop_undecodable):
                producer = Producer(conn.channel(), serializer=serializer)
                outgoing = [dict(b) for b in bodies]
                outgoing[0].update(reply_to=reply_name, correlation_id=correlation)
                for body in outgoing:
                    size = len(_dumps(body))
                    if size > self.max_payload * 8:
                        raise PayloadTooLarge(f"message is {size} bytes, over the cap")
                    producer.publish(body, exchange="", routing_key=CONTROL_QUEUE,
                                     declare=[control_queue()], retry=True)
                deadline = time.monotonic() + timeout
                # A query taken by a leader that then died would wait for the control
                # visibility timeout; asking again reaches the next leader sooner.
                resend = len(outgoing) == 1 and outgoing[0].get("op") in QUERY_OPS
                held_s = float(outgoing[0].get("wait_s") or 0.0)  # a held query is not a lost one
                resend_at = time.monotonic() + RESEND_QUERY_AFTER_S + held_s
                while not got.is_set():
                    if resend and time.monotonic() >= resend_at:
                        producer.publish(outgoing[0], exchange="", routing_key=CONTROL_QUEUE,
                                         declare=[control_queue()], retry=True)
                        resend_at = time.monotonic() + RESEND_QUERY_AFTER_S + held_s
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise BrokerError(
                            f"no coordinator answered on {CONTROL_QUEUE} via {self.broker_name} within "
                            f"{timeout:g} s (is `dtf coordinator` running?)"
                        )
                    try:
                        conn.drain_events(timeout=min(left, 0.5))
                    except socket.timeout:
                        pass
            try:
                queue(conn.channel()).delete()
            except Exception:  # noqa: BLE001 - cleanup only
                pass
        if not reply.get("ok"):
            raise DtfError(str(reply.get("error") or "coordinator error"))
        return reply.get("data")

    def submit(self, run: Mapping[str, Any], tests: Sequence[RenderedTest], *, chunk_size: int = 200) -> str:
        """Send a run in chunks (each under the payload cap); returns the run id once stored."""
        submit_id = uuid.uuid4().hex
        dicts = self.check_payloads(run, tests)
        chunks = [dicts[i:i + chunk_size] for i in range(0, len(dicts), chunk_size)] or [[]]
        bodies = [
            {"op": "submit", "submit_id": submit_id, "run_id": str(run["run_id"]), "chunk": i, "chunks": len(chunks),
             "tests": chunk, **({"run": dict(run)} if i == 0 else {})}
            for i, chunk in enumerate(chunks)
        ]
        data = self._call_many(bodies, timeout_s=max(self.timeout_s, 30.0 + len(tests) / 500))
        return str(data["run_id"])

    def check_payloads(self, run: Mapping[str, Any], tests: Sequence[RenderedTest]) -> list[dict[str, Any]]:
        """The tests as dicts; PayloadTooLarge for the first one over the cap (no broker call)."""
        dicts = [t.to_dict() for t in tests]
        for t in dicts:
            # Measure what the coordinator will publish (the task payload around the test,
            # at the highest attempt number), so a test under the cap here is publishable there.
            size = len(_dumps({"run_id": str(run["run_id"]), "attempt": int(t["spec"].get("retries", 0)) + 1, "test": t}))
            if size > self.max_payload:
                raise PayloadTooLarge(
                    f"test {t['spec']['test_id']}: rendered payload is {size} bytes, over the {self.max_payload}-byte cap"
                )
        return dicts


def _drop_undecodable(message: Message, exc: BaseException) -> None:
    """A message in a content type we refuse (pickle, unsigned when signing is on) or that
    does not decode is logged and acked: never executed, and never left at the head of the
    queue where it would block every message behind it."""
    log.error("dropping a message we refuse to decode (content type %s): %s",
              message.content_type, _first_line(exc))
    message.ack()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
