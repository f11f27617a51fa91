"""Size caps (issue 14, item 7) against a real redis-server and a real `dtf coordinator`:
a status query with a 50 MB run id is refused before it is parsed (over the control queue's
raw cap) and a heartbeat with a 1 MB hostname by its field cap; both are dead-lettered with a
one-line reason, neither the log nor the dead-letter list holds more than a bounded head of
them, and the coordinator answers and lists no forged worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtf.app import make_app
from dtf.bus.protocol import raw_item_cap
from dtf.client import CoordinatorClient
from dtf.settings import Settings
from dtf.wire import DEAD_LETTER_HEAD

from ..conftest import Processes, RedisServer
from .conftest import client, wait_until
from .test_hostile_messages import dead, publish, start

pytestmark = [pytest.mark.redis, pytest.mark.slow]

FIFTY_MB = 50 * 1024 * 1024
ONE_MB = 1024 * 1024


def test_a_50_mb_run_id_and_a_1_mb_hostname_are_refused_not_logged(
    tmp_path: Path, redis_server: RedisServer, processes: Processes,
) -> None:
    start(tmp_path, redis_server, processes)
    conn = client(redis_server)
    url = redis_server.url
    publish(url, "dtf.coordinator", {"op": "status", "run_id": "r" * FIFTY_MB, "reply_to": "dtf.reply.big",
                                     "correlation_id": "c"})
    publish(url, "dtf.coordinator", {"op": "heartbeat", "worker": {"worker_id": "big@x", "hostname": "h" * ONE_MB}})
    assert wait_until(lambda: len(dead(conn)) >= 2, 120), processes.log("coordinator")[-2000:]
    reasons = [e["reason"] for e in dead(conn)]
    raw_cap = raw_item_cap("dtf.coordinator", Settings().max_payload_bytes)
    assert any(r.endswith(f"bytes, over the {raw_cap}-byte cap of dtf.coordinator") for r in reasons), reasons
    assert any(r.startswith("hostname: 1048576 characters, over the") for r in reasons), reasons
    assert all(len(e.get("head") or "") <= DEAD_LETTER_HEAD for e in dead(conn))
    assert len(processes.log("coordinator")) < 100_000  # refused in one line, not logged whole
    assert conn.llen("dtf.reply.big") == 0  # no answer computed for it
    app = make_app(Settings(broker_url=url))
    assert CoordinatorClient(app, timeout_s=30).call("ping")["pong"] is True
    assert "big@x" not in {w["worker_id"] for w in CoordinatorClient(app, timeout_s=30).call("workers")}
