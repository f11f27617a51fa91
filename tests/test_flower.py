"""Flower wired to dtf and secured: the exposure rule (loopback open with a warning, anything
else only with auth), and a real worker plus real Flower processes whose HTTP API lists the
worker with its queues and a dtf task with its state, and refuses requests without
credentials."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from dtf.app import make_app
from dtf.bus import RUN_TEST, task_id_for
from dtf.bus import task_payload as payload_for
from dtf.errors import DtfError
from dtf.flower import WebAuth, _guard_celery_flower, basic_auth_from_env, check_exposure, flower_argv, is_loopback
from dtf.model import RenderedTest, TestSpec
from dtf.settings import Settings

from .conftest import REPO, Processes, RedisServer, dtf_cmd, dtf_env, free_port, wait_for_port
from .dtf_cluster import wait_for

CREDS = "ops:s3cret-pass"


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("", False), ("::", False), ("10.0.0.5", False), ("flower.example.com", False),
])
def test_only_loopback_addresses_count_as_private(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_basic_auth_comes_from_the_variable_or_its_file(tmp_path: Path) -> None:
    secret = tmp_path / "auth"
    secret.write_text("a:1\nb:2\n")
    assert basic_auth_from_env({"DTF_FLOWER_BASIC_AUTH": "x:y,z:w"}) == ("x:y", "z:w")
    assert basic_auth_from_env({"DTF_FLOWER_BASIC_AUTH_FILE": str(secret)}) == ("a:1", "b:2")
    assert basic_auth_from_env({}) == ()
    with pytest.raises(DtfError, match="expected user:password"):
        basic_auth_from_env({"DTF_FLOWER_BASIC_AUTH": "nopassword"})
    with pytest.raises(DtfError, match="cannot read"):
        basic_auth_from_env({"DTF_FLOWER_BASIC_AUTH_FILE": str(tmp_path / "missing")})


def test_an_exposed_address_without_auth_is_refused_and_loopback_only_warns() -> None:
    with pytest.raises(DtfError, match="0.0.0.0:5555 without authentication; set DTF_FLOWER_BASIC_AUTH"):
        check_exposure("Flower", "0.0.0.0", 5555, WebAuth())
    with pytest.raises(DtfError, match="every interface"):
        check_exposure("Flower", "", 5555, WebAuth(oauth_emails=".*@example.com"))  # OAuth needs a provider too
    assert check_exposure("Flower", "0.0.0.0", 5555, WebAuth(basic=(CREDS,))) is None
    assert check_exposure("Flower", "0.0.0.0", 5555, WebAuth(oauth_emails=".*@example.com",
                                                             oauth_provider="flower.views.auth.GithubLoginHandler")) is None
    assert "reachable from this machine only" in (check_exposure("Flower", "127.0.0.1", 5555, WebAuth()) or "")


def test_credentials_never_show_in_a_repr_and_reach_flower_only_as_its_option() -> None:
    auth = WebAuth(basic=(CREDS,))
    assert "s3cret" not in repr(auth) and "ops" in repr(auth)
    assert flower_argv(5555, "127.0.0.1", auth) == ["flower", "--port=5555", "--address=127.0.0.1",
                                                    f"--basic-auth={CREDS}"]


def test_celery_flower_defaults_to_loopback_and_takes_dtf_credentials() -> None:
    env: dict[str, str] = {"DTF_FLOWER_BASIC_AUTH": CREDS}
    _guard_celery_flower(["celery", "-A", "dtf.flower:app", "flower", "--port=5555"], env)
    assert env["FLOWER_ADDRESS"] == "127.0.0.1" and env["FLOWER_BASIC_AUTH"] == CREDS
    with pytest.raises(DtfError, match="without authentication"):
        _guard_celery_flower(["celery", "flower", "--address=0.0.0.0"], {})
    _guard_celery_flower(["celery", "worker"], {})  # not Flower: nothing to check


def test_both_ways_to_start_flower_refuse_an_exposed_address_without_auth(tmp_path: Path) -> None:
    env = dtf_env(DTF_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0")
    for argv in (dtf_cmd("flower", "--address", "0.0.0.0"),
                 [sys.executable, "-m", "celery", "-A", "dtf.flower:app", "flower", "--address=0.0.0.0"]):
        proc = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert "without authentication" in proc.stderr and "Traceback" not in proc.stderr


# -- real Flower on a real worker ----------------------------------------------------------------
def _get(url: str, auth: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _task_state(base: str, task_id: str) -> str | None:
    status, tasks = _get(f"{base}/api/tasks", CREDS)
    return (tasks or {}).get(task_id, {}).get("state") if status == 200 else None


def _worker_queues(base: str, worker: str) -> list[str]:
    _, workers = _get(f"{base}/api/workers?refresh=1", CREDS)
    info = (workers or {}).get(worker) or {}
    return [q["name"] for q in info.get("active_queues") or []]


def _task_events_already_on(app: Any, worker: str) -> bool:
    replies = app.control.broadcast("enable_events", reply=True, timeout=2.0, destination=[worker])
    return any("already" in str(r.get(worker, {}).get("ok", "")) for r in replies or [])


@pytest.mark.slow
@pytest.mark.redis
def test_flower_lists_the_worker_and_a_dtf_task_and_refuses_anonymous_requests(
    tmp_path: Path, redis_server: RedisServer, processes: Processes
) -> None:
    env = dtf_env(DTF_BROKER_URL=redis_server.url, DTF_SPOOL_DIR=str(tmp_path / "spool"), DTF_FLOWER_BASIC_AUTH=CREDS)
    processes.start("worker", ["worker", "--name", "flowered@test", "--queues", "dtf.cpu,dtf.tag.big"], env, tmp_path)
    dtf_port, celery_port = free_port(), free_port()
    processes.start("flower", ["flower", "--port", str(dtf_port)], env, tmp_path)
    celery_flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "dtf.flower:app", "flower", f"--port={celery_port}"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    processes.procs.append(celery_flower)  # stopped with the others
    wait_for_port(dtf_port, 60)
    wait_for_port(celery_port, 60)
    base = f"http://127.0.0.1:{dtf_port}"

    assert _get(f"{base}/api/workers")[0] == 401
    assert _get(f"{base}/api/workers", "ops:wrong")[0] == 401
    assert _get(f"http://127.0.0.1:{celery_port}/api/workers")[0] == 401
    queues = wait_for(lambda: _worker_queues(base, "flowered@test"), "Flower to list the worker")
    assert set(queues) == {"dtf.cpu", "dtf.tag.big"}
    # Workers start with task events off (they cost a publish per event); Flower switches them
    # on by remote control every events_enable_interval (5 s). Asking again answers "already".
    app = make_app(Settings(broker_url=redis_server.url))
    wait_for(lambda: _task_events_already_on(app, "flowered@test"), "Flower to switch the worker's task events on",
             every_s=1.0)

    spec = TestSpec("flower/cpu/bs1/fp32", "flower", "generic", "cpu", 1, "fp32", "generic/x", timeout_s=60)
    task_id = task_id_for("run-f", spec.test_id, 1)
    source = "from dtf import harness\nharness.run(lambda h: h.metric('ok', 1))\n"
    app.send_task(RUN_TEST, args=[payload_for("run-f", 1, RenderedTest(spec, source, "h"))], queue="dtf.cpu",
                  task_id=task_id)
    assert wait_for(lambda: _task_state(base, task_id) == "SUCCESS", "Flower to show the dtf task succeeded")
    status, info = _get(f"{base}/api/task/info/{task_id}", CREDS)
    assert status == 200 and info["name"] == RUN_TEST and info["worker"] == "flowered@test"
    assert wait_for(lambda: _task_state(f"http://127.0.0.1:{celery_port}", task_id) == "SUCCESS",
                    "`celery -A dtf.flower:app flower` to show the task too")
