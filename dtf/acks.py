"""Acknowledging a batch of kombu messages in one broker round trip.

kombu acks one message at a time; on Redis each ack is a pipeline of ZREM and HDEL on
the unacked index, one round trip per message. The coordinator acks a whole batch of
results after one DuckDB transaction, so it sends every removal in a single pipeline,
then lets kombu forget each message locally, exactly as its own ack would.

Transports without that index (the in-memory one of the embedded mode, AMQP) get kombu's
per-message ack.
"""

from __future__ import annotations

from typing import Sequence

from kombu import Message
from kombu.transport import virtual

__all__ = ["ack_all"]


def ack_all(messages: Sequence[Message]) -> None:
    """Ack every message; one round trip per channel on Redis."""
    by_channel: dict[int, list[Message]] = {}
    for message in messages:
        by_channel.setdefault(id(message.channel), []).append(message)
    for batch in by_channel.values():
        qos = getattr(batch[0].channel, "qos", None)
        remove = getattr(qos, "_remove_from_indices", None)
        pipe_or_acquire = getattr(qos, "pipe_or_acquire", None)
        if len(batch) == 1 or remove is None or pipe_or_acquire is None or not isinstance(qos, virtual.QoS):
            for message in batch:
                message.ack()
            continue
        with pipe_or_acquire() as pipe:
            for message in batch:
                remove(message.delivery_tag, pipe)
            pipe.execute()
        for message in batch:  # what Redis QoS.ack does after its own pipeline
            virtual.QoS.ack(qos, message.delivery_tag)
            message._state = "ACK"
