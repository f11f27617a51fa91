"""A small real cluster for the worker, Flower and dashboard tests: a real redis-server,
`dtf coordinator` and `dtf worker` subprocesses, and gated test templates whose tests
finish only when the driving test says so (no sleeps to tune)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from dtf.app import make_app
from dtf.client import CoordinatorClient
from dtf.settings import Settings

from .conftest import REPO, Processes, RedisServer, dtf_cmd, dtf_env

GATE_TEMPLATES = REPO / "tests" / "fixtures" / "worker_templates"
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], what: str, timeout_s: float = 60.0, every_s: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after the (generous) bound."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every_s)


class Gates:
    """Marker and gate files of the gate/wait template, one pair per test id."""

    def __init__(self, folder: Path) -> None:
        self.dir = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _base(self, test_id: str) -> Path:
        return self.dir / test_id.replace("/", "_")

    def started(self, test_id: str) -> bool:
        return self._base(test_id).with_suffix(".started").exists()

    def open(self, test_id: str) -> None:
        self._base(test_id).with_suffix(".go").write_text("go")


def gated_suite(path: Path, name: str, gates: Gates, batch_sizes: list[int], *, deps: bool = False,
                latency_ms: float = 0.0) -> Path:
    """A suite of gate/wait tests ``gated/cpu/bs<N>/fp32``; no dependency chains unless ``deps``."""
    params = f"{{dir: \"{gates.dir}\", latency_ms: {latency_ms}}}"
    path.write_text(
        f"name: {name}\n"
        "defaults: {timeout_s: 120, retries: 0}\n"
        f"models:\n  - {{name: gated, family: gate, template: gate/wait, params: {params}}}\n"
        "hardware: [cpu]\n"
        f"batch_sizes: {batch_sizes}\n"
        "precisions: [fp32]\n"
        + ("" if deps else "chain_batch_sizes: false\n")
    )
    return path


class Cluster:
    """redis + coordinator + workers as real processes; a client to ask the coordinator."""

    def __init__(self, tmp_path: Path, redis: RedisServer, processes: Processes) -> None:
        self.tmp = tmp_path
        self.redis = redis
        self.processes = processes
        self.env = dtf_env(DTF_BROKER_URL=redis.url, DTF_SPOOL_DIR=str(tmp_path / "spool"))
        self.client = CoordinatorClient(make_app(Settings(broker_url=redis.url)), timeout_s=20.0)

    def start_coordinator(self) -> None:
        self.processes.start("coordinator", ["coordinator", "--db", str(self.tmp / "central.duckdb")], self.env, self.tmp)
        wait_for(lambda: self._ping(), "the coordinator to answer")

    def _ping(self) -> bool:
        try:
            return bool(self.client.call("ping", timeout_s=3.0))
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def start_worker(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        proc = self.processes.start(name, ["worker", "--name", name, "--queues", "dtf.cpu", "--loglevel", "INFO",
                                           "--heartbeat-interval", "1", *args], self.env, self.tmp)
        wait_for(lambda: self.worker(name), f"a heartbeat from {name}")
        return proc

    def worker(self, name: str) -> dict[str, Any] | None:
        return next((w for w in self.client.call("workers") if w["worker_id"] == name), None)

    def submit(self, suite: Path, *, wait: bool = False) -> str:
        args = ["submit", str(suite), "--templates", str(GATE_TEMPLATES), "--format", "json"]
        if wait:
            args += ["--wait", "--timeout", "120"]
        proc = subprocess.run(dtf_cmd(*args), env=self.env, cwd=self.tmp, capture_output=True, text=True, timeout=180)
        assert proc.returncode in (0, 1), proc.stderr
        return proc.stdout.strip().splitlines()[0].strip()

    def tests(self, run_id: str) -> dict[str, dict[str, Any]]:
        return {t["test_id"]: t for t in self.client.call("results", run_id=run_id)["tests"]}

    def run_finished(self, run_id: str) -> bool:
        return bool(self.client.call("status", run_id=run_id)["finished"])


def memory_hog(megabytes: int, ready: Path) -> subprocess.Popen[bytes]:
    """A process that fills ``megabytes`` of RAM (every page written), then waits to be killed."""
    code = (
        "import sys, time\n"
        f"block = b'\\x01' * ({megabytes} * 1024 * 1024)\n"
        f"open({str(ready)!r}, 'w').write('ready')\n"
        "while True:\n    time.sleep(1)\n"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
