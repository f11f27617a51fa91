"""The runner against real subprocesses: outcomes through the harness, exits and signals
without one, timeouts that take the whole process group down, peak memory, stderr tails."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from dtf.model import RenderedTest, TestSpec
from dtf.runner import STDERR_TAIL_CHARS, execute, run_source

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="process groups are POSIX")


def harness_test(body: str) -> str:
    """Source of a test whose main(h) has ``body``, run through dtf.harness."""
    return "from dtf import harness\n\ndef main(h):\n" + textwrap.indent(textwrap.dedent(body), "    ") + \
        "\n\nharness.run(main)\n"


def gone(pid: int) -> bool:
    """No such process, or only a zombie its (re)parent has yet to reap: nothing runs."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until_gone(pid: int) -> bool:
    # SIGKILL is delivered asynchronously; give the kernel a moment to finish the process.
    deadline = time.monotonic() + 10
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return gone(pid)


def spawn_sleeper_and_record_pids(pid_file: Path) -> str:
    """Source that starts a grandchild `sleep 60` and writes 'child grandchild' pids first thing."""
    return textwrap.dedent(f"""
        import os, subprocess, time
        sleeper = subprocess.Popen(["sleep", "60"])
        with open({str(pid_file)!r} + ".tmp", "w") as fh:
            fh.write(f"{{os.getpid()}} {{sleeper.pid}}")
        os.replace({str(pid_file)!r} + ".tmp", {str(pid_file)!r})
    """)


# -- outcomes reported through the harness ----------------------------------------------------

def test_a_test_that_passes_reports_passed_with_its_metrics() -> None:
    ex = run_source(harness_test("h.metric('throughput_items_s', 123.5)\nh.metric('p50', float('nan'))"),
                    timeout_s=60)
    assert ex.status == "passed" and ex.error is None and ex.stderr_tail is None
    assert ex.metrics["throughput_items_s"] == 123.5
    assert ex.metrics["p50"] != ex.metrics["p50"]  # NaN survives to the store, which writes null
    assert ex.started_at <= ex.finished_at


def test_a_failed_check_reports_failed_with_the_check_and_the_traceback() -> None:
    ex = run_source(harness_test("h.metric('x', 1)\nh.check(1 + 1 == 3, 'arithmetic')"), timeout_s=60)
    assert ex.status == "failed"
    assert ex.error == "check failed: arithmetic"
    assert ex.metrics == {"x": 1}  # metrics recorded before the failure are kept
    assert ex.stderr_tail is not None and "AssertionError" in ex.stderr_tail


def test_an_exception_reports_error_naming_its_type() -> None:
    ex = run_source(harness_test("raise ValueError('bad weights')"), timeout_s=60)
    assert (ex.status, ex.error) == ("error", "ValueError: bad weights")
    assert ex.stderr_tail is not None and "bad weights" in ex.stderr_tail


def test_skip_reports_skipped_with_the_reason() -> None:
    ex = run_source(harness_test("h.skip('no GPU with 80 GB here')"), timeout_s=60)
    assert (ex.status, ex.error) == ("skipped", "no GPU with 80 GB here")


# -- exits without an outcome -----------------------------------------------------------------

def test_an_exit_without_an_outcome_is_an_error_naming_the_code() -> None:
    ex = run_source("import sys\nsys.exit(3)\n", timeout_s=60)
    assert ex.status == "error"
    assert ex.error == "exited with code 3 without reporting an outcome"


def test_a_syntax_error_is_an_error_with_the_compiler_message_in_the_tail() -> None:
    ex = run_source("def broken(:\n", timeout_s=60)
    assert ex.status == "error"
    assert ex.stderr_tail is not None and "SyntaxError" in ex.stderr_tail


def test_a_clean_exit_without_the_harness_counts_as_passed() -> None:
    assert run_source("x = 1\n", timeout_s=60).status == "passed"


def test_reporting_passed_then_exiting_non_zero_is_an_error() -> None:
    source = harness_test("pass") + "import sys\nsys.exit(5)\n"
    ex = run_source(source, timeout_s=60)
    assert (ex.status, ex.error) == ("error", "test reported passed but exited with code 5")


def test_a_test_killed_by_a_signal_is_an_error_naming_the_signal() -> None:
    ex = run_source("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", timeout_s=60)
    assert (ex.status, ex.error) == ("error", "killed by signal SIGKILL")


@pytest.mark.skipif(not hasattr(signal, "SIGRTMIN"), reason="no real-time signals")
def test_a_test_killed_by_a_real_time_signal_is_an_error_naming_its_number() -> None:
    """Signals between SIGRTMIN and SIGRTMAX have no name in Python; the runner must not crash."""
    signum = signal.SIGRTMIN + 5
    ex = run_source(f"import os\nos.kill(os.getpid(), {int(signum)})\n", timeout_s=60)
    assert (ex.status, ex.error) == ("error", f"killed by signal {int(signum)}")


def test_a_python_that_cannot_start_is_an_error() -> None:
    ex = run_source("pass\n", timeout_s=60, python="/nonexistent/python3")
    assert ex.status == "error"
    assert ex.error is not None and ex.error.startswith("cannot start test")


# -- timeouts and process groups -----------------------------------------------------------------

def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    source = spawn_sleeper_and_record_pids(pid_file) + "time.sleep(600)\n"
    ex = run_source(source, timeout_s=3)
    assert ex.status == "timeout"
    assert ex.error is not None and "timed out after 3 s" in ex.error
    child, grandchild = (int(p) for p in pid_file.read_text().split())
    assert not psutil.pid_exists(child)  # the runner reaped its own child
    assert wait_until_gone(grandchild)


def test_a_grandchild_left_running_after_the_test_exits_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    ex = run_source(spawn_sleeper_and_record_pids(pid_file), timeout_s=60)
    assert ex.status == "passed"
    _, grandchild = (int(p) for p in pid_file.read_text().split())
    assert wait_until_gone(grandchild)


def test_the_test_runs_in_its_own_process_group() -> None:
    source = harness_test("import os\nh.metric('pgid', os.getpgrp())\nh.metric('pid', os.getpid())")
    ex = run_source(source, timeout_s=60)
    assert ex.metrics["pgid"] == ex.metrics["pid"] != os.getpgrp()


# -- measurements -------------------------------------------------------------------------------

def test_peak_memory_of_a_test_that_allocates_200_mb_is_at_least_150_mb() -> None:
    # b"x" * n writes every page, so it is resident (a zeroed bytearray may not be).
    source = "import time\nblock = b'x' * (200 * 1024 * 1024)\ntime.sleep(0.5)\n"
    ex = run_source(source, timeout_s=60)
    assert ex.status == "passed"
    assert ex.peak_memory_mb >= 150


def test_peak_memory_counts_the_children_of_the_test() -> None:
    source = textwrap.dedent("""
        import subprocess, sys
        subprocess.run([sys.executable, "-c",
                        "import time; block = b'x' * (200 * 1024 * 1024); time.sleep(0.5)"], check=True)
    """)
    ex = run_source(source, timeout_s=60)
    assert ex.status == "passed"
    assert ex.peak_memory_mb >= 150


def test_stderr_tail_on_failure_is_capped_and_keeps_the_end() -> None:
    source = "import sys\nsys.stderr.write('é' * 20000 + '\\nLAST LINE\\n')\nsys.exit(1)\n"
    ex = run_source(source, timeout_s=60)
    assert ex.status == "error"
    assert ex.stderr_tail is not None
    assert len(ex.stderr_tail) <= STDERR_TAIL_CHARS
    assert ex.stderr_tail.endswith("LAST LINE\n")


def test_stderr_of_a_passing_test_is_not_kept() -> None:
    ex = run_source("import sys\nsys.stderr.write('warning: slow\\n')\n", timeout_s=60)
    assert ex.status == "passed" and ex.stderr_tail is None


def test_the_test_sees_the_environment_it_is_given() -> None:
    env = dict(os.environ, DTF_TEST_MARKER="seen")
    ex = run_source(harness_test("import os\nh.metric('marker', os.environ['DTF_TEST_MARKER'])"),
                    timeout_s=60, env=env)
    assert ex.metrics == {"marker": "seen"}


def test_execute_describes_the_attempt_as_a_test_result() -> None:
    spec = TestSpec("bert-cpu-8-fp32", "bert-base", "encoder", "cpu", 8, "fp32", "encoder/latency", timeout_s=60)
    test = RenderedTest(spec, harness_test("h.metric('p50', 2.0)"), "sha256:abc")
    result = execute(test, run_id="run1", attempt=2, worker_id="w1", hostname="host1")
    assert (result.run_id, result.test_id, result.attempt, result.status) == ("run1", "bert-cpu-8-fp32", 2, "passed")
    assert (result.worker_id, result.hostname, result.hardware) == ("w1", "host1", "cpu")
    assert result.metrics == {"p50": 2.0}
    assert result.duration_s > 0 and result.peak_memory_mb > 0


def test_execute_enforces_the_spec_timeout() -> None:
    spec = TestSpec("slow", "m", "f", "cpu", 1, "fp32", "t", timeout_s=1)
    test = RenderedTest(spec, "import time\ntime.sleep(600)\n", "h")
    assert execute(test, run_id="r", attempt=1, worker_id="w", hostname="h").status == "timeout"


# -- working directories ----------------------------------------------------------------------
_LITTER = """
import os, json
json.dump({"cwd": os.getcwd(), "entries": sorted(os.listdir("."))}, open(os.environ["SEEN"], "w"))
os.makedirs("sub/deeper", exist_ok=True)
open("sub/deeper/left.txt", "w").write("x")
open("outcome.json", "w").write('{"outcome": "passed"}')
os.symlink("/etc/hostname", "planted-link")
os.chmod(".", 0o500)
"""


def test_every_test_starts_in_an_empty_private_directory_whatever_the_last_one_left(tmp_path: Path) -> None:
    seen = [tmp_path / f"seen{i}.json" for i in range(3)]
    for path in seen:
        assert run_source(_LITTER, timeout_s=60, env=dict(os.environ, SEEN=str(path))).status == "passed"
    import json

    views = [json.loads(p.read_text()) for p in seen]
    assert [v["entries"] for v in views] == [["stderr.txt", "test_main.py"]] * 3
    for cwd in {v["cwd"] for v in views if os.path.isdir(v["cwd"])}:  # kept for reuse: private again
        assert os.stat(cwd).st_mode & 0o777 == 0o700
    assert os.path.exists("/etc/hostname")  # the planted link was removed, not followed


def test_a_directory_the_test_replaced_with_a_symlink_is_never_used_again(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    swap = f"""
import os
cwd = os.getcwd()
os.rename(cwd, cwd + ".moved")
os.symlink({str(elsewhere)!r}, cwd)
"""
    moved = tmp_path / "moved-cwd.txt"
    run_source(swap + f"open({str(moved)!r}, 'w').write(cwd + '.moved')\n", timeout_s=60)
    seen = tmp_path / "seen.json"
    code = "import os, json\njson.dump(os.getcwd(), open(os.environ['SEEN'], 'w'))\n"
    for _ in range(3):
        assert run_source(code, timeout_s=60, env=dict(os.environ, SEEN=str(seen))).status == "passed"
        assert os.path.realpath(seen.read_text().strip('"')) != str(elsewhere)
    assert list(elsewhere.iterdir()) == []  # nothing was written or deleted through the link
    shutil.rmtree(moved.read_text(), ignore_errors=True)
