"""Global --quiet/--verbose through the real CLI (`python -m dtf`), and options Celery
would refuse with a traceback refused as one line and exit 2 instead."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import dtf_env

SUITE = """
name: quiet
source: synthetic
defaults: {iterations: 1, warmup: 0, retries: 0}
models: [openai/whisper-tiny]
hardware: [cpu]
batch_sizes: [1]
precisions: [fp32]
"""


def dtf(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dtf_env(DTF_STATE_DIR=str(tmp_path / "state"), CI="1")
    return subprocess.run([sys.executable, "-m", "dtf", *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("flag", ["", "-q", "--quiet", "-v"])
def test_quiet_shows_no_progress_and_verbose_logs_debug_while_results_stay_the_same(tmp_path: Path, flag: str) -> None:
    suite = tmp_path / "quiet.yaml"
    suite.write_text(SUITE)
    proc = dtf(tmp_path, *([flag] if flag else []), "run", str(suite), "--db", str(tmp_path / "r.duckdb"), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    tests = json.loads(proc.stdout)["tests"]
    assert [(t["test_id"], t["status"]) for t in tests] == [("openai-whisper-tiny/cpu/bs1/fp32", "passed")]
    lines = proc.stderr.splitlines()
    if flag in ("-q", "--quiet"):
        assert lines == []
        return
    assert any(line.startswith("run quiet-") and "1 tests" in line for line in lines), proc.stderr
    assert any(line.endswith("1/1 done, passed 1  [cpu: passed=1]") for line in lines), proc.stderr
    assert any(line.startswith("wall time ") for line in lines), proc.stderr
    debug = [line for line in lines if " DEBUG " in line]
    if flag == "-v":
        assert any(" DEBUG dtf.worker: assembled dtf-embedded@local" in line for line in debug), proc.stderr
    else:
        assert debug == [] and " INFO " not in proc.stderr


def test_quiet_still_says_why_a_run_exits_2(tmp_path: Path) -> None:
    proc = dtf(tmp_path, "-q", "run", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and "missing.yaml" in proc.stderr


def test_quiet_and_verbose_together_are_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = dtf(tmp_path, "-q", "-v", "version")
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", "error: --quiet and --verbose: choose one\n")


@pytest.mark.parametrize(("args", "says"), [
    (["--pool", "nosuch"], "error: --pool: unknown pool 'nosuch' (expected one of threads, prefork, solo)"),
    (["--loglevel", "LOUD"], "error: --loglevel: unknown level 'LOUD' (expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL)"),
])
def test_worker_options_celery_would_trace_back_on_are_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    # Nothing listens on port 1: the options are refused before any broker connection.
    proc = dtf(tmp_path, "worker", "--broker", "redis://127.0.0.1:1/0", *args)
    assert proc.returncode == 2
    assert proc.stderr == says + "\n" and "Traceback" not in proc.stdout
