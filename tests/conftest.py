"""Shared fixtures: real redis-server processes on free loopback ports, fresh DuckDB files,
and helpers to run the real `dtf` CLI in subprocesses."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = bool(os.environ.get("CI"))


@pytest.fixture(scope="session", autouse=True)
def _private_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The default signing key (dtf.signing.default_signing_keys) lives in the state dir: one
    per test session, shared by the session's in-process apps and the dtf processes it starts."""
    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state"))
    yield
    if before is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = before


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need_binary(name: str) -> str:
    """The path of a binary; skip locally when missing, fail under CI."""
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is required under CI but is not installed")
        pytest.skip(f"{name} not installed")
    return path


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class RedisServer:
    """A redis-server child process on 127.0.0.1 with no persistence."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        binary = need_binary("redis-server")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log"), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def dtf_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTF_")}
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def dtf_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "dtf.cli", *args]


class Processes:
    """Background dtf processes started by a test, stopped (group-killed) at teardown."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
        log = open(self.logdir / f"{name}.log", "wb")
        proc = subprocess.Popen(dtf_cmd(*args), env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.logdir / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    logdir = tmp_path / "logs"
    logdir.mkdir()
    procs = Processes(logdir)
    yield procs
    procs.stop_all()


@contextmanager
def coordinator_and_worker(root: Path, worker_name: str) -> Iterator[RedisServer]:
    """A redis-server, a `dtf coordinator` (DuckDB file under ``root``) and one cpu worker
    with concurrency 1, for a module of tests to share; all stopped on exit."""
    redis = RedisServer(root / "redis").start()
    (root / "logs").mkdir()
    procs = Processes(root / "logs")
    env = dtf_env(DTF_BROKER_URL=redis.url, DTF_SPOOL_DIR=str(root / "spool"))
    try:
        procs.start("coordinator", ["coordinator", "--db", str(root / "central.duckdb")], env, root)
        procs.start("worker", ["worker", "--name", worker_name, "--queues", "dtf.cpu", "--concurrency", "1",
                               "--loglevel", "WARNING"], env, root)
        yield redis
    finally:
        procs.stop_all()
        redis.stop()


# -- PostgreSQL and the two store backends ---------------------------------------------------------

class PostgresServer:
    """A PostgreSQL server of our own: initdb into a temp dir, pg_ctl start on a free
    loopback port, trust authentication, no fsync; run as the ``postgres`` user when this
    process is root (initdb refuses root), stopped at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.bindir = Path()
        self.as_user: list[str] = []

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def start(self) -> "PostgresServer":
        initdb = shutil.which("initdb") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)
        if initdb is None:
            if IN_CI:
                pytest.fail("PostgreSQL (initdb) is required under CI but is not installed")
            pytest.skip("PostgreSQL not installed (no initdb): the DuckLake store tests need one")
        self.bindir = Path(os.path.realpath(initdb)).parent
        self.workdir.mkdir(parents=True, exist_ok=True)
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.workdir, "postgres")
        self._run(str(self.bindir / "initdb"), "-D", str(self.workdir / "data"), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.workdir / "data"), "-l", str(self.workdir / "log"), "-w",
                  "-o", f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
                        " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200", "start")
        wait_for_port(self.port)
        return self

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"dbname={dbname} host=127.0.0.1 port={self.port} user=postgres"

    def create_database(self) -> str:
        import uuid

        name = f"dtf_{uuid.uuid4().hex[:12]}"
        subprocess.run(["psql", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                        "-c", f"CREATE DATABASE {name}"], check=True, stdout=subprocess.DEVNULL, timeout=60)
        return name

    def stop(self) -> None:
        if self.bindir != Path():
            subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.workdir / "data"), "-m", "immediate",
                            "-w", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    workdir = tmp_path_factory.mktemp("postgres")
    os.chmod(workdir, 0o755)  # the postgres user must reach its data directory
    for parent in workdir.parents:
        if parent == Path(tempfile.gettempdir()):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o011)
    server = PostgresServer(workdir / "pg")
    try:
        yield server.start()
    finally:
        server.stop()


def need_lake_extension() -> None:
    """Skip (fail under CI) when this DuckDB has no ducklake extension to load."""
    from dtf.store.lake import extension_files

    if "/" not in extension_files()["ducklake"]:
        import duckdb

        try:
            duckdb.connect(config={"autoinstall_known_extensions": False}).execute("LOAD ducklake")
        except duckdb.Error:
            if IN_CI:
                pytest.fail(f"the ducklake extension is required under CI (pip install -e '.[lake]'), DuckDB {duckdb.__version__}")
            pytest.skip(f"no ducklake extension for DuckDB {duckdb.__version__} (install the lake extra)")


class StoreSpec:
    """One store of a backend, named as ``--db`` names it: ``open`` it as often as needed."""

    def __init__(self, db: str, data_path: str | None = None) -> None:
        self.db, self.data_path = db, data_path

    @property
    def backend(self) -> str:
        return "ducklake" if self.db.startswith("ducklake:") else "duckdb"

    def open(self, *, read_only: bool = False, reports: bool = False) -> Any:
        from dtf.store import open_store

        return open_store(self.db, data_path=self.data_path, read_only=read_only, reports=reports)

    def cli_args(self) -> list[str]:
        return ["--db", self.db, *(["--data-path", self.data_path] if self.data_path else [])]


@pytest.fixture(params=["duckdb", "ducklake"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSpec:
    """A new, empty store of each backend: the local file, and a DuckLake whose catalog is a
    fresh database on the session's PostgreSQL server."""
    if request.param == "duckdb":
        return StoreSpec(str(tmp_path / "dtf.duckdb"))
    need_lake_extension()
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return StoreSpec(f"ducklake:postgres:{server.conninfo(server.create_database())}", str(tmp_path / "lake") + "/")


def fresh_store_spec(backend: str, tmp_path: Path) -> StoreSpec:
    """Another new store of ``backend`` without a server round trip (a Hypothesis example
    each): a new DuckDB file, or a DuckLake with a DuckDB-file catalog."""
    import uuid

    name = uuid.uuid4().hex
    if backend == "duckdb":
        return StoreSpec(str(tmp_path / f"{name}.duckdb"))
    return StoreSpec(f"ducklake:{tmp_path / name}.ducklake", str(tmp_path / f"{name}-data") + "/")
