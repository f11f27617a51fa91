"""Signing is on by default (issue 14, item 2): with no key configured, a worker runs only
tasks signed with the key its dtf processes share (made on first use in the state dir for a
broker on this machine); a task pushed by anyone else who can write to the queue, for a run
the coordinator never published, is refused and never executed. Against a broker on the
network, dtf refuses to start without a key unless the loudly named opt-out is set."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from dtf.settings import Settings
from dtf.signing import default_key_file, default_signing_keys, read_key_file

from ..conftest import Processes, RedisServer, dtf_cmd, dtf_env
from .conftest import client, wait_until
from .test_untrusted_messages import good_task, push

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def marker_task_body(marker: Path) -> tuple[object, ...]:
    spec = {"test_id": "forged/cpu/bs1/fp32", "model": "forged", "family": "sec", "hardware": "cpu", "batch_size": 1,
            "precision": "fp32", "template": "sec/marker", "params": {}}
    source = f"open({str(marker)!r}, 'w').write('pwned')\n"
    payload = {"run_id": "never-published", "attempt": 1, "test": {"spec": spec, "source": source, "template_hash": "x"}}
    return ([payload], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None})


def test_with_no_key_configured_a_worker_refuses_an_unsigned_task_and_runs_a_signed_one(
    tmp_path: Path, redis_server: RedisServer, processes: Processes
) -> None:
    env = dtf_env(DTF_BROKER_URL=redis_server.url, DTF_SPOOL_DIR=str(tmp_path / "spool"))
    assert "DTF_SIGNING_KEY" not in env and "DTF_SIGNING_KEY_FILE" not in env
    worker = processes.start("worker", ["worker", "--name", "w@sec", "--queues", "dtf.cpu", "--concurrency", "1",
                                        "--loglevel", "INFO"], env, tmp_path)
    assert wait_until(lambda: " ready." in processes.log("worker"), 60), processes.log("worker")
    forged = tmp_path / "pwned"
    push(redis_server.url, "dtf.cpu", marker_task_body(forged), serializer="json", task=True)
    conn = client(redis_server)
    assert wait_until(lambda: conn.llen("dtf.cpu") == 0 and not conn.hlen("unacked"), 30), processes.log("worker")

    good = tmp_path / "good-marker"
    good_task(redis_server.url, good)  # an app with default settings: signs with the shared key
    assert wait_until(good.exists, 60), processes.log("worker")
    assert not forged.exists(), processes.log("worker")
    assert worker.poll() is None
    assert "untrusted content of type json" in processes.log("worker")
    key_file = default_key_file()
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600 and len(read_key_file(key_file)[0]) >= 32


@pytest.mark.parametrize("command", ["worker", "coordinator"])
def test_against_a_network_broker_dtf_will_not_start_without_a_key(tmp_path: Path, command: str) -> None:
    env = dtf_env(DTF_BROKER_URL="redis://192.0.2.10:6379/0", XDG_STATE_HOME=str(tmp_path / "state"))
    proc = subprocess.run(dtf_cmd(command), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if " INFO " not in line]  # the worker's detection log
    assert len(lines) == 1 and "dtf keygen" in lines[0] and "DTF_INSECURE_NO_SIGNING" in lines[0], proc.stderr
    assert not (tmp_path / "state").exists()


def test_keygen_writes_a_private_key_that_a_network_broker_then_uses_and_rotation_keeps_the_old_one(
    tmp_path: Path
) -> None:
    env = dtf_env(XDG_STATE_HOME=str(tmp_path / "state"))
    first = subprocess.run(dtf_cmd("keygen"), env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    path = Path(first.stdout.strip())
    assert path == tmp_path / "state" / "dtf" / "signing.key" and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    (old,) = read_key_file(path)
    again = subprocess.run(dtf_cmd("keygen"), env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "--rotate" in again.stderr
    rotated = subprocess.run(dtf_cmd("keygen", "--rotate"), env=env, capture_output=True, text=True, timeout=60)
    assert rotated.returncode == 0, rotated.stderr
    keys = read_key_file(path)
    assert len(keys) == 2 and keys[1] == old  # the new one signs, the old one still verifies
    network = Settings(broker_url="redis://192.0.2.10:6379/0")
    assert default_signing_keys(network, {"XDG_STATE_HOME": str(tmp_path / "state")}) == keys
    assert default_signing_keys(network, {"XDG_STATE_HOME": str(tmp_path / "none"), "DTF_INSECURE_NO_SIGNING": "1"}) == ()
