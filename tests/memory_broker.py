"""Helpers for tests that drive dtf pieces in-process on kombu's in-memory broker: take
what was published to a queue, submit through the coordinator's control handler."""

from __future__ import annotations

import uuid
from typing import Any, Mapping, Sequence

from kombu import Producer

from dtf.bus import KombuPort, MemoryMessage, submit_body
from dtf.model import RenderedTest

FakeMessage = MemoryMessage  # what the coordinator needs of a message: ack, requeue


def drain(app: Any, queue: str) -> list[Any]:
    """Every message waiting in ``queue``, taken off it (kombu Message objects)."""
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        messages = []
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            messages.append(message)
        return messages


def drain_bodies(app: Any, queue: str) -> list[Any]:
    """The decoded bodies of every message waiting in ``queue``."""
    return [m.decode() for m in drain(app, queue)]


def empty(app: Any, *queues: str) -> None:
    """Drop whatever earlier tests left in these queues (declared or not)."""
    for queue in queues:
        try:
            drain(app, queue)
        except Exception:  # noqa: BLE001 - never declared: nothing to drop
            pass


def submit(coordinator: Any, run: Mapping[str, Any], tests: Sequence[RenderedTest]) -> str:
    """Submit a run the way a client does: its submit chunks (dtf.bus.submit_body, 200 tests
    each) handed to the coordinator's control handler, each acked once stored."""
    dicts = [t.to_dict() for t in tests]
    chunks = [dicts[i:i + 200] for i in range(0, len(dicts), 200)] or [[]]
    submit_id = uuid.uuid4().hex
    for body in (submit_body(submit_id, run, i, len(chunks), chunk) for i, chunk in enumerate(chunks)):
        message = MemoryMessage()
        coordinator.on_control(body, message)
        assert message.acked
    return str(run["run_id"])


def attach(coordinator: Any, channel: Any) -> None:
    """Give a coordinator the port ``serve`` would give it, on this channel's producer."""
    coordinator.port = KombuPort(coordinator.app, Producer(channel, serializer="json"), embedded=True)
