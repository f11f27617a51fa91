"""Running one rendered test: a fresh subprocess in its own process group, a timeout the
runner enforces itself (Celery's time limits do not work in every pool), wall time, peak
RSS of the whole process tree, and the metrics the test reported through dtf.harness.

Tests never run in a forked pool child: CUDA cannot be re-initialised after fork.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import psutil

from .harness import RESULT_FILE_ENV
from .model import RenderedTest, Status, TestResult

__all__ = ["Execution", "execute", "run_source"]

STDERR_TAIL_CHARS = 4000
_SAMPLE_INTERVAL_S = 0.02


@dataclass(frozen=True)
class Execution:
    """What happened when a test's process ran."""

    status: str
    duration_s: float
    peak_memory_mb: float
    metrics: Mapping[str, object]
    error: str | None
    stderr_tail: str | None
    started_at: float
    finished_at: float


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - STDERR_TAIL_CHARS))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _read_outcome(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _wait(proc: subprocess.Popen[bytes], timeout_s: float) -> tuple[bool, int]:
    """Wait for the child, sampling the tree's RSS; True if it timed out. Returns peak bytes."""
    deadline = time.monotonic() + timeout_s
    peak = 0
    try:
        ps = psutil.Process(proc.pid)
    except psutil.Error:
        ps = None
    interval = 0.002  # sample fast at first: most tests are short
    while True:
        if ps is not None:
            peak = max(peak, _tree_rss(ps))
        try:
            proc.wait(timeout=interval)
            return False, peak
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() >= deadline:
            return True, peak
        interval = min(interval * 2, _SAMPLE_INTERVAL_S)


def run_source(
    source: str,
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    python: str = sys.executable,
) -> Execution:
    """Write ``source`` to a temp dir and run it; never raises for what the test does."""
    with tempfile.TemporaryDirectory(prefix="dtf-test-") as tmp:
        work = Path(tmp)
        script = work / "test_main.py"
        script.write_text(source, encoding="utf-8")
        outcome_file = work / "outcome.json"
        stderr_file = work / "stderr.txt"
        child_env = dict(os.environ if env is None else env)
        child_env[RESULT_FILE_ENV] = str(outcome_file)
        child_env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
        started = time.time()
        t0 = time.perf_counter()
        with open(stderr_file, "wb") as err:
            try:
                proc = subprocess.Popen(
                    [python, str(script)],
                    cwd=work,
                    env=child_env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    start_new_session=True,  # own process group: the timeout kills the tree
                )
            except OSError as exc:
                now = time.time()
                return Execution("error", 0.0, 0.0, {}, f"cannot start test: {exc}", None, started, now)
            try:
                timed_out, peak = _wait(proc, timeout_s)
            finally:
                _kill_group(proc.pid)  # also reaps anything the test left running
                proc.wait()
        duration = time.perf_counter() - t0
        finished = time.time()
        peak_mb = peak / (1024 * 1024)
        stderr_tail = _tail(stderr_file) or None
        if timed_out:
            return Execution(
                "timeout", duration, peak_mb, {}, f"timed out after {timeout_s:g} s; process group killed",
                stderr_tail, started, finished,
            )
        return _classify(proc.returncode, _read_outcome(outcome_file), duration, peak_mb, stderr_tail, started, finished)


def _signal_name(signum: int) -> str:
    # Real-time signals between SIGRTMIN and SIGRTMAX have no Signals member.
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def _classify(
    returncode: int,
    outcome: dict[str, object] | None,
    duration: float,
    peak_mb: float,
    stderr_tail: str | None,
    started: float,
    finished: float,
) -> Execution:
    metrics = outcome.get("metrics") if outcome else None
    metrics = metrics if isinstance(metrics, dict) else {}
    reported = str(outcome.get("outcome")) if outcome else None
    error = outcome.get("error") if outcome else None
    error = str(error) if error else None
    if reported in {"passed", "failed", "error", "skipped"}:
        status = reported
        if status == "passed" and returncode != 0:
            status, error = "error", f"test reported passed but exited with code {returncode}"
    elif returncode == 0:
        status = "passed"
    elif returncode < 0:
        status, error = "error", f"killed by signal {_signal_name(-returncode)}"
    else:
        status, error = "error", f"exited with code {returncode} without reporting an outcome"
    tail = stderr_tail if status != Status.PASSED.value else None
    return Execution(status, duration, peak_mb, metrics, error, tail, started, finished)


def execute(
    test: RenderedTest,
    *,
    run_id: str,
    attempt: int,
    worker_id: str,
    hostname: str,
    env: Mapping[str, str] | None = None,
) -> TestResult:
    """Run one rendered test and describe the attempt as a TestResult."""
    ex = run_source(test.source, timeout_s=test.spec.timeout_s, env=env)
    return TestResult(
        run_id=run_id,
        test_id=test.spec.test_id,
        attempt=attempt,
        status=ex.status,
        duration_s=ex.duration_s,
        peak_memory_mb=ex.peak_memory_mb,
        metrics=ex.metrics,
        error=ex.error,
        stderr_tail=ex.stderr_tail,
        worker_id=worker_id,
        hostname=hostname,
        hardware=test.spec.hardware,
        started_at=ex.started_at,
        finished_at=ex.finished_at,
    )
