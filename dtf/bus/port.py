"""The coordinator's outlet to the broker, and a stand-in for it.

The coordinator's policies (dtf.coordinator) say what goes out through a ``CoordinatorPort``:
test tasks, replies, dead letters, and ask it how deep a queue is. ``KombuPort`` is the real
one, on the leader's kombu producer; ``MemoryPort`` records everything in lists, so that
policy can be tested without a broker, the way dramatiq's StubBroker is used. Messages
handed to the coordinator need only ``ack`` and ``requeue`` (``MemoryMessage``).
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

from kombu import Producer, Queue
from kombu.exceptions import ChannelError

from ..wire import dead_letter, dead_letter_count
from .protocol import MARKER_QUEUE, first_line, hardware_queues, producer_batch, send_test
from .rpc import reply

if TYPE_CHECKING:  # Celery is imported only where an app is made (dtf.app): clients start without it
    from celery import Celery

__all__ = ["CoordinatorPort", "KombuPort", "MemoryPort", "MemoryMessage", "TestTask"]

log = logging.getLogger("dtf.bus")

TestTask = tuple[Mapping[str, Any], str, str]  # (payload, queue, task id)

# kombu's Redis transport defaults, which the workers' task channels keep (dtf.bus.connect
# moves only the coordinator queues' bookkeeping to keys of their own).
TASK_UNACKED_KEY = "unacked"
TASK_UNACKED_INDEX_KEY = "unacked_index"
MAX_HELD = 10_000


class CoordinatorPort(Protocol):
    def send_tests(self, tasks: Sequence[TestTask]) -> None:
        """Publish run_test tasks, pipelined where the transport can."""

    def reply(self, request: Mapping[str, Any], payload: Mapping[str, Any]) -> None:
        """Answer a control message on its reply queue, if it named one."""

    def queue_depth(self, queue: str) -> int | None:
        """Messages waiting in a queue; 0 when there is no such queue; None when unknown."""

    def dead_letter(self, queue: str, reason: str, body: Any) -> None:
        """Record a refused message (dtf.wire.dead_letter)."""

    def held_tasks(self, older_than_s: float) -> list[str]:
        """Task ids of run_test messages that workers took (late acks: unacked) more than
        ``older_than_s`` ago and have not acked; [] when unknown."""

    def dead_letters(self) -> int:
        """How many messages were refused, by any leader."""

    def lost_data(self) -> bool:
        """Re-create the hardware queues; True when the broker lost its data since the last term."""

    def put_marker(self) -> None:
        """Leave the message whose absence says the broker lost its data."""


class KombuPort:
    """The real port: the leader's producer (None before ``serve`` connects: tasks go through
    the app's producer pool, replies and queue sizes are skipped)."""

    def __init__(self, app: Celery, producer: Producer | None = None, *, embedded: bool = False) -> None:
        self.app = app
        self.producer = producer
        self.embedded = embedded

    def send_tests(self, tasks: Sequence[TestTask]) -> None:
        with producer_batch(self.producer, min(1000, len(tasks))):
            for payload, queue, task_id in tasks:
                send_test(self.app, self.producer, payload, queue, task_id)

    def reply(self, request: Mapping[str, Any], payload: Mapping[str, Any]) -> None:
        if self.producer is not None:
            reply(self.producer, request, payload)

    def queue_depth(self, queue: str) -> int | None:
        if self.producer is None:
            return None
        try:
            return int(self.producer.channel.queue_declare(queue=queue, passive=True).message_count)
        except ChannelError:
            return 0
        except Exception as exc:  # noqa: BLE001 - a broker hiccup: decide next time
            log.info("cannot size queue %s: %s", queue, first_line(exc))
            return None

    def _redis(self) -> Any:
        """The broker's redis-py client (None on the in-memory broker)."""
        channel = getattr(self.producer, "channel", None)
        return getattr(channel, "client", None) if not self.embedded else None

    def dead_letter(self, queue: str, reason: str, body: Any) -> None:
        dead_letter(self._redis(), queue, reason, body)

    def held_tasks(self, older_than_s: float) -> list[str]:
        # kombu's Redis transport keeps each delivered, unacked message in a hash (tag ->
        # [message, exchange, routing key]) and its delivery time in a sorted set.
        client = self._redis()
        if client is None:
            return []
        try:
            tags = client.zrangebyscore(TASK_UNACKED_INDEX_KEY, "-inf", time.time() - older_than_s, start=0, num=MAX_HELD)
            raws = client.hmget(TASK_UNACKED_KEY, tags) if tags else []
        except Exception as exc:  # noqa: BLE001 - a lookup for recovery only
            log.info("cannot read the workers' unacked tasks: %s", first_line(exc))
            return []
        ids = []
        for raw in raws:
            try:
                task_id = json.loads(raw)[0]["headers"]["id"]
            except (TypeError, ValueError, KeyError, IndexError):
                continue
            if isinstance(task_id, str):
                ids.append(task_id)
        return ids

    def dead_letters(self) -> int:
        return dead_letter_count(self._redis())

    def lost_data(self) -> bool:
        # A Redis that restarted empty lost the exchange bindings too, and a publish to the
        # hardware queues would fail; dtf's marker message, put there by an earlier term, is gone with it.
        if self.embedded or self.producer is None:
            return False
        channel = self.producer.channel
        for queue in hardware_queues():
            queue.bind(channel).declare()
        # Requirement queues (dtf.requirements) are declared on first publish and cached per
        # connection: forget the cache so that the next publish declares them again.
        declared = getattr(getattr(getattr(channel, "connection", None), "client", None), "declared_entities", None)
        if declared is not None:
            declared.clear()
        return self.queue_depth(MARKER_QUEUE) == 0

    def put_marker(self) -> None:
        if self.producer is not None:
            self.producer.publish({"marker": "dtf", "at": time.time()}, exchange="", routing_key=MARKER_QUEUE,
                                  declare=[Queue(MARKER_QUEUE, durable=True)])


class MemoryPort:
    """Everything the coordinator sends, kept in lists: tasks per queue (a test takes them off
    with ``take``), replies per reply queue, dead letters."""

    def __init__(self) -> None:
        self.queues: dict[str, list[dict[str, Any]]] = {}
        self.task_ids: list[str] = []
        self.replies: dict[str, list[dict[str, Any]]] = {}
        self.dead: list[tuple[str, str, Any]] = []
        self.held: list[str] = []  # task ids a test says workers hold unacked (held_tasks)

    def send_tests(self, tasks: Sequence[TestTask]) -> None:
        for payload, queue, task_id in tasks:
            self.queues.setdefault(queue, []).append(dict(payload))
            self.task_ids.append(task_id)

    def take(self, queue: str) -> list[dict[str, Any]]:
        """Every task waiting on ``queue``, taken off it (what workers would consume)."""
        return self.queues.pop(queue, [])

    def reply(self, request: Mapping[str, Any], payload: Mapping[str, Any]) -> None:
        reply_to = request.get("reply_to")
        if reply_to:
            self.replies.setdefault(str(reply_to), []).append(dict(payload, correlation_id=request.get("correlation_id")))

    def queue_depth(self, queue: str) -> int | None:
        return len(self.queues.get(queue, []))

    def dead_letter(self, queue: str, reason: str, body: Any) -> None:
        self.dead.append((queue, reason, body))

    def held_tasks(self, older_than_s: float) -> list[str]:
        return list(self.held)

    def dead_letters(self) -> int:
        return len(self.dead)

    def lost_data(self) -> bool:
        return False

    def put_marker(self) -> None:
        pass


class MemoryMessage:
    """What the coordinator needs of a message it was handed: ack, or requeue."""

    channel = None

    def __init__(self) -> None:
        self.acked = False
        self.requeued = False

    def ack(self) -> None:
        self.acked = True

    def requeue(self) -> None:
        self.requeued = True
