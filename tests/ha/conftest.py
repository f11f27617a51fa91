"""Fixtures for the high-availability tests: a real Redis Sentinel group (a master, two
replicas, three Sentinels) on free loopback ports, suites of trivial tests, and helpers
to wait for things and to read the leader lock."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import redis

from dtf.settings import Settings

from ..conftest import REPO, free_port, need_binary, wait_for_port

HA_TEMPLATES = REPO / "tests" / "ha" / "templates"
MASTER_NAME = "dtf-ha"
DOWN_AFTER_MS = 2000


def wait_until(predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.05, what: str = "condition") -> Any:
    """Poll until predicate() is truthy; return its value or fail naming what was awaited."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = predicate()
        except (redis.RedisError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def write_suite(path: Path, *, models: int, template: str = "ha/quick", batch_sizes: tuple[int, ...] = (1, 2),
                params: dict[str, Any] | None = None, timeout_s: float = 30.0) -> Path:
    """A suite of ``models x batch sizes x 2 precisions`` trivial cpu tests (bs chains included)."""
    entries = []
    for i in range(models):
        extra = f", params: {params!r}" if params else ""
        entries.append(f"  - {{name: ha-model-{i:03d}, family: ha, template: {template}{extra}}}")
    path.write_text(
        f"name: {path.stem}\n"
        f"defaults: {{timeout_s: {timeout_s}, iterations: 1, warmup: 0, retries: 0}}\n"
        "models:\n" + "\n".join(entries) + "\n"
        "hardware: [cpu]\n"
        f"batch_sizes: [{', '.join(str(b) for b in batch_sizes)}]\n"
        "precisions: [fp32, fp16]\n"
    )
    return path


class RedisNode:
    """One redis-server (data node or Sentinel) of the group, restartable on the same port."""

    def __init__(self, workdir: Path, name: str, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, args: list[str]) -> None:
        self.proc = subprocess.Popen([need_binary("redis-server"), *args], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for_port(self.port)

    def client(self, **kwargs: Any) -> redis.Redis:
        options: dict[str, Any] = {"socket_timeout": 2, "socket_connect_timeout": 2, "decode_responses": True}
        return redis.Redis(port=self.port, **{**options, **kwargs})

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)
        if sig == signal.SIGKILL:
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class SentinelCluster:
    """A master, two replicas and three Sentinels, configured as docs/ha.md recommends:
    down-after 2000 ms, quorum 2, and ``min-replicas-to-write 1`` so a master cut off from
    its replicas refuses writes instead of accepting ones the failover would discard."""

    def __init__(self, workdir: Path, down_after_ms: int = DOWN_AFTER_MS) -> None:
        self.workdir = workdir
        self.down_after_ms = down_after_ms
        self.data = [RedisNode(workdir, f"redis{i}") for i in range(3)]
        self.sentinels = [RedisNode(workdir, f"sentinel{i}") for i in range(3)]

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> "SentinelCluster":
        master = self.data[0]
        self._start_data(master, None)
        for node in self.data[1:]:
            self._start_data(node, master.port)
        for node in self.sentinels:
            self._start_sentinel(node, master.port)
        self.wait_for_agreement()
        return self

    def _data_args(self, node: RedisNode, replica_of: int | None) -> list[str]:
        lag_s = max(1, self.down_after_ms // 1000)
        args = ["--port", str(node.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(node.workdir), "--logfile", str(node.workdir / "redis.log"),
                "--min-replicas-to-write", "1", "--min-replicas-max-lag", str(lag_s),
                "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        return args

    def _start_data(self, node: RedisNode, replica_of: int | None) -> None:
        node.start(self._data_args(node, replica_of))

    def _start_sentinel(self, node: RedisNode, master_port: int) -> None:
        conf = node.workdir / "sentinel.conf"  # Sentinel rewrites its own config: writable, one each
        conf.write_text(
            f"port {node.port}\nbind 127.0.0.1\ndir {node.workdir}\nlogfile {node.workdir / 'sentinel.log'}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
            f"sentinel failover-timeout {MASTER_NAME} 10000\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        node.start([str(conf), "--sentinel"])

    def stop(self) -> None:
        for node in [*self.sentinels, *self.data]:
            node.stop()

    # -- views ---------------------------------------------------------------------------------
    def agreed_master(self) -> RedisNode | None:
        """The master every Sentinel names, or None while they disagree."""
        ports = {int(s.client().sentinel_get_master_addr_by_name(MASTER_NAME)[1]) for s in self.sentinels}
        if len(ports) != 1:
            return None
        port = ports.pop()
        return next(n for n in self.data if n.port == port)

    def master(self) -> RedisNode:
        return wait_until(self.agreed_master, 20.0, 0.05, "the sentinels to agree on a master")

    def master_port(self) -> int:
        return self.master().port

    def _agreed(self, expect_replicas: int) -> bool:
        ports = set()
        for s in self.sentinels:
            info = s.client().sentinel_master(MASTER_NAME)
            if info.get("is_master_down") or int(info["num-other-sentinels"]) != 2:
                return False
            replicas = [r for r in s.client().sentinel_slaves(MASTER_NAME)
                        if not r.get("is_odown") and not r.get("is_sdown") and r.get("master-link-status") == "ok"]
            if len(replicas) != expect_replicas:
                return False
            ports.add(int(info["port"]))
        if len(ports) != 1:
            return False
        port = ports.pop()
        master = next(n for n in self.data if n.port == port)
        return master.client().info("replication").get("role") == "master" and self._writable(master)

    @staticmethod
    def _writable(node: RedisNode) -> bool:
        try:
            return bool(node.client().set("dtf:test:probe", "1", px=1000))
        except redis.RedisError:
            return False

    def wait_for_agreement(self, expect_replicas: int = 2, timeout_s: float = 45.0) -> None:
        """Every Sentinel sees the same writable master, ``expect_replicas`` healthy replicas
        and two other Sentinels."""
        wait_until(lambda: self._agreed(expect_replicas), timeout_s, 0.1, "the sentinels to agree")

    # -- faults ---------------------------------------------------------------------------------
    def kill_master(self) -> RedisNode:
        node = self.master()
        node.signal(signal.SIGKILL)
        return node

    def wait_for_new_master(self, old: RedisNode, timeout_s: float = 20.0) -> RedisNode:
        """Block until a different node is master and accepts a write; return it."""
        def promoted() -> RedisNode | None:
            node = self.agreed_master()
            return node if node is not None and node is not old and self._writable(node) else None
        return wait_until(promoted, timeout_s, 0.05, "a new writable master")

    def rejoin(self, node: RedisNode) -> None:
        """Restart a killed (or stopped) node as a replica of the current master and wait for agreement."""
        node.stop()
        self._start_data(node, self.master_port())
        self.wait_for_agreement()

    # -- client configuration -------------------------------------------------------------------
    @property
    def sentinel_addrs(self) -> tuple[str, ...]:
        return tuple(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def settings(self, **overrides: Any) -> Settings:
        return Settings(sentinels=self.sentinel_addrs, sentinel_master=MASTER_NAME, **overrides)

    def env(self) -> dict[str, str]:
        return {"DTF_SENTINELS": ",".join(self.sentinel_addrs), "DTF_SENTINEL_MASTER": MASTER_NAME}


@pytest.fixture
def sentinel_cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    cluster = _start_group(tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()
    left = [n.name for n in [*cluster.sentinels, *cluster.data] if n.alive()]
    assert left == [], f"processes left behind: {left}"


def _start_group(tmp_path: Path, attempts: int = 2) -> SentinelCluster:
    """Start the group; if it never agrees (seen once in CI on a loaded 2-core machine, e.g.
    a free port taken between choosing and binding it), tear it down and start a fresh
    group on new ports once. The failure names the Sentinel log lines it saw."""
    for attempt in range(1, attempts + 1):
        cluster = SentinelCluster(tmp_path / f"sentinel-group-{attempt}")
        try:
            return cluster.start()
        except AssertionError:
            logs = "".join((n.workdir / "sentinel.log").read_text(errors="replace")[-1500:]
                           for n in cluster.sentinels if (n.workdir / "sentinel.log").exists())
            cluster.stop()
            if attempt == attempts:
                raise AssertionError(f"the Sentinel group never agreed; last sentinel logs:\n{logs}") from None
    raise AssertionError("unreachable")
