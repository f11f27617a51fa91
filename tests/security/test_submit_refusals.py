"""What dtf refuses before anything reaches Redis: unknown hardware in a suite, queues no
worker could consume, and tests over the payload cap. Checked against a real redis-server
whose keyspace and connection count must not move."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from dtf.app import make_app
from dtf.bus import RUN_TEST
from dtf.client import CoordinatorClient
from dtf.errors import PayloadTooLarge
from dtf.model import RenderedTest, TestSpec
from dtf.settings import Settings

from ..conftest import Processes, RedisServer, dtf_cmd, dtf_env
from .conftest import TEMPLATES, client, connections_received, keyspace, wait_until

pytestmark = pytest.mark.redis


def submit(tmp_path: Path, server: RedisServer, suite_text: str, **env: str) -> subprocess.CompletedProcess[str]:
    suite = tmp_path / "suite.yaml"
    suite.write_text(suite_text)
    return subprocess.run(dtf_cmd("submit", str(suite), "--templates", str(TEMPLATES)),
                          env=dtf_env(DTF_BROKER_URL=server.url, **env), cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


def untouched(server: RedisServer) -> tuple[dict[str, str], int]:
    conn = client(server)
    return keyspace(conn), connections_received(conn)


def test_unknown_hardware_is_refused_before_dtf_even_connects_to_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    keys_before, connections_before = untouched(redis_server)
    proc = submit(tmp_path, redis_server, "name: s\nmodels: [gpt2]\nhardware: [cpu, tpu]\nbatch_sizes: [1]\n")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: {tmp_path / 'suite.yaml'}: hardware[1]: unknown hardware 'tpu' "
                                   "(expected one of cpu, cuda, rocm, mps, webgpu)")
    keys_after, connections_after = untouched(redis_server)
    assert keys_before == keys_after == {}
    assert connections_after == connections_before + 1  # only this check's own connection


def test_unknown_hardware_on_one_model_is_refused_the_same_way(tmp_path: Path, redis_server: RedisServer) -> None:
    proc = submit(tmp_path, redis_server,
                  "name: s\nmodels: [{name: gpt2, hardware: [tpu]}]\nhardware: [cpu]\nbatch_sizes: [1]\n")
    assert proc.returncode == 2 and "models[0].hardware[0]: unknown hardware 'tpu'" in proc.stderr
    assert untouched(redis_server)[0] == {}


def test_a_task_for_an_undeclared_queue_raises_instead_of_creating_the_queue(redis_server: RedisServer) -> None:
    app = make_app(Settings(broker_url=redis_server.url))
    assert app.conf.task_create_missing_queues is False
    for queue in ("dtf.tpu", "celery", "dtf.cuda.sm90"):
        with pytest.raises(Exception, match=f"Queue '{queue}' missing from task_queues"):
            app.send_task(RUN_TEST, args=[{}], queue=queue)
    assert not any("tpu" in key or "celery" in key or "sm90" in key for key in keyspace(client(redis_server)))


@pytest.mark.parametrize("queues", ["dtf.tpu", "tpu", "dtf.cpu,../x", "dtf.cpu;FLUSHALL"])
def test_a_worker_asked_for_an_unknown_queue_refuses_to_start(
    tmp_path: Path, redis_server: RedisServer, queues: str
) -> None:
    proc = subprocess.run(dtf_cmd("worker", "--queues", queues), env=dtf_env(DTF_BROKER_URL=redis_server.url),
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    last = proc.stderr.strip().splitlines()[-1]  # after the INFO lines of hardware detection
    assert proc.returncode == 2 and last.startswith("error:") and "queue" in last, proc.stderr
    assert untouched(redis_server)[0] == {}


# -- the payload cap ---------------------------------------------------------------------------------

BIG_PARAM_SUITE = """\
name: big
models:
  - {{name: big-model, family: sec, template: sec/marker, params: {{marker: "{marker}"}}}}
hardware: [cpu]
batch_sizes: [1]
"""


def test_a_param_that_makes_the_rendered_test_too_big_is_refused_before_publishing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    keys_before, connections_before = untouched(redis_server)
    proc = submit(tmp_path, redis_server, BIG_PARAM_SUITE.format(marker="x" * 5000), DTF_MAX_PAYLOAD_BYTES="4096")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: test big-model/cpu/bs1/fp32: rendered payload is ")
    assert proc.stderr.rstrip().endswith("bytes, over the 4096-byte cap")
    assert untouched(redis_server) == (keys_before, connections_before + 1)


def _test_of_size(size: int) -> RenderedTest:
    spec = TestSpec("cap/cpu/bs1/fp32", "cap", "sec", "cpu", 1, "fp32", "sec/ok")
    bare = len(json.dumps(RenderedTest(spec, "", "h").to_dict()))
    return RenderedTest(spec, "#" * (size - bare), "h")


def test_a_test_one_byte_over_the_cap_is_refused_by_the_client(redis_server: RedisServer) -> None:
    cap = 50_000
    client_ = CoordinatorClient(make_app(Settings(broker_url=redis_server.url, max_payload_bytes=cap)))
    # The client measures the task payload the coordinator will publish (the test plus run id
    # and attempt), so the figure it names is a little above the test's own size.
    with pytest.raises(PayloadTooLarge, match=rf"is \d+ bytes, over the {cap}-byte cap"):
        client_.submit({"run_id": "over"}, [_test_of_size(cap + 1)])
    assert keyspace(client(redis_server)) == {}


@pytest.mark.slow
def test_a_test_at_the_cap_is_either_refused_up_front_or_published(
    tmp_path: Path, redis_server: RedisServer, processes: Processes
) -> None:
    cap = 50_000
    env = dtf_env(DTF_BROKER_URL=redis_server.url, DTF_MAX_PAYLOAD_BYTES=str(cap))
    processes.start("coordinator", ["coordinator", "--db", str(tmp_path / "c.duckdb")], env, tmp_path)
    app = make_app(Settings(broker_url=redis_server.url, max_payload_bytes=cap))
    try:
        CoordinatorClient(app, timeout_s=30).submit({"run_id": "at-cap"}, [_test_of_size(cap)])
    except PayloadTooLarge:
        return  # refused before anything was stored or published: fine
    conn = client(redis_server)
    assert wait_until(lambda: conn.llen("dtf.cpu") == 1, 15), processes.log("coordinator")
    assert json.loads(conn.lindex("dtf.cpu", 0))["headers"]["task"] == RUN_TEST
