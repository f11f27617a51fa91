"""Secrets are never printed. A password is planted (as the Redis ACL user's password, with
debug logging on everywhere), a suite runs end to end, and every output is searched for it:
what submit, status, results, workers, detect and Flower print, the coordinator's and the
worker's logs, the reports, the spool, every value left in Redis and every row in DuckDB,
error messages for a wrong password and an unreachable broker, generated deploy scripts,
and the settings' repr."""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
import typer.main

from dtf import bus as app_module
from dtf.app import make_app
from dtf.bus import RUN_TEST
from dtf.cli import app as cli_app
from dtf.deploy import PLATFORMS, render_deploy
from dtf.model import TestSpec
from dtf.settings import Settings, redact_url, scrub_secrets
from dtf.signing import CONTENT_TYPE, MessageSigner, default_key_file, read_key_file
from dtf.store import Store
from dtf.templates import TemplateRegistry

from ..conftest import Processes, RedisServer, dtf_cmd, dtf_env, free_port
from .conftest import ACL_USER, ADMIN, SECRET, TEMPLATES, client, run_tiny_suite, wait_until

SIGNING_SECRET = "planted-signing-key-0123456789"
FLOWER_SECRET = "planted-flower-password"
ALL_SECRETS = (SECRET, quote(SECRET, safe=""), SIGNING_SECRET, FLOWER_SECRET)


def leaks(outputs: dict[str, str]) -> dict[str, list[str]]:
    """Which output shows which secret (in any of its spellings)."""
    found = {name: [s for s in ALL_SECRETS if s in text] for name, text in outputs.items()}
    return {name: hits for name, hits in found.items() if hits}


def cli_options(command: str) -> set[str]:
    group = typer.main.get_command(cli_app)
    cmd = group.commands.get(command)  # type: ignore[attr-defined]
    return {p.name for p in cmd.params} if cmd is not None else set()


def run_cli(tmp_path: Path, env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(dtf_cmd(*args), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    return f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def readable(raw: bytes | str) -> str:
    """A value from Redis with every kombu message body in it decoded (they are base64, and
    signed ones hold their JSON as a string), so a secret inside one cannot hide."""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    try:
        found = [text, *_bodies(json.loads(text))]
    except ValueError:
        return text
    return "\n".join(found)


def _default_keys() -> tuple[str, ...]:
    """The session's default signing key (signing is on by default), if one was made."""
    path = default_key_file()
    return read_key_file(path) if path.exists() else ()


def _bodies(value: Any) -> list[str]:
    if isinstance(value, list):
        return [b for v in value for b in _bodies(v)]
    if not isinstance(value, dict):
        return []
    if isinstance(value.get("body"), str) and value.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(value["body"]).decode(errors="replace")
        if value.get("content-type") == CONTENT_TYPE:
            body += "\n" + json.dumps(MessageSigner([SIGNING_SECRET, *_default_keys()], max_age_s=1e9).loads(body))
        return [body]
    return [b for v in value.values() for b in _bodies(v)]


def redis_dump(conn: redis.Redis) -> str:
    parts = []
    for key in conn.scan_iter(count=1000):
        kind = conn.type(key).decode()
        if kind == "list":
            values = conn.lrange(key, 0, -1)
        elif kind == "hash":
            values = [v for pair in conn.hgetall(key).items() for v in pair]
        elif kind == "set":
            values = list(conn.smembers(key))
        elif kind == "zset":
            values = conn.zrange(key, 0, -1)
        else:
            values = [conn.get(key) or b""]
        parts.append(f"{key!r} {kind}: " + "\n".join(readable(v) for v in values))
    return "\n".join(parts)


def duckdb_dump(db: Path) -> str:
    with Store.open_for_reports(db) as store:
        tables = [r["table_name"] for r in store.query("SELECT table_name FROM information_schema.tables")]
        return "\n".join(f"{t}: {store.query(f'SELECT * FROM {t}')!r}" for t in tables)  # names from the catalog


def flower_pages(tmp_path: Path, env: dict[str, str], processes: Processes) -> dict[str, str]:
    if "port" not in cli_options("flower"):
        return {}
    port = free_port()
    processes.start("flower", ["flower", "--port", str(port)], env, tmp_path)
    pages: dict[str, str] = {}
    for path in ("/", "/workers", "/broker", "/tasks", "/api/workers", "/api/tasks", "/metrics"):
        def fetch(path: str = path) -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                    pages[f"flower {path}"] = response.read().decode(errors="replace")
                return True
            except OSError:
                return False
        wait_until(fetch, 30 if not pages else 5, 0.3)
    assert pages, processes.log("flower")
    return pages


@pytest.mark.redis
@pytest.mark.slow
def test_a_planted_secret_appears_in_no_output(tmp_path: Path, acl_redis: RedisServer, processes: Processes) -> None:
    env = dtf_env(DTF_BROKER_URL=acl_redis.url, DTF_REDIS_USERNAME=ACL_USER, DTF_REDIS_PASSWORD=SECRET,
                  DTF_LOG_LEVEL="DEBUG", DTF_SPOOL_DIR=str(tmp_path / "spool"),
                  DTF_FLOWER_BASIC_AUTH=f"viewer:{FLOWER_SECRET}")
    reports = tmp_path / "reports"
    submit_args = ["--output-dir", str(reports)] if "output_dir" in cli_options("submit") else []
    run = run_tiny_suite(tmp_path, processes, env, submit_args=submit_args, worker_args=["--loglevel", "DEBUG"])
    outputs = {"submit": run.submit.stdout + run.submit.stderr}
    for command in (["status", run.run_id], ["results", run.run_id, "--format", "json"], ["workers", "--format", "json"],
                    ["detect"], ["detect", "--json"]):
        outputs[" ".join(command).replace(run.run_id, "RUN")] = run_cli(tmp_path, env, *command)
    outputs.update(flower_pages(tmp_path, {**env, "DTF_FLOWER_BASIC_AUTH": ""}, processes))
    outputs["redis"] = redis_dump(client(acl_redis, username=ADMIN[0], password=ADMIN[1]))
    processes.stop_all()
    outputs.update({f"log {p.name}": p.read_text(errors="replace") for p in processes.logdir.glob("*.log")})
    outputs["duckdb"] = duckdb_dump(run.db)
    for folder in (reports, tmp_path / "spool"):
        outputs.update({str(p): p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file()})
    assert len(outputs) >= 12 and "passed" in outputs["results RUN --format json"]
    assert any("DEBUG" in text for name, text in outputs.items() if name.startswith("log")), "debug logging was on"
    assert leaks(outputs) == {}


def test_wrong_credentials_and_unreachable_brokers_are_reported_without_the_password(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nmodels: [{name: m, family: sec, template: sec/ok}]\nhardware: [cpu]\nbatch_sizes: [1]\n")
    port = free_port()  # nothing listens there
    outputs = {}
    for name, extra in {
        "inline password": {"DTF_BROKER_URL": f"redis://dtf:{quote(SECRET, safe='')}@127.0.0.1:{port}/0"},
        "password variable": {"DTF_BROKER_URL": f"redis://127.0.0.1:{port}/0", "DTF_REDIS_PASSWORD": SECRET},
        "password in query": {"DTF_BROKER_URL": f"redis://127.0.0.1:{port}/0?password={quote(SECRET, safe='')}"},
    }.items():
        env = dtf_env(DTF_LOG_LEVEL="DEBUG", DTF_SIGNING_KEY=SIGNING_SECRET, **extra)
        outputs[f"submit, {name}"] = run_cli(tmp_path, env, "submit", str(suite), "--templates", str(TEMPLATES))
        if name == "inline password":
            outputs[f"status, {name}"] = run_cli(tmp_path, env, "status", "some-run")
        assert outputs[f"submit, {name}"].startswith("exit 2"), outputs[f"submit, {name}"]
    assert leaks(outputs) == {}


@pytest.mark.parametrize("platform", PLATFORMS)
def test_generated_deploy_scripts_hold_no_password(tmp_path: Path, platform: str) -> None:
    broker = f"redis://{ACL_USER}:{quote(SECRET, safe='')}@redis.internal:6379/0"
    files = render_deploy(platform, tmp_path, broker=broker, name="w1", tags=["gpu"], gpu="cuda")
    assert files
    assert leaks({str(p): p.read_text(errors="replace") for p in files}) == {}


def test_settings_never_show_their_secrets() -> None:
    env = {"DTF_BROKER_URL": f"redis://u:{quote(SECRET, safe='')}@h:6379/0", "DTF_REDIS_PASSWORD": SECRET,
           "DTF_SENTINEL_PASSWORD": SECRET, "DTF_SIGNING_KEY": SIGNING_SECRET}
    settings = Settings.from_env(env)
    shown = {"repr": repr(settings), "str": str(settings), "safe_broker": settings.safe_broker,
             "redact_url": redact_url(env["DTF_BROKER_URL"]), "app repr": repr(make_app(settings).conf.humanize())}
    assert leaks(shown) == {}


def test_processes_that_run_test_code_get_no_secret_variables() -> None:
    env = {"PATH": "/bin", "DTF_REDIS_PASSWORD": SECRET, "DTF_REDIS_PASSWORD_FILE": "/run/secrets/redis",
           "DTF_SIGNING_KEY": SIGNING_SECRET, "DTF_FLOWER_BASIC_AUTH": FLOWER_SECRET, "DTF_BROKER_URL": "redis://h/0"}
    assert scrub_secrets(env) == {"PATH": "/bin", "DTF_BROKER_URL": "redis://h/0"}


@pytest.mark.redis
@pytest.mark.slow
def test_a_test_that_dumps_its_environment_finds_no_secret(
    tmp_path: Path, redis_server: RedisServer, processes: Processes
) -> None:
    # This server has no password: what matters is what the worker's environment holds.
    env = dtf_env(DTF_BROKER_URL=redis_server.url, DTF_REDIS_PASSWORD=SECRET, DTF_SIGNING_KEY=SIGNING_SECRET,
                  DTF_SPOOL_DIR=str(tmp_path / "spool"))
    processes.start("worker", ["worker", "--name", "env@sec", "--queues", "dtf.cpu"], env, tmp_path)
    spec = TestSpec("dump/cpu/bs1/fp32", "dump", "sec", "cpu", 1, "fp32", "sec/env_dump")
    payload = app_module.task_payload("env-run", 1, TemplateRegistry([TEMPLATES]).render(spec))
    make_app(Settings(broker_url=redis_server.url, signing_keys=(SIGNING_SECRET,))).send_task(
        RUN_TEST, args=[payload], queue="dtf.cpu")
    conn = client(redis_server)
    assert wait_until(lambda: conn.llen("dtf.results") == 1, 60), processes.log("worker")
    stored = readable(conn.lindex("dtf.results", 0))
    assert "dumped the environment" in stored and "DTF_BROKER_URL" in stored  # the dump did reach the result
    assert leaks({"result": stored, "worker": processes.log("worker")}) == {}


PROC_SUITE = """\
name: proc
models:
  - {{name: snoop, family: sec, template: sec/proc_environ, params: {{out: "{out}"}}}}
hardware: [cpu]
batch_sizes: [1]
"""


def test_a_test_finds_no_secret_in_its_environment_nor_in_any_ancestor_proc_environ(
    tmp_path: Path, password_redis: RedisServer, processes: Processes
) -> None:
    """The password inside DTF_BROKER_URL and a signing key given in the environment: the
    test reads its own environment and /proc/<pid>/environ of the fork server, the worker
    and every other ancestor, and finds neither (issue 14, item 3)."""
    out = tmp_path / "snooped.txt"
    url = f"redis://:{quote(SECRET, safe='')}@127.0.0.1:{password_redis.port}/0"
    env = dtf_env(DTF_BROKER_URL=url, DTF_SIGNING_KEY=SIGNING_SECRET, DTF_SPOOL_DIR=str(tmp_path / "spool"))
    run = run_tiny_suite(tmp_path, processes, env, name="proc", suite=PROC_SUITE.format(out=out))
    assert {t["status"] for t in run.data["tests"]} == {"passed"}, run.data
    snooped = out.read_text()
    assert snooped.count("--- ") >= 2, snooped  # the worker's environ was read (and the fork server's or pool's)
    assert "DTF_SPOOL_DIR" in snooped and "DTF_BROKER_URL=***" in snooped  # read, and blanked in place
    assert not leaks({"test": snooped}), snooped
