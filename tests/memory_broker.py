"""Helpers for tests that drive dtf pieces in-process on kombu's in-memory broker: take
what was published to a queue, and a message stand-in that records its ack."""

from __future__ import annotations

from typing import Any


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


class FakeMessage:
    """What the coordinator needs of a kombu message it was handed."""

    channel = None

    def __init__(self) -> None:
        self.acked = False

    def ack(self) -> None:
        self.acked = True
