"""Credentials and transport against real redis-servers: a password, an ACL user with the
least privilege dtf needs, and TLS with verified certificates both ways. A tiny suite runs
end to end through real coordinator, worker and submit processes in each setup, and the
wrong credentials or an untrusted certificate are refused with one clear line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis

from ..conftest import Processes, RedisServer, dtf_cmd, dtf_env
from .conftest import ACL_USER, ADMIN, SECRET, TEMPLATES, TINY_SUITE, Certificates, client, keyspace, run_tiny_suite

pytestmark = pytest.mark.redis


def _passed_both_tests(run_data: dict) -> None:
    assert sorted(t["test_id"] for t in run_data["tests"]) == ["tiny-model/cpu/bs1/fp32", "tiny-model/cpu/bs2/fp32"]
    assert {t["status"] for t in run_data["tests"]} == {"passed"}


def _submit(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    suite = tmp_path / "refused.yaml"
    suite.write_text(TINY_SUITE)
    return subprocess.run(dtf_cmd("submit", str(suite), "--templates", str(TEMPLATES)),
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)


def _one_line_refusal(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    return lines[0]


# -- password -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_suite_runs_end_to_end_against_a_redis_that_requires_a_password(
    tmp_path: Path, password_redis: RedisServer, processes: Processes
) -> None:
    env = dtf_env(DTF_BROKER_URL=password_redis.url, DTF_REDIS_PASSWORD=SECRET, DTF_SPOOL_DIR=str(tmp_path / "spool"))
    run = run_tiny_suite(tmp_path, processes, env)
    _passed_both_tests(run.data)
    with pytest.raises(redis.AuthenticationError):
        client(password_redis).ping()  # the password really was required


def test_a_wrong_password_is_one_line_without_the_password(tmp_path: Path, password_redis: RedisServer) -> None:
    env = dtf_env(DTF_BROKER_URL=password_redis.url, DTF_REDIS_PASSWORD="not-" + SECRET)
    line = _one_line_refusal(_submit(tmp_path, env))
    assert "cannot reach broker" in line and "not-" + SECRET not in line


def test_a_password_file_is_read_and_its_content_never_printed(tmp_path: Path, password_redis: RedisServer) -> None:
    secret_file = tmp_path / "redis-password"
    secret_file.write_text("wrong-" + SECRET + "\n")
    env = dtf_env(DTF_BROKER_URL=password_redis.url, DTF_REDIS_PASSWORD_FILE=str(secret_file))
    line = _one_line_refusal(_submit(tmp_path, env))
    assert "wrong-" + SECRET not in line


# -- ACL user -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_suite_runs_end_to_end_as_a_least_privilege_acl_user(
    tmp_path: Path, acl_redis: RedisServer, processes: Processes
) -> None:
    env = dtf_env(DTF_BROKER_URL=acl_redis.url, DTF_REDIS_USERNAME=ACL_USER, DTF_REDIS_PASSWORD=SECRET,
                  DTF_SPOOL_DIR=str(tmp_path / "spool"))
    run = run_tiny_suite(tmp_path, processes, env)
    _passed_both_tests(run.data)
    denied = client(acl_redis, username=ADMIN[0], password=ADMIN[1]).acl_log()
    assert denied == [], denied  # not one command or key the least-privilege user was refused


def test_the_acl_user_gets_its_own_keys_and_nothing_else(acl_redis: RedisServer) -> None:
    conn = client(acl_redis, username=ACL_USER, password=SECRET)
    conn.lpush("dtf.cpu", "x")
    conn.set("dtf:leader", "node:1", px=1000)
    conn.sadd("_kombu.binding.dtf", "x")
    for command in (("GET", "other:secret"), ("SET", "app:session", "x"), ("KEYS", "*"), ("FLUSHALL",),
                    ("CONFIG", "GET", "requirepass"), ("FUNCTION", "FLUSH"), ("SCRIPT", "FLUSH"), ("ACL", "LIST"),
                    ("FLUSHDB",), ("MONITOR",), ("SHUTDOWN",)):
        with pytest.raises(redis.exceptions.NoPermissionError):
            conn.execute_command(*command)
    with pytest.raises(redis.AuthenticationError):
        client(acl_redis).ping()  # the default user is off


def test_a_wrong_acl_user_is_refused_in_one_line(tmp_path: Path, acl_redis: RedisServer) -> None:
    env = dtf_env(DTF_BROKER_URL=acl_redis.url, DTF_REDIS_USERNAME="intruder", DTF_REDIS_PASSWORD=SECRET)
    _one_line_refusal(_submit(tmp_path, env))


# -- TLS --------------------------------------------------------------------------------------------

def _tls_url(server: RedisServer) -> str:
    return f"rediss://127.0.0.1:{server.port}/0"


@pytest.mark.slow
def test_a_suite_runs_end_to_end_over_tls_with_client_certificates(
    tmp_path: Path, tls_redis: RedisServer, certs: Certificates, processes: Processes
) -> None:
    env = dtf_env(DTF_BROKER_URL=_tls_url(tls_redis), DTF_REDIS_PASSWORD=SECRET, DTF_TLS_CA=str(certs.ca),
                  DTF_TLS_CERT=str(certs.client_cert), DTF_TLS_KEY=str(certs.client_key),
                  DTF_SPOOL_DIR=str(tmp_path / "spool"))
    run = run_tiny_suite(tmp_path, processes, env)
    _passed_both_tests(run.data)
    tls = client(tls_redis, password=SECRET, ssl=True, ssl_ca_certs=str(certs.ca),
                 ssl_certfile=str(certs.client_cert), ssl_keyfile=str(certs.client_key))
    assert any(k.startswith("db0:_kombu.binding") for k in keyspace(tls))


def test_a_server_certificate_from_an_untrusted_ca_is_refused(
    tmp_path: Path, tls_redis: RedisServer, certs: Certificates
) -> None:
    env = dtf_env(DTF_BROKER_URL=_tls_url(tls_redis), DTF_REDIS_PASSWORD=SECRET, DTF_TLS_CA=str(certs.other_ca),
                  DTF_TLS_CERT=str(certs.client_cert), DTF_TLS_KEY=str(certs.client_key))
    line = _one_line_refusal(_submit(tmp_path, env))
    assert "certificate" in line.lower() or "cannot reach broker" in line


def test_without_a_client_certificate_the_server_refuses_the_connection(
    tmp_path: Path, tls_redis: RedisServer, certs: Certificates
) -> None:
    env = dtf_env(DTF_BROKER_URL=_tls_url(tls_redis), DTF_REDIS_PASSWORD=SECRET, DTF_TLS_CA=str(certs.ca))
    _one_line_refusal(_submit(tmp_path, env))


def test_plain_redis_is_not_spoken_to_a_tls_port(tmp_path: Path, tls_redis: RedisServer) -> None:
    env = dtf_env(DTF_BROKER_URL=tls_redis.url, DTF_REDIS_PASSWORD=SECRET)
    _one_line_refusal(_submit(tmp_path, env))


@pytest.mark.parametrize("command", ["worker", "coordinator"])
def test_a_worker_or_coordinator_with_a_wrong_password_exits_in_one_line(
    tmp_path: Path, password_redis: RedisServer, command: str
) -> None:
    """Not an endless retry (issue 14, item 6): exit 2, one line naming the refusal, no password."""
    env = dtf_env(DTF_BROKER_URL=password_redis.url, DTF_REDIS_PASSWORD="not-" + SECRET, DTF_LOG_LEVEL="WARNING")
    args = ["worker", "--queues", "dtf.cpu", "--loglevel", "WARNING"] if command == "worker" else \
        ["coordinator", "--db", str(tmp_path / "c.duckdb")]
    proc = subprocess.run(dtf_cmd(*args), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused the credentials" in lines[0], proc.stderr
    assert SECRET not in proc.stderr
