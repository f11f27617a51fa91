"""Optional message signing (dtf.signing): HMAC-SHA256 over the JSON body, a key id and a
timestamp. With a key set, a worker runs only tasks signed with it; anything unsigned,
forged, altered, signed with another key or stale is refused. A replayed result is
harmless because results are keyed by (run, test, attempt)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu import Connection, Producer, Queue
from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.serialization import loads, prepare_accept_content

from dtf import bus as app_module
from dtf.app import make_app
from dtf.bus import RUN_TEST, TASK_EXCHANGE, result_body, wire_format
from dtf.client import CoordinatorClient
from dtf.errors import DtfError
from dtf.model import TestResult, TestSpec
from dtf.settings import Settings
from dtf.signing import CONTENT_TYPE, SERIALIZER, MessageSigner, SignatureError
from dtf.store import Store
from dtf.templates import TemplateRegistry

from ..conftest import Processes, RedisServer, dtf_cmd, dtf_env
from .conftest import TEMPLATES, client, wait_until

KEY = "signing-key-for-tests-0123456789"
OTHER_KEY = "a-different-key-nobody-trusts-42"


def signer(*keys: str, max_age_s: float = 3600, clock: Any = time.time) -> MessageSigner:
    return MessageSigner(keys or (KEY,), max_age_s=max_age_s, clock=clock)


# -- the signer ----------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=15,
)


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_a_signed_body_verifies_to_the_same_value(body: Any) -> None:
    assert signer().loads(signer().dumps(body)) == body


@given(json_values, st.data())
@settings(max_examples=500, deadline=None)
def test_changing_any_one_character_of_a_signed_message_is_detected(body: Any, data: st.DataObject) -> None:
    text = signer().dumps(body)
    i = data.draw(st.integers(0, len(text) - 1))
    replacement = data.draw(st.characters(codec="utf-8").filter(lambda c: c != text[i]))
    tampered = text[:i] + replacement + text[i + 1:]
    try:
        assert signer().loads(tampered) == body  # only if the change did not change a signed byte
    except SignatureError:
        pass


def test_a_message_signed_with_another_key_is_refused() -> None:
    with pytest.raises(SignatureError, match="unknown key"):
        signer().loads(signer(OTHER_KEY).dumps({"run_id": "r"}))


def test_a_forged_mac_is_refused() -> None:
    envelope = json.loads(signer().dumps({"run_id": "r"}))
    envelope["body"] = json.dumps({"run_id": "evil"})
    with pytest.raises(SignatureError, match="forged or altered"):
        signer().loads(json.dumps(envelope))


@pytest.mark.parametrize("text", ["", "{}", "[]", "null", '{"v": 1}', "not json", '{"v":1,"kid":1,"ts":"x","body":"","mac":""}'])
def test_anything_but_a_signed_envelope_is_refused(text: str) -> None:
    with pytest.raises(SignatureError, match="not a signed dtf message"):
        signer().loads(text)


def test_stale_and_future_messages_are_refused() -> None:
    now = [1_000_000.0]
    s = signer(max_age_s=60, clock=lambda: now[0])
    text = s.dumps({"a": 1})
    now[0] += 61
    with pytest.raises(SignatureError, match="61 s old, outside the 60 s window"):
        s.loads(text)
    now[0] -= 61 + 600  # a clock far behind the sender's
    with pytest.raises(SignatureError, match="outside"):
        s.loads(text)


def test_keys_rotate_the_first_signs_and_every_one_verifies() -> None:
    old, new = signer(OTHER_KEY), signer(KEY, OTHER_KEY)
    assert new.loads(old.dumps(1)) == 1  # still in flight from before the rotation
    assert signer(KEY).loads(new.dumps(2)) == 2


def test_short_keys_are_refused_and_keys_never_shown() -> None:
    with pytest.raises(DtfError, match="at least 16 characters"):
        signer("short")
    assert KEY not in repr(signer()) and KEY not in signer().dumps({"x": 1})


def test_keys_come_from_the_environment_or_a_file_and_stay_out_of_repr(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"{KEY}\n{OTHER_KEY}\n\n")
    settings_ = Settings.from_env({"DTF_SIGNING_KEY_FILE": str(key_file), "DTF_SIGNING_MAX_AGE": "600"})
    assert settings_.signing_keys == (KEY, OTHER_KEY) and settings_.signing_max_age_s == 600
    assert KEY not in repr(settings_) and OTHER_KEY not in repr(settings_)
    assert Settings.from_env({"DTF_SIGNING_KEY": KEY}).signing_keys == (KEY,)


# -- the Celery app ----------------------------------------------------------------------------------

def test_with_a_key_the_app_signs_tasks_and_accepts_nothing_else() -> None:
    app = make_app(Settings(broker_url="redis://127.0.0.1:1/0", signing_keys=(KEY,)))
    assert wire_format(app) == (SERIALIZER, [SERIALIZER])
    assert app.conf.result_accept_content == [SERIALIZER]
    accept = prepare_accept_content(app.conf.accept_content)
    assert accept == {CONTENT_TYPE}
    with pytest.raises(ContentDisallowed):
        loads(json.dumps({"args": []}), "application/json", "utf-8", accept=accept)
    with pytest.raises(DecodeError, match="unknown key"):
        loads(signer(OTHER_KEY).dumps({"args": []}), CONTENT_TYPE, "utf-8", accept=accept)
    assert loads(signer().dumps({"args": [1]}), CONTENT_TYPE, "utf-8", accept=accept) == {"args": [1]}


def test_without_a_key_on_a_loopback_broker_the_app_signs_with_the_state_key() -> None:
    assert wire_format(make_app(Settings(broker_url="redis://127.0.0.1:1/0"))) == ("dtf-signed", ["dtf-signed"])


def test_only_the_loud_opt_out_speaks_plain_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DTF_INSECURE_NO_SIGNING", "1")
    assert wire_format(make_app(Settings(broker_url="redis://127.0.0.1:1/0"))) == ("json", ["json"])


# -- against a real worker and coordinator -------------------------------------------------------------

def marker_task(marker: Path) -> dict[str, Any]:
    spec = TestSpec(f"m/cpu/bs1/{uuid.uuid4().hex[:6]}", "m", "sec", "cpu", 1, "fp32", "sec/marker",
                    params={"marker": str(marker)})
    return app_module.task_payload("signed-run", 1, TemplateRegistry([TEMPLATES]).render(spec))


def publish_raw(url: str, body: str, content_type: str) -> None:
    task_id = str(uuid.uuid4())
    headers = {"lang": "py", "task": RUN_TEST, "id": task_id, "root_id": task_id, "parent_id": None,
               "group": None, "retries": 0, "eta": None, "expires": None, "timelimit": [None, None]}
    with Connection(url) as conn:
        Producer(conn.channel()).publish(
            body, exchange="dtf", routing_key="dtf.cpu", headers=headers, content_type=content_type,
            content_encoding="utf-8", declare=[Queue("dtf.cpu", TASK_EXCHANGE, routing_key="dtf.cpu", durable=True)])


def celery_body(payload: dict[str, Any]) -> Any:
    return [[payload], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]


@pytest.mark.redis
@pytest.mark.slow
def test_a_signing_worker_refuses_unsigned_forged_and_altered_tasks_and_runs_signed_ones(
    tmp_path: Path, redis_server: RedisServer, processes: Processes
) -> None:
    env = dtf_env(DTF_BROKER_URL=redis_server.url, DTF_SIGNING_KEY=KEY, DTF_SPOOL_DIR=str(tmp_path / "spool"))
    worker = processes.start("worker", ["worker", "--name", "signed@sec", "--queues", "dtf.cpu", "--concurrency", "1",
                                        "--loglevel", "INFO"], env, tmp_path)
    assert wait_until(lambda: " ready." in processes.log("worker"), 60), processes.log("worker")
    refused = [tmp_path / f"refused-{i}" for i in range(3)]
    publish_raw(redis_server.url, json.dumps(celery_body(marker_task(refused[0]))), "application/json")
    publish_raw(redis_server.url, signer(OTHER_KEY).dumps(celery_body(marker_task(refused[1]))), CONTENT_TYPE)
    genuine = json.loads(signer().dumps(celery_body(marker_task(tmp_path / "decoy"))))
    genuine["body"] = genuine["body"].replace(str(tmp_path / "decoy"), str(refused[2]))
    publish_raw(redis_server.url, json.dumps(genuine), CONTENT_TYPE)
    conn = client(redis_server)
    assert wait_until(lambda: conn.llen("dtf.cpu") == 0 and not conn.hlen("unacked"), 30)

    accepted = tmp_path / "accepted"
    app = make_app(Settings(broker_url=redis_server.url, signing_keys=(KEY,)))
    app.send_task(RUN_TEST, args=[marker_task(accepted)], queue="dtf.cpu")
    assert wait_until(accepted.exists, 60), processes.log("worker")
    log = processes.log("worker")
    assert not any(m.exists() for m in refused) and not (tmp_path / "decoy").exists(), log
    assert worker.poll() is None
    assert "Refusing to deserialize untrusted content of type json" in log
    assert "message signed with an unknown key" in log and "forged or altered" in log


UNCHAINED_SUITE = """\
name: replay
models:
  - {name: tiny-model, family: sec, template: sec/ok}
hardware: [cpu]
batch_sizes: [1, 2]
chain_batch_sizes: false
"""


def stop(proc: Any) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)


@pytest.mark.redis
@pytest.mark.slow
def test_a_replayed_result_changes_nothing(tmp_path: Path, redis_server: RedisServer, processes: Processes) -> None:
    """Results captured off the wire (while no coordinator consumed them) and pushed again,
    twice, after the run finished: same (run, test, attempt) keys, so nothing changes. A
    signature would not stop this replay; the keys make it harmless."""
    env = dtf_env(DTF_BROKER_URL=redis_server.url, DTF_SPOOL_DIR=str(tmp_path / "spool"))
    db = tmp_path / "replay.duckdb"
    (tmp_path / "replay.yaml").write_text(UNCHAINED_SUITE)
    coordinator = processes.start("coordinator-1", ["coordinator", "--db", str(db)], env, tmp_path)
    submitted = subprocess.run(dtf_cmd("submit", "replay.yaml", "--templates", str(TEMPLATES)), env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=60)
    assert submitted.returncode == 0, submitted.stderr + processes.log("coordinator-1")
    run_id = submitted.stdout.strip().splitlines()[-1]
    stop(coordinator)

    conn = client(redis_server)
    processes.start("worker", ["worker", "--name", "replay@sec", "--queues", "dtf.cpu"], env, tmp_path)
    assert wait_until(lambda: conn.llen("dtf.results") == 2, 60), processes.log("worker")
    captured = conn.lrange("dtf.results", 0, -1)

    processes.start("coordinator-2", ["coordinator", "--db", str(db)], env, tmp_path)
    client_ = CoordinatorClient(make_app(Settings(broker_url=redis_server.url)), timeout_s=30)
    assert wait_until(lambda: client_.call("status", run_id=run_id)["finished"], 60), processes.log("coordinator-2")
    before = client_.call("results", run_id=run_id)
    assert {t["status"] for t in before["tests"]} == {"passed"}

    for raw in captured * 2:
        conn.lpush("dtf.results", raw)
    assert wait_until(lambda: conn.llen("dtf.results") == 0, 30), processes.log("coordinator-2")
    time.sleep(0.5)  # one ingest batch
    assert client_.call("results", run_id=run_id) == before
    processes.stop_all()
    with Store.open_for_reports(db) as store:
        rows = store.results(run_id)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"passed"}


@pytest.mark.redis
@pytest.mark.slow
def test_a_signing_coordinator_answers_signed_messages_and_refuses_unsigned_ones(
    tmp_path: Path, redis_server: RedisServer, processes: Processes
) -> None:
    env = dtf_env(DTF_BROKER_URL=redis_server.url, DTF_SIGNING_KEY=KEY)
    processes.start("coordinator", ["coordinator", "--db", str(tmp_path / "c.duckdb")], env, tmp_path)
    assert wait_until(lambda: "leading" in processes.log("coordinator"), 60)
    forged = TestResult("some-run", "t", 1, "passed")
    with Connection(redis_server.url) as conn:
        Producer(conn.channel()).publish(result_body(forged), exchange="", routing_key="dtf.results",
                                         serializer="json", declare=[Queue("dtf.results", durable=True)])
    log = lambda: processes.log("coordinator")  # noqa: E731
    assert wait_until(lambda: "Refusing to deserialize untrusted content of type json" in log(), 5), log()
    signed_client = CoordinatorClient(make_app(Settings(broker_url=redis_server.url, signing_keys=(KEY,))), timeout_s=5)
    assert signed_client.call("ping")["pong"] is True
