"""`dtf submit --wait` against a real redis-server, coordinator and worker: reports in
--output-dir, exit 2 on a timeout naming the tests that never ran, Ctrl-C leaving the run
going, and bad options refused before anything is submitted."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import junitparser
import pytest

from .conftest import coordinator_and_worker, dtf_cmd, dtf_env

pytestmark = pytest.mark.redis

MIXED = ("name: mixed\ndefaults: {iterations: 10, warmup: 1, retries: 0}\n"
         "source: synthetic\nmodels:\n  - {name: mlp-cpu, hardware: [cpu]}\n  - {name: mlp-gpu, hardware: [cuda]}\n"
         "hardware: [cpu, cuda]\nbatch_sizes: [1]\n")
PASSING = "name: quick\nsource: synthetic\ndefaults: {iterations: 10, warmup: 1, retries: 0}\nmodels: [mlp-a]\nhardware: [cpu]\nbatch_sizes: [1]\n"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server, a coordinator and a cpu worker shared by this module's tests."""
    with coordinator_and_worker(tmp_path_factory.mktemp("submit-wait"), "sw@test") as redis:
        yield redis.url


def suite(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def submit(broker: str, tmp_path: Path, *args: str, ci: bool = True) -> subprocess.CompletedProcess[str]:
    env = dtf_env(DTF_BROKER_URL=broker, **({"CI": "true"} if ci else {}))
    return subprocess.run(dtf_cmd("submit", *args), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_passing_run_exits_0_with_every_report_and_a_baseline_comparison(broker: str, tmp_path: Path) -> None:
    path = suite(tmp_path, PASSING)
    first = submit(broker, tmp_path, str(path), "--wait", "--timeout", "120")
    assert first.returncode == 0, first.stderr
    out = tmp_path / "reports"
    second = submit(broker, tmp_path, str(path), "--wait", "--timeout", "120", "--output-dir", str(out), "--baseline", "latest")
    assert second.returncode == 0, second.stderr
    doc = json.loads((out / "report.json").read_text())
    assert doc["outcome"] == "passed" and doc["baseline"]["runs"][0]["run_id"] == first.stdout.split()[0]
    assert "performance vs baseline" in second.stderr
    assert "reports: " in second.stderr and (out / "report.html").stat().st_size > 1000


@pytest.mark.slow
def test_a_timeout_exits_2_naming_the_tests_that_never_ran_and_still_writes_reports(broker: str, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    proc = submit(broker, tmp_path, str(suite(tmp_path, MIXED)), "--wait", "--wait-unserved", "--timeout", "8",
                  "--output-dir", str(out))
    assert proc.returncode == 2, proc.stderr
    assert "1 tests never finished: mlp-gpu/cuda/bs1/fp32" in proc.stderr
    assert "no worker consumes dtf.cuda" in proc.stderr
    run_id = proc.stdout.split()[0]
    assert f"dtf status {run_id} --wait" in proc.stderr
    xml = junitparser.JUnitXml.fromfile(str(out / "junit.xml"))
    results = {c.classname: c.result for s in xml for c in s}
    assert results["unknown.mlp-cpu"] == []
    (never,) = results["unknown.mlp-gpu"]
    assert isinstance(never, junitparser.Error) and never.type == "not-run"


@pytest.mark.slow
def test_ctrl_c_while_waiting_leaves_the_run_going_and_says_how_to_resume(broker: str, tmp_path: Path) -> None:
    env = dtf_env(DTF_BROKER_URL=broker, CI="true")
    # --wait-unserved: the cuda half waits for a worker, so the run is still going at Ctrl-C
    proc = subprocess.Popen(dtf_cmd("submit", str(suite(tmp_path, MIXED)), "--wait", "--wait-unserved"), env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert f"the run goes on. Resume with: dtf status {run_id} --wait" in stderr
    status = subprocess.run(dtf_cmd("status", run_id), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "state: running" in status.stdout
    waited = subprocess.run(dtf_cmd("status", run_id, "--wait", "--timeout", "3"), env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert waited.returncode == 2 and "mlp-gpu/cuda/bs1/fp32" in waited.stderr


@pytest.mark.parametrize("args, message", [
    (["--output-dir", "x"], "need --wait"),
    (["--baseline", "latest"], "need --wait"),
    (["--wait", "--baseline", "no-such-run"], "--baseline no-such-run: unknown run 'no-such-run'"),
])
def test_bad_submit_options_exit_2_before_anything_runs(broker: str, tmp_path: Path, args: list[str], message: str) -> None:
    proc = submit(broker, tmp_path, str(suite(tmp_path, PASSING)), *args)
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stdout == ""


@pytest.mark.slow
def test_a_terminal_gets_a_live_progress_bar_per_hardware(tmp_path: Path) -> None:
    import os
    import pty

    leader, follower = pty.openpty()
    env = {k: v for k, v in dtf_env(DTF_SPOOL_DIR=str(tmp_path / "spool")).items() if k != "CI"}
    proc = subprocess.run(dtf_cmd("run", str(suite(tmp_path, PASSING)), "--db", str(tmp_path / "t.duckdb")),
                          env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=follower, text=True, timeout=300)
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    text = screen.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "━" in text and "1/1" in text and "1 passed" in text and "cpu" in text
