"""Every consumer survives every message (issue 14, item 1). Against a real redis-server and
real `dtf coordinator` / `dtf worker` processes, hostile or broken messages are pushed onto
the queues: raw bytes that are not JSON, JSON that is not a kombu message, results whose
fields have the wrong types or an invented status, heartbeats with huge or mistyped
fields, control messages that aim replies at a work queue. Each is acked and dead-lettered
on ``dtf.dead`` with its reason; afterwards the processes are alive, answer, and a normal
suite completes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu import Producer, Queue

from dtf.app import make_app
from dtf.bus import wire_format
from dtf.client import CoordinatorClient
from dtf.bus import CONTROL_UNACKED_KEY
from dtf.settings import Settings
from dtf.wire import DEAD_LETTER_QUEUE, check_envelope, MessageRefused

from ..conftest import Processes, RedisServer, dtf_cmd, dtf_env
from .conftest import TEMPLATES, TINY_SUITE, client, wait_until
from .test_untrusted_messages import good_task

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def publish(url: str, queue: str, body: Any) -> None:
    """A JSON body published as dtf's own processes would (signed when they sign): what a
    holder of the broker credentials (and key) can send."""
    app = make_app(Settings(broker_url=url))
    with app.connection_for_write() as conn:
        Producer(conn.channel(), serializer=wire_format(app)[0]).publish(
            body, exchange="", routing_key=queue, declare=[Queue(queue, durable=True)])


def dead(conn: Any) -> list[dict[str, Any]]:
    return [json.loads(e) for e in conn.lrange(DEAD_LETTER_QUEUE, 0, -1)]


def submit_tiny(tmp_path: Path, env: dict[str, str]) -> dict[str, Any]:
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY_SUITE)
    proc = subprocess.run(dtf_cmd("submit", str(suite), "--wait", "--timeout", "90", "--format", "json",
                                  "--templates", str(TEMPLATES)), env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(json.loads(proc.stdout[proc.stdout.index("{"):]))


def start(tmp_path: Path, server: RedisServer, processes: Processes, *, coordinator: bool = True) -> dict[str, str]:
    env = dtf_env(DTF_BROKER_URL=server.url, DTF_SPOOL_DIR=str(tmp_path / "spool"))
    if coordinator:
        processes.start("coordinator", ["coordinator", "--db", str(tmp_path / "c.duckdb")], env, tmp_path)
        assert wait_until(lambda: "leading" in processes.log("coordinator"), 60), processes.log("coordinator")
    processes.start("worker", ["worker", "--name", "victim@sec", "--queues", "dtf.cpu", "--concurrency", "1",
                               "--loglevel", "INFO"], env, tmp_path)
    assert wait_until(lambda: " ready." in processes.log("worker"), 60), processes.log("worker")
    return env


def test_the_coordinator_dead_letters_mistyped_forged_and_raw_messages_and_goes_on(
    tmp_path: Path, redis_server: RedisServer, processes: Processes
) -> None:
    env = start(tmp_path, redis_server, processes)
    conn = client(redis_server)
    url = redis_server.url
    # Wrong JSON types where the batch check compares and hashes them.
    publish(url, "dtf.results", {"kind": "result", "result": {"run_id": ["r"], "test_id": "t", "attempt": "1",
                                                               "status": "passed", "duration_s": "slow"}})
    publish(url, "dtf.results", {"kind": "result", "result": {"run_id": "r", "test_id": "t", "attempt": 1,
                                                               "status": "owned"}})  # invented status
    publish(url, "dtf.results", ["not", "an", "object"])
    publish(url, "dtf.coordinator", {"op": "heartbeat", "worker": {"worker_id": "fake@x", "hostname": "h" * 1_000_000}})
    publish(url, "dtf.coordinator", {"op": "heartbeat", "worker": {"worker_id": "fake@y", "queues": "dtf.cpu"}})
    publish(url, "dtf.coordinator", {"op": "started", "run_id": "r", "test_id": {}, "attempt": 1})
    publish(url, "dtf.coordinator", {"op": "ping", "reply_to": "dtf.cpu", "correlation_id": "c"})
    publish(url, "dtf.coordinator", {"op": "status", "run_id": "r" * 1_000_000})
    publish(url, "dtf.coordinator", [1, 2, 3])
    conn.lpush("dtf.results", b"not-json")
    conn.lpush("dtf.coordinator", b'{"no": "envelope"}')

    reasons = lambda: [e["reason"] for e in dead(conn)]  # noqa: E731
    assert wait_until(lambda: len(dead(conn)) >= 11, 60), (reasons(), processes.log("coordinator"))
    found = "\n".join(reasons())
    for expected in ("run_id: expected a string", "status: 'owned'", "hostname", "queues", "test_id", "reply_to",
                     "characters, over", "not JSON", "properties", "expected an object"):
        assert expected in found, found
    answer = CoordinatorClient(make_app(Settings(broker_url=url)), timeout_s=20).call("ping")
    assert answer["pong"] is True
    # Nothing left behind (a live heartbeat may be in flight for a moment: wait for a quiet instant).
    assert wait_until(lambda: conn.llen("dtf.results") == conn.llen("dtf.coordinator") == conn.hlen(CONTROL_UNACKED_KEY)
                      == 0, 30)
    assert conn.llen("dtf.cpu") == 0  # no reply was sent to the work queue
    workers = CoordinatorClient(make_app(Settings(broker_url=url)), timeout_s=20).call("workers")
    assert {w["worker_id"] for w in workers} == {"victim@sec"}

    data = submit_tiny(tmp_path, env)
    assert {t["status"] for t in data["tests"]} == {"passed"}, data
    status = CoordinatorClient(make_app(Settings(broker_url=url)), timeout_s=20).call(
        "status", run_id=data["run"]["run_id"])
    assert status["refused_messages"] >= 11
    assert processes.log("coordinator").count("refused a message") == len(dead(conn))  # once each


RAW_ITEMS = [
    b"not-json", b"[]", b"{}", b"null", b'"text"', b"\xff\xfe", b'{"properties": {}}',
    b'{"properties": {"delivery_tag": "t", "delivery_info": {"exchange": "", "routing_key": "dtf.cpu"}}, "body": "%%%",'
    b' "properties2": 1}',
]


def valid_task_item(url: str) -> dict[str, Any]:
    """A real run_test message as it sits in Redis, taken from a queue nobody consumes."""
    app = make_app(Settings(broker_url=url), extra_queues=("dtf.capture",))
    from dtf import bus as app_module
    from dtf.model import TestSpec
    from dtf.templates import TemplateRegistry

    spec = TestSpec("m/cpu/bs1/fp32", "m", "sec", "cpu", 1, "fp32", "sec/ok")
    payload = app_module.task_payload("capture", 1, TemplateRegistry([TEMPLATES]).render(spec))
    app.send_task("dtf.run_test", args=[payload], queue="dtf.capture", task_id="capture:m:1")
    import redis as redis_py

    raw = redis_py.Redis.from_url(url).rpop("dtf.capture")
    assert raw is not None
    return dict(json.loads(raw))


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                        max_size=4), max_leaves=10)


def test_a_worker_survives_raw_garbage_and_a_fuzzed_campaign_on_its_queue_and_still_runs_a_good_task(
    tmp_path: Path, redis_server: RedisServer, processes: Processes
) -> None:
    start(tmp_path, redis_server, processes, coordinator=False)
    conn = client(redis_server)
    template = valid_task_item(redis_server.url)
    pushed: list[bytes] = list(RAW_ITEMS)
    for key in ("headers", "properties", "body", "content-type"):
        for bad in ([], "x", 1, None):
            pushed.append(json.dumps(dict(template, **{key: bad})).encode())
    for key, bad in (("id", ["x"]), ("task", "celery.ping"), ("timelimit", "x"), ("retries", "1"), ("eta", 5),
                     ("stamped_headers", ["x"])):
        pushed.append(json.dumps(dict(template, headers=dict(template["headers"], **{key: bad}))).encode())

    @settings(max_examples=120, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(
        st.binary(max_size=64),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.tuples(st.sampled_from(["headers", "properties", "body", "content-type", "content-encoding"]),
                  json_values).map(lambda kv: json.dumps(dict(template, **{kv[0]: kv[1]})).encode()),
        st.tuples(st.sampled_from(sorted(template["headers"])), json_values).map(
            lambda kv: json.dumps(dict(template, headers=dict(template["headers"], **{kv[0]: kv[1]}))).encode()),
    ))
    def campaign(item: bytes) -> None:
        pushed.append(item)

    campaign()
    for item in pushed:
        conn.lpush("dtf.cpu", item)
    assert wait_until(lambda: conn.llen("dtf.cpu") == 0 and not conn.hlen("unacked"), 90), processes.log("worker")

    good = tmp_path / "good-marker"
    good_task(redis_server.url, good)
    assert wait_until(good.exists, 60), processes.log("worker")
    log = processes.log("worker")
    assert processes.procs[0].poll() is None, log
    assert "Unrecoverable error" not in log, log
    refused = sum(1 for item in pushed if _refused(item))
    assert len(dead(conn)) >= min(refused, 1000)


def _refused(item: bytes) -> bool:
    try:
        check_envelope(item, "dtf.cpu")
    except MessageRefused:
        return True
    return False
