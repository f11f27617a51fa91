"""Driving a dtf deployment of real processes for the fault tests: coordinators, workers,
a `dtf submit --wait` in the background, and reading the outcome from DuckDB."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from dtf.app import make_app
from dtf.client import CoordinatorClient
from dtf.ha import LEADER_KEY
from dtf.settings import Settings
from dtf.store import open_store

from ..conftest import Processes, dtf_cmd, dtf_env
from .conftest import HA_TEMPLATES, wait_until


@dataclass
class Outcome:
    """What one run left in DuckDB."""

    tests: dict[str, dict[str, Any]]
    results: list[dict[str, Any]]
    run: dict[str, Any]
    max_token: int

    def result_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r["test_id"]] = counts.get(r["test_id"], 0) + 1
        return counts

    def lost(self) -> list[str]:
        return sorted(t for t, row in self.tests.items() if row["status"] != "passed")

    def duplicated(self) -> list[str]:
        return sorted(t for t, n in self.result_counts().items() if n > 1)


class Deployment:
    """Coordinators and workers as `dtf` subprocesses sharing one environment."""

    def __init__(self, tmp_path: Path, processes: Processes, env: dict[str, str], *,
                 db: str | None = None, data_path: str | None = None) -> None:
        self.tmp_path = tmp_path
        self.processes = processes
        # The local file by default; a "ducklake:..." store puts coordinators on "different
        # hosts": each gets a local directory (state, working dir) of its own.
        self.db: Any = db or tmp_path / "central.duckdb"
        self.data_path = data_path
        if data_path:  # hosts of their own share a signing key (else each would make one in its state dir)
            env = dict(env, DTF_SIGNING_KEY=env.get("DTF_SIGNING_KEY", "lake-ha-test-signing-key-0123456789abcdef"))
        self.env = dtf_env(DTF_SPOOL_DIR=str(tmp_path / "spool"), **{"DTF_LOG_LEVEL": "WARNING", **env})
        self.settings = Settings.from_env(self.env)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: dict[str, int] = {}

    # -- processes ----------------------------------------------------------------------------
    def coordinator(self, name: str, *extra: str) -> subprocess.Popen[bytes]:
        """Start (or restart) coordinator ``name``; each start logs to its own file."""
        self.starts[name] = self.starts.get(name, 0) + 1
        log_name = name if self.starts[name] == 1 else f"{name}.{self.starts[name]}"
        # Leading and standing by are INFO events: the tests read them from the log.
        env, cwd = dict(self.env, DTF_LOG_LEVEL="INFO"), self.tmp_path
        store_args = ["--db", str(self.db)]
        if self.data_path:
            cwd = self.tmp_path / f"host-{name}"
            cwd.mkdir(exist_ok=True)
            env = dict(env, DTF_STATE_DIR=str(cwd / "state"))
            store_args += ["--data-path", self.data_path]
        proc = self.processes.start(log_name, ["coordinator", *store_args, "--node-id", name, *extra], env, cwd)
        self.procs[name] = proc
        return proc

    def coordinator_logs(self) -> str:
        return "".join(f.read_text(errors="replace") for f in sorted(self.processes.logdir.glob("*.log"))
                       if f.name[:1] in "ab" and not f.name.startswith("submit"))

    def worker(self, name: str, *, concurrency: int = 2, pool: str = "threads") -> subprocess.Popen[bytes]:
        proc = self.processes.start(name, ["worker", "--name", f"{name}@ha", "--queues", "dtf.cpu",
                                           "--concurrency", str(concurrency), "--pool", pool,
                                           "--loglevel", "WARNING"], self.env, self.tmp_path)
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        os.kill(self.procs[name].pid, sig)

    def stop(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
            proc.wait(30)

    def log(self, name: str) -> str:
        return self.processes.log(name)

    # -- the leader ------------------------------------------------------------------------------
    def redis(self) -> redis.Redis:
        from dtf.ha import redis_from_settings

        return redis_from_settings(self.settings)

    def leader(self) -> str | None:
        value = self.redis().get(LEADER_KEY)
        return value.decode() if value else None

    def wait_for_leader(self, name: str, timeout_s: float = 20.0) -> str:
        return wait_until(lambda: (self.leader() or "").startswith(f"{name}:") and self.leader(), timeout_s,
                          0.02, f"{name} to hold the leader lock")

    def client(self, timeout_s: float = 30.0) -> CoordinatorClient:
        return CoordinatorClient(make_app(self.settings), timeout_s=timeout_s)

    def ping_token(self) -> int:
        return int(self.client().call("ping")["token"])

    # -- runs --------------------------------------------------------------------------------------
    def submit(self, suite: Path) -> "Submission":
        err = open(self.tmp_path / "logs" / "submit.err", "wb")
        proc = subprocess.Popen(
            dtf_cmd("submit", str(suite), "--wait", "--timeout", "400", "--format", "json",
                    "--templates", str(HA_TEMPLATES)),
            env=self.env, cwd=self.tmp_path, stdout=subprocess.PIPE, stderr=err, start_new_session=True,
        )
        assert proc.stdout is not None
        run_id = proc.stdout.readline().decode().strip()
        assert run_id, (self.tmp_path / "logs" / "submit.err").read_text()
        return Submission(self, proc, run_id)

    def outcome(self, run_id: str) -> Outcome:
        with open_store(str(self.db), read_only=True) as store:
            tests = {row["test_id"]: row for row in store.final_results(run_id)}
            run = store.run(run_id)
            assert run is not None
            return Outcome(tests, store.results(run_id), run, store.max_token())


class Submission:
    """A `dtf submit --wait` running in the background."""

    def __init__(self, deployment: Deployment, proc: subprocess.Popen[bytes], run_id: str) -> None:
        self.deployment = deployment
        self.proc = proc
        self.run_id = run_id

    def status(self) -> dict[str, Any]:
        return dict(self.deployment.client().call("status", run_id=self.run_id))

    def passed(self) -> int:
        return sum(per.get("passed", 0) for per in self.status()["counts"].values())

    def wait_for_passed(self, n: int, timeout_s: float = 120.0) -> None:
        wait_until(lambda: self.passed() >= n, timeout_s, 0.2, f"{n} tests to pass")

    def finish(self, timeout_s: float = 400.0) -> tuple[int, dict[str, Any]]:
        """(exit code, the JSON it printed) once `dtf submit --wait` returns."""
        out, _ = self.proc.communicate(timeout=timeout_s)
        text = out.decode()
        data = json.loads(text[text.index("{"):]) if "{" in text else {}
        return self.proc.returncode, data

    def stderr(self) -> str:
        return (self.deployment.tmp_path / "logs" / "submit.err").read_text(errors="replace")
