"""Options the CLI used to take unchecked, progress lines that lost their per-hardware part
to rich markup, and flags shown with a "<bool>" value in --help."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from dtf.cli import common, progress

from .conftest import dtf_cmd, dtf_env

GOOD = "name: s\nmodels: [gpt2]\nhardware: [cpu]\nbatch_sizes: [1]\n"


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dtf_env(DTF_BROKER_URL="redis://127.0.0.1:1/0", DTF_STATE_DIR=str(tmp_path / "state"))
    return subprocess.run(dtf_cmd(*args), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("args", "says"), [
    (["run", "SUITE", "--format", "xml"], "--format: expected table or json, got 'xml'"),
    (["run", "SUITE", "--workers", "0"], "--workers: expected at least 1, got 0"),
    (["submit", "SUITE", "--format", "xml"], "--format: expected table or json, got 'xml'"),
    (["results", "r", "--format", "yaml", "--db", "x.duckdb"], "--format: expected table or json, got 'yaml'"),
    (["runs", "--format", "csv"], "--format: expected table or json, got 'csv'"),
    (["workers", "--format", "csv"], "--format: expected table or json, got 'csv'"),
    (["worker", "--concurrency", "0"], "--concurrency: expected at least 1, got 0"),
    (["templates", "render", "text_embedding/cpu", "--precision", "fp8"], "--precision: unknown precision 'fp8'"),
    (["templates", "render", "text_embedding/cpu", "--batch-size", "0"], "--batch-size: expected a positive integer, got 0"),
])
def test_unchecked_options_are_one_line_and_exit_2(tmp_path: Path, args: list[str], says: str) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(GOOD)
    proc = run_cli(tmp_path, *[str(suite) if a == "SUITE" else a for a in args])
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.strip() == f"error: {says}" or proc.stderr.strip().startswith(f"error: {says}"), proc.stderr
    assert proc.stderr.count("\n") == 1
    assert not (tmp_path / "dtf.duckdb").exists()


def test_progress_lines_keep_the_per_hardware_part() -> None:
    status = {"run": {"run_id": "r1"}, "finished": True,
              "counts": {"cpu": {"passed": 2}, "cuda": {"queued": 1}}}
    buf = io.StringIO()
    common.err, saved = Console(file=buf, highlight=False, soft_wrap=True), common.err
    try:
        progress.PlainProgress().show(status)
    finally:
        common.err = saved
    assert buf.getvalue().strip() == "r1: 2/3 done, passed 2, queued 1  [cpu: passed=2; cuda: queued=1]"


def test_help_shows_no_value_after_flags() -> None:
    proc = subprocess.run(dtf_cmd("submit", "--help"), env=dtf_env(COLUMNS="200"), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    wait_line = next(line for line in proc.stdout.splitlines() if "--wait " in line)
    assert "<bool>" not in proc.stdout and "<float>" in proc.stdout, wait_line
