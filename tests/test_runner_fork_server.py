"""The runner's fork server (dtf.forkserver): CPU tests are forked from a warm interpreter that never loaded
a GPU runtime, each still a process of its own; everything else is spawned fresh."""

from __future__ import annotations

import os
import signal
import sys
import textwrap

import psutil
import pytest

from dtf import forkserver
from dtf.runner import run_source

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork is POSIX")


def probe(extra: str = "") -> str:
    """A test that reports who started it and what its interpreter has loaded."""
    return textwrap.dedent(f"""
        import os, sys
        {extra}
        from dtf import harness

        def main(h):
            h.metric("pid", os.getpid())
            h.metric("ppid", os.getppid())
            h.metric("pgid", os.getpgrp())
            h.metric("torch_loaded", "torch" in sys.modules)
            h.metric("secret_in_proc_environ", b"hunter2" in open(f"/proc/{{os.getpid()}}/environ", "rb").read())
            h.metric("secret_in_environ", "DTF_REDIS_PASSWORD" in os.environ)

        harness.run(main)
    """)


def test_a_cpu_test_is_forked_from_the_fork_server_into_a_group_of_its_own() -> None:
    ex = run_source(probe(), timeout_s=60)
    assert ex.status == "passed"
    assert ex.metrics["ppid"] != os.getpid()  # the fork server's child, not ours
    assert any(arg.endswith("fork.sock") for arg in psutil.Process(int(ex.metrics["ppid"])).cmdline())
    assert ex.metrics["pgid"] == ex.metrics["pid"] != os.getpgrp()
    assert ex.metrics["torch_loaded"] is False
    assert ex.peak_memory_mb > 0


def test_a_test_that_imports_torch_gets_a_fresh_interpreter() -> None:
    source = "try:\n    import torch  # noqa: F401\nexcept ImportError:\n    pass\n" + probe()
    ex = run_source(source, timeout_s=120)
    assert ex.status == "passed"
    assert ex.metrics["ppid"] == os.getpid()


def test_a_test_naming_a_gpu_gets_a_fresh_interpreter() -> None:
    ex = run_source(probe("HARDWARE = 'cuda'"), timeout_s=60)
    assert ex.metrics["ppid"] == os.getpid()


def test_the_fork_server_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DTF_FORK_SERVER", "0")
    assert run_source(probe(), timeout_s=60).metrics["ppid"] == os.getpid()


def test_an_interpreter_setting_in_the_test_env_gets_a_fresh_interpreter() -> None:
    env = dict(os.environ, PYTHONHASHSEED="123")
    assert run_source(probe(), timeout_s=60, env=env).metrics["ppid"] == os.getpid()


def test_a_forked_test_sees_its_own_env_and_no_secret_of_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    forkserver._default_server and forkserver._default_server.stop()  # started again with this environment
    monkeypatch.setenv("DTF_REDIS_PASSWORD", "hunter2")
    env = {k: v for k, v in os.environ.items() if k != "DTF_REDIS_PASSWORD"}
    ex = run_source(probe(), timeout_s=60, env=env)
    assert ex.metrics["ppid"] != os.getpid()
    assert ex.metrics["secret_in_environ"] is False
    assert ex.metrics["secret_in_proc_environ"] is False


def test_thread_settings_made_by_the_test_reach_the_preloaded_blas() -> None:
    pytest.importorskip("numpy")
    source = textwrap.dedent("""
        import os
        os.environ["OMP_NUM_THREADS"] = "1"
        import numpy
        from dtf import harness
        from dtf import forkserver

        def main(h):
            blas = forkserver._find_blas()
            h.metric("threads", blas[0]() if blas else 1)

        harness.run(main)
    """)
    ex = run_source(source, timeout_s=60)
    assert ex.status == "passed" and ex.metrics["threads"] == 1


def test_a_dead_fork_server_is_replaced_and_the_test_still_runs() -> None:
    run_source(probe(), timeout_s=60)
    server = forkserver._default_server
    assert server is not None and server.running()
    assert server._proc is not None
    os.killpg(server._proc.pid, signal.SIGKILL)
    server._proc.wait()
    ex = run_source(probe(), timeout_s=60)
    assert ex.status == "passed"
    assert ex.metrics["ppid"] != os.getpid()


def test_a_forked_test_that_times_out_is_killed_with_its_children(tmp_path: "os.PathLike[str]") -> None:
    pid_file = f"{tmp_path}/pids"
    source = textwrap.dedent(f"""
        import os, subprocess, time
        sleeper = subprocess.Popen(["sleep", "60"])
        with open({pid_file!r}, "w") as fh:
            fh.write(f"{{os.getppid()}} {{sleeper.pid}}")
        time.sleep(600)
    """)
    ex = run_source(source, timeout_s=2)
    assert ex.status == "timeout"
    parent, sleeper = (int(p) for p in open(pid_file).read().split())
    assert parent != os.getpid()
    for _ in range(500):
        if not psutil.pid_exists(sleeper) or psutil.Process(sleeper).status() == psutil.STATUS_ZOMBIE:
            break
        import time

        time.sleep(0.01)
    else:
        pytest.fail("the timed-out test's child is still running")


def test_forked_tests_draw_different_random_numbers_as_fresh_interpreters_would() -> None:
    # The server imported random and numpy once; each child reseeds both from the OS.
    source = textwrap.dedent("""
        import random
        import numpy
        from dtf import harness

        harness.run(lambda h: (h.metric("py", random.random()), h.metric("np", float(numpy.random.random()))))
    """)
    runs = [run_source(source, timeout_s=60) for _ in range(3)]
    assert all(ex.status == "passed" for ex in runs), runs
    assert len({ex.metrics["py"] for ex in runs}) == 3
    assert len({ex.metrics["np"] for ex in runs}) == 3
