"""Running one rendered test: a process of its own in its own process group, a timeout the
runner enforces itself (Celery's time limits do not work in every pool), wall time, peak
RSS of the whole process tree, and the metrics the test reported through dtf.harness.

A CPU test is forked from a warm fork server (dtf.forkserver) when that server serves it;
every other test, and every test when it cannot, gets a freshly spawned interpreter.
Either way the test is a process of its own: its own session and process group, killed
as a group on timeout, RSS-sampled, stdout and stderr redirected.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import psutil

from .forkserver import ForkedChild, kill_group, model_server_for, server_for
from .harness import RESULT_FILE_ENV
from .settings import scrub_secrets
from .model import RenderedTest, Status, TestResult
from .models.reuse import load_config

__all__ = ["Execution", "execute", "run_source", "clear_work_dirs"]

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


class _TreeRss:
    """Samples the resident memory of a test's process tree.

    Finding descendants means reading every /proc/<pid>/stat (psutil's children()), about
    a millisecond or two per call; reading the RSS of known processes is cheap. So the tree
    is re-discovered at growing intervals (50 ms, doubling to 1 s) and summed on every
    sample. A forked test's exact peak also comes from wait4 (ru_maxrss) when it ends."""

    def __init__(self, pid: int) -> None:
        try:
            self.root: psutil.Process | None = psutil.Process(pid)
        except psutil.Error:
            self.root = None
        self.procs: list[psutil.Process] = [self.root] if self.root is not None else []
        self._discover_every = 0.05
        self._next_discovery = time.monotonic() + self._discover_every

    def sample(self) -> int:
        if self.root is None:
            return 0
        now = time.monotonic()
        if now >= self._next_discovery:
            try:
                self.procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                pass
            self._discover_every = min(1.0, self._discover_every * 2)
            self._next_discovery = now + self._discover_every
        total = 0
        for p in self.procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total



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


class _SpawnedChild:
    """A test in a freshly spawned interpreter (a direct child of this process)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.peak_rss = 0  # sampled only
        self.lost = False

    def poll(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def finish(self) -> int:
        kill_group(self.pid)  # also reaps anything the test left running
        return self.proc.wait()


def _wait(child: "_SpawnedChild | ForkedChild", timeout_s: float, cancel: threading.Event | None = None) -> tuple[bool, int]:
    """Wait for the child, sampling the tree's RSS; True if it timed out (or ``cancel`` was set). Returns peak bytes."""
    deadline = time.monotonic() + timeout_s
    peak = 0
    tree = _TreeRss(child.pid)
    interval = 0.002  # sample fast at first: most tests are short
    while True:
        peak = max(peak, tree.sample())
        if child.poll(interval):
            return False, peak
        if time.monotonic() >= deadline or (cancel is not None and cancel.is_set()):
            return True, peak
        interval = min(interval * 2, _SAMPLE_INTERVAL_S)


class _WorkDirs:
    """Empty private directories for tests to run in, emptied and reused.

    Each test starts in an empty directory of its own (mode 0700); afterwards everything
    the test left there is deleted. Reusing the directory saves a mkdir and an rmdir per
    test (half a millisecond on an ext4 /tmp). A directory that cannot be emptied, or is no
    longer the very directory that was made (replaced, or turned into a symlink), is
    removed instead and never reused."""

    def __init__(self, keep: int = 64) -> None:
        self._keep = keep
        self._free: list[tuple[str, int, int]] = []  # (path, st_dev, st_ino)
        self._lock = threading.Lock()

    @contextmanager
    def lease(self) -> Iterator[Path]:
        with self._lock:
            entry = self._free.pop() if self._free else None
        if entry is None:
            path = tempfile.mkdtemp(prefix="dtf-test-")
            st = os.lstat(path)
            entry = (path, st.st_dev, st.st_ino)
        try:
            yield Path(entry[0])
        finally:
            if self._emptied(entry):
                with self._lock:
                    if len(self._free) < self._keep:
                        self._free.append(entry)
                        entry = None
            if entry is not None:
                _remove(entry[0])

    def clear(self) -> int:
        """Remove the directories kept for reuse (at exit, or `dtf tasks run clear-cache`); how many."""
        with self._lock:
            free, self._free = self._free, []
        for path, _, _ in free:
            shutil.rmtree(path, ignore_errors=True)
        return len(free)

    @staticmethod
    def _emptied(entry: tuple[str, int, int]) -> bool:
        path, dev, ino = entry
        try:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) != (dev, ino):
                return False
            os.chmod(path, 0o700)
            for child in os.scandir(path):
                if child.is_dir(follow_symlinks=False):
                    shutil.rmtree(child.path)
                else:
                    os.unlink(child.path)
            return not os.listdir(path)
        except OSError:
            return False


def _remove(path: str) -> None:
    """Delete what is at ``path``: a directory tree, or the link or file a test put there."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass


_WORK_DIRS = _WorkDirs()
atexit.register(lambda: _WORK_DIRS.clear())


def clear_work_dirs() -> int:
    """Remove this process's work directories kept for reuse (not those of running tests)."""
    return _WORK_DIRS.clear()


def _spawn(python: str, script: Path, env: Mapping[str, str], stderr_file: Path) -> _SpawnedChild:
    with open(stderr_file, "wb") as err:
        proc = subprocess.Popen(
            [python, str(script)],
            cwd=script.parent,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # own process group: the timeout kills the tree
        )
    return _SpawnedChild(proc)


def run_source(
    source: str,
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    python: str = sys.executable,
    cancel: threading.Event | None = None,
    reuse: Mapping[str, Any] | None = None,
) -> Execution:
    """Write ``source`` to a temp dir and run it; never raises for what the test does.
    Setting ``cancel`` kills the test's process group (`dtf cancel`). ``reuse`` (from
    dtf.models.reuse.load_config) forks the test from a server that loaded its model."""
    with _WORK_DIRS.lease() as work:
        script = work / "test_main.py"
        script.write_text(source, encoding="utf-8")
        outcome_file = work / "outcome.json"
        stderr_file = work / "stderr.txt"
        # Tests never see the worker's secrets (broker password, signing key): a test that
        # prints its environment would otherwise put them in stderr_tail and the reports.
        child_env = scrub_secrets(os.environ if env is None else env)
        child_env[RESULT_FILE_ENV] = str(outcome_file)
        child_env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
        started = time.time()
        t0 = time.perf_counter()
        child: _SpawnedChild | ForkedChild | None = None
        server = model_server_for(reuse, child_env, python) if reuse is not None else server_for(source, child_env, python)
        if server is not None:
            child = server.fork(script, child_env, stderr_file)  # None: not forked, spawn instead
        if child is None:
            try:
                child = _spawn(python, script, child_env, stderr_file)
            except OSError as exc:
                now = time.time()
                return Execution("error", 0.0, 0.0, {}, f"cannot start test: {exc}", None, started, now)
        try:
            timed_out, peak = _wait(child, timeout_s, cancel)
        finally:
            returncode = child.finish()
        duration = time.perf_counter() - t0
        finished = time.time()
        peak_mb = max(peak, child.peak_rss) / (1024 * 1024)
        stderr_tail = _tail(stderr_file) or None
        if timed_out and cancel is not None and cancel.is_set():
            return Execution("error", duration, peak_mb, {}, "cancelled: the run was cancelled; process group killed",
                             stderr_tail, started, finished)
        if timed_out:
            return Execution(
                "timeout", duration, peak_mb, {}, f"timed out after {timeout_s:g} s; process group killed",
                stderr_tail, started, finished,
            )
        if child.lost:
            return Execution("error", duration, peak_mb, {}, "the fork server exited while the test ran; its exit status is lost",
                             stderr_tail, started, finished)
        return _classify(returncode, _read_outcome(outcome_file), duration, peak_mb, stderr_tail, started, finished)


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
    cancel: threading.Event | None = None,
) -> TestResult:
    """Run one rendered test and describe the attempt as a TestResult."""
    spec = test.spec
    reuse = load_config(spec.model, spec.family, spec.params) if spec.hardware == "cpu" else None
    ex = run_source(test.source, timeout_s=spec.timeout_s, env=env, cancel=cancel, reuse=reuse)
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


def _forget_work_dirs_in_child() -> None:
    # A forked worker process (Celery prefork): the parent's directories stay the parent's.
    global _WORK_DIRS
    _WORK_DIRS = _WorkDirs()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_work_dirs_in_child)
