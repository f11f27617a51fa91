"""The Celery app's configuration: JSON only, at-least-once delivery, declared queues only,
and broker URLs and transport options built from settings, checked against real Redis."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit

import celery
import kombu.exceptions
import pytest

from dtf import bus as app_module
from dtf.app import make_app
from dtf.bus import RUN_TEST, broker_connection_args, task_id_for
from dtf.model import HARDWARE_KINDS, RenderedTest, TestSpec
from dtf.settings import Settings

PASSWORD = "p@ss/w:rd#1"
HARDWARE_QUEUES = ["dtf.cpu", "dtf.cuda", "dtf.rocm", "dtf.mps", "dtf.webgpu"]


# -- the app -------------------------------------------------------------------------------------

@pytest.fixture
def app() -> celery.Celery:
    return make_app(Settings(broker_url="redis://127.0.0.1:6379/0"))


def test_the_app_speaks_json_only(app: celery.Celery) -> None:
    """Signed by default (an HMAC envelope around JSON, dtf-signed); plain JSON only with the
    loud opt-out; never pickle or any other content type."""
    conf = app.conf
    assert (conf.task_serializer, conf.result_serializer) == ("dtf-signed", "dtf-signed")
    assert list(conf.accept_content) == ["dtf-signed"] and list(conf.result_accept_content) == ["dtf-signed"]
    assert app.tasks[RUN_TEST].serializer == "dtf-signed"


def test_with_the_insecure_opt_out_the_app_speaks_plain_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DTF_INSECURE_NO_SIGNING", "1")
    conf = make_app(Settings(broker_url="redis://127.0.0.1:6379/0")).conf
    assert (conf.task_serializer, list(conf.accept_content)) == ("json", ["json"])


def test_tests_are_acknowledged_late_and_rejected_when_the_worker_is_lost(app: celery.Celery) -> None:
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    task = app.tasks[RUN_TEST]
    assert task.acks_late and task.reject_on_worker_lost


def test_a_worker_prefetches_one_test_at_a_time(app: celery.Celery) -> None:
    assert app.conf.worker_prefetch_multiplier == 1


def test_results_do_not_go_through_a_celery_result_backend(app: celery.Celery) -> None:
    assert app.conf.result_backend is None and app.conf.task_ignore_result


def test_one_queue_per_hardware_kind_and_no_queue_is_created_on_the_fly(app: celery.Celery) -> None:
    assert app.conf.task_create_missing_queues is False
    assert list(app.amqp.queues) == HARDWARE_QUEUES == [f"dtf.{k}" for k in HARDWARE_KINDS]
    assert app.conf.task_default_queue == "dtf.cpu"
    with pytest.raises(KeyError):
        app.amqp.queues["dtf.tpu"]


def test_extra_queues_are_added_once_each() -> None:
    app = make_app(Settings(broker_url="redis://127.0.0.1:6379/0"), extra_queues=("cuda.sm90", "dtf.cpu", ""))
    assert list(app.amqp.queues) == [*HARDWARE_QUEUES, "cuda.sm90"]


def test_make_app_never_becomes_the_global_current_app(app: celery.Celery) -> None:
    assert celery.current_app is not app


def test_the_run_test_task_refuses_to_run_outside_a_worker(app: celery.Celery) -> None:
    with pytest.raises(RuntimeError, match="not a dtf worker"):
        app.tasks[RUN_TEST].run({"run_id": "r"})


def test_each_app_calls_its_own_worker_handler() -> None:
    apps = [make_app(Settings(broker_url="redis://127.0.0.1:6379/0")) for _ in range(3)]
    called: list[int] = []
    for i, each in enumerate(apps):
        each.test_handler = lambda payload, request, i=i: called.append(i)
    for each in apps:
        each.tasks[RUN_TEST].run({})
    assert called == [0, 1, 2]


def test_a_test_attempt_always_gets_the_same_task_id() -> None:
    assert task_id_for("run1", "bert-cpu", 2) == task_id_for("run1", "bert-cpu", 2) == "run1:bert-cpu:2"
    spec = TestSpec("t", "m", "f", "cpu", 1, "fp32", "tpl")
    payload = app_module.task_payload("run1", 2, RenderedTest(spec, "pass", "h"))
    assert RenderedTest.from_dict(payload["test"]).spec == spec and payload["attempt"] == 2


# -- broker URLs and transport options ------------------------------------------------------------

def test_embedded_settings_use_the_in_memory_transport_with_fast_polling() -> None:
    url, options = broker_connection_args(Settings())
    assert url.startswith("memory://")
    assert options["polling_interval"] < 0.1


def test_a_plain_redis_url_gets_the_configured_credentials_escaped() -> None:
    url, options = broker_connection_args(
        Settings(broker_url="redis://redis:6379/2", redis_username="dtf", redis_password=PASSWORD)
    )
    parts = urlsplit(url)
    assert (parts.hostname, parts.port, parts.path) == ("redis", 6379, "/2")
    assert (parts.username, unquote(parts.password or "")) == ("dtf", PASSWORD)
    assert options["visibility_timeout"] == Settings().visibility_timeout_s


def test_a_redis_url_that_carries_its_own_password_is_left_alone() -> None:
    url, _ = broker_connection_args(Settings(broker_url="redis://:inline@redis:6379/0", redis_password="other"))
    assert url == "redis://:inline@redis:6379/0"


def test_the_visibility_timeout_comes_from_settings() -> None:
    _, options = broker_connection_args(Settings(broker_url="redis://redis/0", visibility_timeout_s=12 * 3600))
    assert options["visibility_timeout"] == 12 * 3600


def test_sentinels_get_the_password_in_sentinel_kwargs_not_in_the_url() -> None:
    url, options = broker_connection_args(Settings(
        sentinels=("s1:26379", "s2:26379"), sentinel_master="dtf-master", redis_password=PASSWORD,
    ))
    assert url == "sentinel://s1:26379;sentinel://s2:26379"
    assert PASSWORD not in url
    assert options["master_name"] == "dtf-master"
    assert options["sentinel_kwargs"] == {"password": PASSWORD}


def test_sentinels_without_a_password_get_no_sentinel_kwargs() -> None:
    _, options = broker_connection_args(Settings(sentinels=("s1:26379",)))
    assert "sentinel_kwargs" not in options and options["master_name"] == "mymaster"


def test_rediss_requires_a_verified_certificate() -> None:
    app = make_app(Settings(broker_url="rediss://redis:6380/0", tls_ca="/etc/dtf/ca.pem",
                            tls_cert="/etc/dtf/client.pem", tls_key="/etc/dtf/client.key"))
    assert app.conf.broker_use_ssl == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/etc/dtf/ca.pem",
        "ssl_certfile": "/etc/dtf/client.pem", "ssl_keyfile": "/etc/dtf/client.key",
    }


def test_rediss_without_a_ca_still_requires_a_verified_certificate() -> None:
    app = make_app(Settings(broker_url="rediss://redis:6380/0"))
    assert app.conf.broker_use_ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}


def test_plain_redis_uses_no_tls() -> None:
    assert make_app(Settings(broker_url="redis://redis/0")).conf.broker_use_ssl is None


def test_credentials_injected_into_an_ipv6_url_keep_the_brackets() -> None:
    url, _ = broker_connection_args(Settings(broker_url="redis://[::1]:6379/0", redis_password="pw"))
    assert urlsplit(url).hostname == "::1" and urlsplit(url).port == 6379


# -- against real Redis --------------------------------------------------------------------------

def _redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is required under CI but is not installed")
        pytest.skip("redis-server not installed")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A password-protected Redis and a Sentinel that monitors it; yields (redis port, sentinel port)."""
    binary = _redis_server()
    redis_port, sentinel_port = _free_port(), _free_port()
    sentinel_conf = tmp_path / "sentinel.conf"
    sentinel_conf.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor dtf-master 127.0.0.1 {redis_port} 1\n"
        f"sentinel auth-pass dtf-master {PASSWORD}\nrequirepass {PASSWORD}\n"
    )
    common = ["--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    procs = [
        subprocess.Popen([binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--requirepass", PASSWORD,
                          "--masterauth", PASSWORD, *common], stdout=subprocess.DEVNULL),
        subprocess.Popen([binary, str(sentinel_conf), "--sentinel"], stdout=subprocess.DEVNULL),
    ]
    try:
        _wait_for_port(redis_port)
        _wait_for_port(sentinel_port)
        yield redis_port, sentinel_port
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def _ping(settings: Settings) -> bool:
    with make_app(settings).connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        return bool(conn.default_channel.client.ping())


@pytest.mark.redis
def test_the_injected_password_authenticates_to_a_real_redis(redis_with_password: tuple[int, int]) -> None:
    redis_port, _ = redis_with_password
    url = f"redis://127.0.0.1:{redis_port}/0"
    assert _ping(Settings(broker_url=url, redis_password=PASSWORD))
    with pytest.raises(kombu.exceptions.OperationalError):  # the password really is required
        _ping(Settings(broker_url=url))


@pytest.mark.redis
def test_the_password_authenticates_through_a_real_sentinel_to_its_master(redis_with_password: tuple[int, int]) -> None:
    _, sentinel_port = redis_with_password
    settings = Settings(sentinels=(f"127.0.0.1:{sentinel_port}",), sentinel_master="dtf-master", redis_password=PASSWORD)
    assert _ping(settings)


def test_send_test_publishes_a_run_test_task_that_names_the_test_and_carries_no_source_in_its_headers() -> None:
    app = make_app(Settings())
    spec = TestSpec("bert/cpu/bs4/fp32", "bert", "text_embedding", "cpu", 4, "fp32", "generic/default")
    source = "SECRET_LOOKING_SOURCE = 1\n" * 20
    payload = app_module.task_payload("run-s", 2, RenderedTest(spec, source, "h"))
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        app_module.hardware_queues()[0](channel).declare()
        while channel.basic_get("dtf.cpu", no_ack=True) is not None:
            pass
        app_module.send_test(app, app.amqp.Producer(channel), payload, "dtf.cpu", task_id_for("run-s", spec.test_id, 2))
        message = channel.basic_get("dtf.cpu", no_ack=True)
    assert message is not None and message.content_type == "application/json"
    assert message.headers["task"] == RUN_TEST and message.headers["id"] == "run-s:bert/cpu/bs4/fp32:2"
    assert message.headers["argsrepr"] == "['bert/cpu/bs4/fp32' attempt 2]"
    assert "SECRET_LOOKING_SOURCE" not in str(message.headers)
    args, kwargs, _ = message.decode()
    assert args == [payload] and kwargs == {}


def test_the_embedded_app_uses_the_sliced_memory_transport_so_a_worker_sees_a_stop_within_a_slice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kombu.transport import memory

    from dtf import memory_transport

    app = make_app(Settings())
    asked: list[float | None] = []
    monkeypatch.setattr(memory.Transport, "drain_events", lambda self, connection, timeout=None: asked.append(timeout))
    with app.connection_for_write() as conn:
        transport = conn.transport
        assert isinstance(transport, memory_transport.Transport)
        transport.drain_events(conn, timeout=2.0)  # what Celery's synloop asks for
        transport.drain_events(conn, timeout=0.05)
        transport.drain_events(conn)
    assert asked == [memory_transport.SLICE_S, 0.05, None]
    assert make_app(Settings(broker_url="redis://127.0.0.1:1/0")).conf.broker_transport is None


# -- a client without Celery ----------------------------------------------------------------------

@pytest.mark.parametrize("settings", [
    Settings(broker_url="redis://127.0.0.1:6379/0", redis_password=PASSWORD),
    Settings(broker_url="rediss://127.0.0.1:6380/0", tls_ca="/etc/dtf/ca.pem", tls_cert="/etc/dtf/c.pem", tls_key="/etc/dtf/c.key"),
    Settings(sentinels=("10.0.0.1:26379", "10.0.0.2:26379"), sentinel_master="m", redis_password=PASSWORD,
             redis_username="dtf"),
], ids=["password", "tls", "sentinels"])
def test_the_clients_broker_link_connects_as_the_celery_app_would(settings: Settings) -> None:
    """dtf.client.BrokerLink (the CLI's, made without importing Celery) builds the very
    connection and wire format that make_app's app.connection_for_write() does."""
    from dtf.bus import wire_format
    from dtf.client import BrokerLink

    app, link = make_app(settings), BrokerLink(settings)
    for extra in (None, {"visibility_timeout": 7}):
        ours, celerys = link.connection_for_write(transport_options=extra), app.connection_for_write(transport_options=extra)
        assert ours.as_uri(include_password=True) == celerys.as_uri(include_password=True)
        assert (ours.userid, ours.password, ours.ssl, ours.transport_options, ours.connect_timeout) == (
            celerys.userid, celerys.password, celerys.ssl, celerys.transport_options, celerys.connect_timeout)
        assert ours.alt == celerys.alt  # every Sentinel, in order
    assert wire_format(link) == wire_format(app)


def test_a_cli_client_talks_to_the_broker_without_importing_celery(tmp_path: Path) -> None:
    script = ("import sys\nfrom dtf.client import CoordinatorClient\nfrom dtf.settings import Settings\n"
              "c = CoordinatorClient.for_settings(Settings(broker_url='redis://127.0.0.1:1/0'))\n"
              "c._connection  # noqa\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'celery'))\n")
    env = dict(os.environ, DTF_STATE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
