"""Workers and the coordinator accept JSON only. Messages pushed by hand into the queues of
a real redis-server (a pickle that would create a file when unpickled, a pickle labelled as
JSON, YAML) are refused and never executed; the processes keep running and still do their
work afterwards."""

from __future__ import annotations

import builtins
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Producer, Queue

from dtf import bus as app_module
from dtf.app import make_app
from dtf.bus import RUN_TEST, TASK_EXCHANGE
from dtf.client import CoordinatorClient
from dtf.model import TestSpec
from dtf.settings import Settings
from dtf.templates import TemplateRegistry

from ..conftest import Processes, RedisServer, dtf_env
from .conftest import TEMPLATES, client, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]


class CreatesFileWhenUnpickled:
    """pickle.loads of this calls open(path, "w"): proof of execution if the file appears."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.open, (self.path, "w"))


def task_headers(task_id: str) -> dict[str, Any]:
    """Celery message protocol 2 headers for dtf.run_test."""
    return {"lang": "py", "task": RUN_TEST, "id": task_id, "root_id": task_id, "parent_id": None, "group": None,
            "argsrepr": "", "kwargsrepr": "", "origin": "attacker@nowhere", "retries": 0, "eta": None,
            "expires": None, "timelimit": [None, None], "shadow": None, "ignore_result": True}


def push(url: str, queue: str, body: Any, *, serializer: str | None = None, content_type: str | None = None,
         task: bool = False) -> None:
    """Publish one hand-made message straight to a queue, as an intruder with broker access would."""
    with Connection(url) as conn:
        producer = Producer(conn.channel())
        headers = task_headers(str(uuid.uuid4())) if task else {}
        exchange, declare = ("dtf", [Queue(queue, TASK_EXCHANGE, routing_key=queue, durable=True)]) if task else (
            "", [Queue(queue, durable=True)])
        if content_type is not None:  # raw bytes with a label of our choosing
            producer.publish(body, exchange=exchange, routing_key=queue, headers=headers, declare=declare,
                             content_type=content_type, content_encoding="binary")
        else:
            producer.publish(body, exchange=exchange, routing_key=queue, headers=headers, declare=declare,
                             serializer=serializer)


def pickled_task(marker: Path) -> tuple[Any, ...]:
    """A protocol 2 task body: (args, kwargs, embed), args holding the payload."""
    return ((CreatesFileWhenUnpickled(marker),), {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None})


def good_task(url: str, marker: Path) -> None:
    spec = TestSpec("good/cpu/bs1/fp32", "good", "sec", "cpu", 1, "fp32", "sec/marker", params={"marker": str(marker)})
    rendered = TemplateRegistry([TEMPLATES]).render(spec)
    make_app(Settings(broker_url=url)).send_task(RUN_TEST, args=[app_module.task_payload("after-attack", 1, rendered)],
                                                 queue="dtf.cpu", task_id="after-attack:good:1")


def test_a_worker_refuses_pickled_and_mislabelled_tasks_and_still_runs_a_good_one(
    tmp_path: Path, redis_server: RedisServer, processes: Processes
) -> None:
    env = dtf_env(DTF_BROKER_URL=redis_server.url, DTF_SPOOL_DIR=str(tmp_path / "spool"))
    worker = processes.start("worker", ["worker", "--name", "victim@sec", "--queues", "dtf.cpu",
                                        "--concurrency", "1", "--loglevel", "INFO"], env, tmp_path)
    assert wait_until(lambda: " ready." in processes.log("worker"), 60), processes.log("worker")
    conn = client(redis_server)
    markers = [tmp_path / f"pwned-{i}" for i in range(3)]
    push(redis_server.url, "dtf.cpu", pickled_task(markers[0]), serializer="pickle", task=True)
    import pickle

    push(redis_server.url, "dtf.cpu", pickle.dumps(pickled_task(markers[1])), content_type="application/json",
         task=True)
    push(redis_server.url, "dtf.cpu", {"args": [str(markers[2])]}, serializer="yaml", task=True)
    assert wait_until(lambda: conn.llen("dtf.cpu") == 0 and not conn.hlen("unacked"), 30)

    good = tmp_path / "good-marker"
    good_task(redis_server.url, good)
    assert wait_until(good.exists, 60), processes.log("worker")
    assert wait_until(lambda: conn.llen("dtf.results") == 1, 30)
    result = json.loads(conn.lindex("dtf.results", 0))
    assert result["content-type"] == "application/x-dtf-signed+json"  # JSON, signed by default

    log = processes.log("worker")
    assert not any(m.exists() for m in markers), log
    assert worker.poll() is None, log
    assert "Refusing to deserialize untrusted content of type pickle" in log
    assert "Refusing to deserialize untrusted content of type yaml" in log
    assert "Can't decode message body" in log or "invalid task message" in log.lower()


def start_coordinator(tmp_path: Path, server: RedisServer, processes: Processes) -> Any:
    env = dtf_env(DTF_BROKER_URL=server.url)
    proc = processes.start("coordinator", ["coordinator", "--db", str(tmp_path / "c.duckdb")], env, tmp_path)
    assert wait_until(lambda: "leading" in processes.log("coordinator"), 60), processes.log("coordinator")
    return proc


def test_the_coordinator_never_unpickles_what_is_pushed_into_its_queues(
    tmp_path: Path, redis_server: RedisServer, processes: Processes
) -> None:
    coordinator = start_coordinator(tmp_path, redis_server, processes)
    results_marker, control_marker = tmp_path / "pwned-results", tmp_path / "pwned-control"
    push(redis_server.url, "dtf.results", {"kind": "result", "result": CreatesFileWhenUnpickled(results_marker)},
         serializer="pickle")
    push(redis_server.url, "dtf.coordinator", {"op": "ping", "x": CreatesFileWhenUnpickled(control_marker)},
         serializer="pickle")
    assert wait_until(lambda: processes.log("coordinator").count("Refusing to deserialize untrusted content") >= 2, 30)
    assert not results_marker.exists() and not control_marker.exists()
    assert coordinator.poll() is None, processes.log("coordinator")


def test_a_refused_message_does_not_block_the_coordinator_queues(
    tmp_path: Path, redis_server: RedisServer, processes: Processes
) -> None:
    start_coordinator(tmp_path, redis_server, processes)
    push(redis_server.url, "dtf.results", {"kind": "result"}, serializer="pickle")
    push(redis_server.url, "dtf.coordinator", {"op": "ping"}, serializer="pickle")
    time.sleep(5)  # a message put back would come round again every couple of seconds
    log = processes.log("coordinator")
    assert log.count("Refusing to deserialize") <= 2, log  # each refused once, then dropped
    conn = client(redis_server)
    assert conn.llen("dtf.results") == conn.llen("dtf.coordinator") == conn.hlen("unacked") == 0
    answer = CoordinatorClient(make_app(Settings(broker_url=redis_server.url)), timeout_s=10).call("ping")
    assert answer["pong"] is True
