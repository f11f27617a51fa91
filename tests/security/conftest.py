"""Fixtures for the security tests: a planted secret, certificates made with openssl,
redis-servers that want a password, an ACL user or TLS, raw access to their keyspace, and
a tiny suite run end to end through real `dtf coordinator`, `dtf worker` and `dtf submit`
processes."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from ..conftest import Processes, RedisServer, dtf_cmd, need_binary

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"

#: A password with characters that URLs, shells and Redis configs all treat specially.
SECRET = "pl4nted-S3cret/with:odd@chars#%"
ACL_USER = "dtf"
ADMIN = ("admin", "admin-pw-for-inspection")  # a second user, only to read the ACL log

# What dtf needs from Redis, and nothing else: its own keys and pub/sub channels, no
# admin or dangerous commands (KEYS, FLUSHALL, CONFIG, DEBUG, SHUTDOWN, MIGRATE...).
#   dtf.*                 queues (dtf.cpu, dtf.results, dtf.coordinator, dtf.reply.<uuid>,
#                         and kombu's priority sub-queues "dtf.cpu\x06\x163")
#   dtf:*                 the leader lease, its epoch and progress keys
#   _kombu.*              exchange bindings (kombu's redis transport)
#   unacked*              kombu's unacked hash, index and restore mutex
#   *.celery.pidbox*      Celery remote control: a queue per worker, reply queues, and
#                         their priority sub-queues
#   &/0.celery.pidbox     fanout channels of database 0: remote control and events. kombu
#   &/0.celeryev/*        subscribes with PSUBSCRIBE, whose pattern ACLs match literally
ACL_RULES = (
    "resetkeys ~dtf.* ~dtf:* ~_kombu.* ~unacked* ~*.celery.pidbox* "
    "resetchannels &/0.celery.pidbox &/0.celeryev/* "
    "-@all +@connection +@read +@write +@keyspace +@list +@hash +@set +@sortedset +@string "
    "+@pubsub +@transaction +eval +evalsha +script|load +script|exists +time -@dangerous -function"
)


@dataclass
class Certificates:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: trusting it must fail verification


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([need_binary("openssl"), *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(folder: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN=dtf test {name}", cwd=folder)


def _make_leaf(folder: Path, name: str, ca: str, san: str) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=dtf test {name}", cwd=folder)
    (folder / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=folder)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    folder = tmp_path_factory.mktemp("tls")
    _make_ca(folder, "ca")
    _make_ca(folder, "other-ca")
    _make_leaf(folder, "server", "ca", "IP:127.0.0.1,DNS:localhost")
    _make_leaf(folder, "client", "ca", "DNS:dtf-client")
    return Certificates(folder / "ca.crt", folder / "server.crt", folder / "server.key",
                        folder / "client.crt", folder / "client.key", folder / "other-ca.crt")


def start_redis(workdir: Path, *args: str) -> RedisServer:
    """A redis-server whose extra arguments may use ``{port}`` for its own port."""
    server = RedisServer(workdir)
    server.extra = tuple(a.format(port=server.port) for a in args)
    return server.start()


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = start_redis(tmp_path / "redis-pw", "--requirepass", SECRET)
    yield server
    server.stop()


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """The default user off; one ACL user with the least privilege dtf needs (and an admin
    the tests use to read the ACL log)."""
    aclfile = tmp_path / "users.acl"
    aclfile.write_text(f"user default off\nuser {ACL_USER} on >{SECRET} {ACL_RULES}\n"
                       f"user {ADMIN[0]} on >{ADMIN[1]} ~* &* +@all\n")
    server = start_redis(tmp_path / "redis-acl", "--aclfile", str(aclfile))
    yield server
    server.stop()


@pytest.fixture
def tls_redis(tmp_path: Path, certs: Certificates) -> Iterator[RedisServer]:
    """TLS only (no plain port), client certificates required, and a password."""
    server = start_redis(
        tmp_path / "redis-tls", "--port", "0", "--tls-port", "{port}",
        "--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key),
        "--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "yes", "--requirepass", SECRET,
    )
    yield server
    server.stop()


def client(server: RedisServer, **kwargs: Any) -> redis.Redis:
    """A raw redis-py client to look at what dtf left in Redis."""
    return redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5, **kwargs)


def keyspace(conn: redis.Redis) -> dict[str, str]:
    """Every key of every database with its type ({"db0:dtf.cpu": "list", ...})."""
    found: dict[str, str] = {}
    for db in range(16):
        conn.execute_command("SELECT", db)
        for key in conn.scan_iter(count=1000):
            found[f"db{db}:{key.decode(errors='replace')}"] = conn.type(key).decode()
    conn.execute_command("SELECT", 0)
    return found


def connections_received(conn: redis.Redis) -> int:
    return int(conn.info("stats")["total_connections_received"])


TINY_SUITE = """\
name: tiny
models:
  - {name: tiny-model, family: sec, template: sec/ok}
hardware: [cpu]
batch_sizes: [1, 2]
"""


@dataclass
class PipelineRun:
    """What one end-to-end run printed and stored."""

    submit: subprocess.CompletedProcess[str]
    data: dict[str, Any]
    db: Path

    @property
    def run_id(self) -> str:
        return str(self.data["run"]["run_id"])


def run_tiny_suite(
    tmp_path: Path, processes: Processes, env: dict[str, str], *, name: str = "tiny", suite: str = TINY_SUITE,
    timeout_s: float = 90, submit_args: Sequence[str] = (), worker_args: Sequence[str] = (),
) -> PipelineRun:
    """Start a coordinator and a worker, submit a suite and wait for its results."""
    db = tmp_path / f"{name}.duckdb"
    suite_file = tmp_path / f"{name}.yaml"
    suite_file.write_text(suite)
    processes.start(f"{name}-coordinator", ["coordinator", "--db", str(db)], env, tmp_path)
    processes.start(f"{name}-worker", ["worker", "--name", f"{name}@sec", "--queues", "dtf.cpu",
                                       "--concurrency", "1", *worker_args], env, tmp_path)
    proc = subprocess.run(
        dtf_cmd("submit", str(suite_file), "--wait", "--timeout", f"{timeout_s:g}", "--format", "json",
                "--templates", str(TEMPLATES), *submit_args),
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=150,
    )
    logs = "".join(f"\n--- {p}:\n" + processes.log(p) for p in (f"{name}-coordinator", f"{name}-worker"))
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr + logs
    data = json.loads(proc.stdout[proc.stdout.index("{"):])
    return PipelineRun(proc, data, db)


def wait_until(predicate: Any, timeout_s: float = 30.0, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())
