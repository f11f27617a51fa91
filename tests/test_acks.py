"""ack_all against a real redis-server: one pipeline removes a batch from kombu's unacked
index, and kombu forgets the messages as its own ack would."""

from __future__ import annotations

import pytest
import redis
from kombu import Connection, Consumer, Producer, Queue

from dtf.acks import ack_all

from .conftest import RedisServer


@pytest.mark.redis
def test_a_batch_is_acked_in_redis_and_in_kombu(redis_server: RedisServer) -> None:
    queue = Queue("acks.test", durable=True)
    got = []
    with Connection(redis_server.url) as conn:
        producer = Producer(conn.channel(), serializer="json")
        for i in range(5):
            producer.publish({"i": i}, routing_key="acks.test", declare=[queue])
        channel = conn.channel()
        with Consumer(channel, [queue], callbacks=[lambda body, m: got.append(m)], accept=["json"], prefetch_count=10):
            while len(got) < 5:
                conn.drain_events(timeout=5)
        client = redis.Redis.from_url(redis_server.url)
        assert client.zcard("unacked_index") == 5
        ack_all(got)
        assert client.zcard("unacked_index") == 0 and client.hlen("unacked") == 0
        assert all(m.acknowledged for m in got)
        channel.qos._flush()  # kombu drops acked tags lazily
        assert not channel.qos._delivered  # kombu forgot them: nothing to restore at close


def test_messages_without_a_redis_index_are_acked_one_by_one() -> None:
    queue = Queue("acks.memory")
    got = []
    with Connection("memory://") as conn:
        producer = Producer(conn.channel(), serializer="json")
        for i in range(3):
            producer.publish({"i": i}, routing_key="acks.memory", declare=[queue])
        with Consumer(conn.channel(), [queue], callbacks=[lambda body, m: got.append(m)], accept=["json"]):
            while len(got) < 3:
                conn.drain_events(timeout=5)
        ack_all(got)
        assert all(m.acknowledged for m in got)
