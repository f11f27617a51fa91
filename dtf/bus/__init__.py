"""The wire protocol, in one place: what coordinator, workers, clients and the embedded mode
share, so that none of them reaches into another's internals.

* ``dtf/bus/protocol.py``: queue names and kombu queues, the run_test task (the one
  ``task_payload`` and ``send_test``), result and submit bodies, the query ops.
* ``dtf/bus/connect.py``: ``Settings`` into kombu and redis-py connection options (URL,
  Sentinels, passwords, TLS).
* ``dtf/bus/rpc.py``: the one way a control message is published, a reply awaited, a reply sent.
* ``dtf/bus/maintenance.py``: maintenance requests (``dtf tasks run``): the ``dtf.maint``
  exchange, each worker's queue and its bindings, one request gathered into a reply per worker.
* ``dtf/bus/port.py``: the coordinator's outlet (``KombuPort``) and its in-memory stand-in
  (``MemoryPort``) for tests of coordinator policy.

dtf.wire stays a module of its own: it answers a different question (may this message be
acted on?), holds the schemas and the dead-letter list, and is imported by the transport
guard before kombu is touched; the bus says how messages are built and travel.
"""

from __future__ import annotations

from .connect import CONTROL_UNACKED_KEY, BrokerOptions, broker_connection_args, broker_options, control_transport_options
from .port import CoordinatorPort, KombuPort, MemoryMessage, MemoryPort, TestTask
from .protocol import (
    CONTROL_QUEUE, MARKER_QUEUE, QUERY_OPS, RESULTS_QUEUE, RUN_TEST, TASK_EXCHANGE, control_queue, drop_undecodable,
    dumps, first_line, hardware_queues, producer_batch, result_body, results_queue, send_test, submit_bodies, submit_body,
    task_id_for, task_payload, task_queue, wire_format,
)
from .rpc import publish_control, reply, request

__all__ = [
    "RUN_TEST", "RESULTS_QUEUE", "CONTROL_QUEUE", "MARKER_QUEUE", "TASK_EXCHANGE", "QUERY_OPS",
    "hardware_queues", "task_queue", "control_queue", "results_queue", "wire_format",
    "task_payload", "send_test", "task_id_for", "result_body", "submit_bodies", "submit_body", "producer_batch",
    "dumps", "first_line", "drop_undecodable",
    "BrokerOptions", "broker_options", "broker_connection_args", "control_transport_options", "CONTROL_UNACKED_KEY",
    "publish_control", "request", "reply",
    "CoordinatorPort", "KombuPort", "MemoryPort", "MemoryMessage", "TestTask",
]
