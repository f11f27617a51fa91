"""The coordinator's loop: the kombu connection, the two consumers, and where each message
goes; what is done with it is policy (submits, results, queries, liveness, dispatch)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Callable

from kombu import Consumer, Producer

from ..bus import CONTROL_QUEUE, QUERY_OPS, KombuPort, control_queue, control_transport_options, drop_undecodable, \
    first_line, results_queue, wire_format
from ..errors import DtfError, FencingError
from ..wire import MessageRefused, check_control
from .cancel import CancelPolicy
from .liveness import LivenessPolicy
from .queries import QueryPolicy
from .submits import SubmitPolicy

# How long the loop waits for another message while a result batch is open before it takes
# the broker for idle and writes the batch (dtf/coordinator/results.py, adaptive batching).
IDLE_PROBE_S = 0.002

__all__ = ["Coordinator"]

log = logging.getLogger("dtf.coordinator")


class Coordinator(SubmitPolicy, CancelPolicy, QueryPolicy, LivenessPolicy):
    """The event loop of the leader: moves messages between the broker, the schedule and the store.

    ``serve`` is the loop on a kombu connection; ``on_control``, ``on_result`` and ``tick`` are
    what it calls, and what a test of policy calls directly with a dtf.bus.MemoryPort."""

    # -- life cycle -----------------------------------------------------------------------
    def serve(
        self,
        stop: threading.Event,
        ready: threading.Event | None = None,
        poll_s: float = 0.05,
        leading: Callable[[], bool] | None = None,
    ) -> None:
        """Run until ``stop`` is set or ``leading()`` turns false.

        Raises FencingError if a write is refused (another leader, or this one's lease lapsed).
        Losing the lease ends the loop without acking what is unflushed: closing the channel
        gives those messages back, or the next leader's sweep does."""
        leading = leading or (lambda: True)
        with self.app.connection_for_write(transport_options=control_transport_options(self.settings)) as conn:
            conn.ensure_connection(max_retries=3)
            serializer, accept = wire_format(self.app)
            ctrl = Consumer(conn.channel(), [control_queue()], callbacks=[self.on_control],
                            accept=accept, prefetch_count=0, on_decode_error=drop_undecodable)
            res = Consumer(conn.channel(), [results_queue()], callbacks=[self.on_result],
                           accept=accept, prefetch_count=self.batch_size, on_decode_error=drop_undecodable)
            self.port = KombuPort(self.app, Producer(conn.channel(), serializer=serializer),
                                  embedded=self.settings.embedded)
            self.start_term()
            with ctrl, res:
                if ready is not None:
                    ready.set()
                while not stop.is_set() and leading():
                    # With results waiting, look briefly for more: if none comes the broker
                    # is idle and the batch is written at once (adaptive batching).
                    try:
                        conn.drain_events(timeout=self._drain_timeout(poll_s, IDLE_PROBE_S))
                        idle = False
                    except socket.timeout:
                        idle = True
                    self.tick(idle=idle)
                if leading():
                    self._flush_results()

    def start_term(self) -> None:
        """Before consuming: restore the running runs from the store and reconcile; when the
        broker lost its data, publish every in-flight test again and leave a new marker;
        otherwise publish again what the last lost connection may have dropped."""
        lost = self.port.lost_data()
        self._restore_active_runs()
        self.reconcile_on_election(republish=lost)
        if lost:
            self.carry.lost_at = None  # republished with everything else in flight
            self.port.put_marker()
        else:
            self._publish_again_after_loss()

    def tick(self, now: float | None = None, *, idle: bool = False) -> None:
        """Timed work: due result batches (``idle``: no message was waiting), held queries, reconciliation."""
        if self.demoted:
            # The serve loop ends at its next check; unflushed results and held queries are
            # the next leader's.
            self._waiting = []
            return
        now = time.monotonic() if now is None else now
        self._flush_due(now, idle=idle)
        if self._waiting:
            self._answer_waiting(now)
        self._reconcile_due(now)

    # -- messages -------------------------------------------------------------------------------
    def on_result(self, body: Any, message: Any) -> None:
        """A ``dtf.results`` message: into the batch (dtf/coordinator/results.py)."""
        self._on_result_message(body, message)

    def on_control(self, body: Any, message: Any) -> None:
        """A ``dtf.coordinator`` message: checked (dtf.wire), handed to its policy, acked."""
        if self.demoted:
            # Neither answer nor ack: closing the channel gives the message back, for the next leader.
            return
        try:
            op = check_control(body, QUERY_OPS)
        except MessageRefused as exc:
            self._refuse(CONTROL_QUEUE, exc, body, message)
            return
        try:
            if op == "submit":
                self._on_submit_chunk(body, message)
                return  # acked there, once the chunk is stored
            if op == "heartbeat":
                self._on_heartbeat(body)
            elif op == "started":
                self._on_started(body)
            elif op == "cancel":
                self._on_cancel(body)
            elif op in QUERY_OPS:
                self._query(op, body)
            else:
                raise DtfError(f"unknown coordinator operation {op!r}")
        except FencingError:
            raise
        except MessageRefused as exc:
            self._refuse(CONTROL_QUEUE, exc, body, message)
            return
        except Exception as exc:  # noqa: BLE001 - a bad message must not stop the leader
            if self.demoted:
                return  # demoted while handling it: neither answered nor acked
            log.warning("control message %r failed: %s", op, first_line(exc)[:300])
            self._reply(body, {"ok": False, "error": str(exc)})
        message.ack()
