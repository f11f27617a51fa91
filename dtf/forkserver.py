"""The fork server: a warm interpreter that forks one child per CPU test.

A fresh interpreter costs tens to hundreds of milliseconds before the test's first line
(site, imports, numpy), which dominates short tests. So dtf.runner forks a CPU test from
a fork server instead: one interpreter per worker process, spawned fresh (never forked
from the multi-threaded worker), that has imported dtf.harness and numpy but never torch
or any GPU runtime, so no CUDA context exists before the fork. Each child is still a
separate process: its own session and process group, stdout and stderr redirected, BLAS
threads set as a fresh interpreter would set them. Tests that import a GPU framework or
name a GPU, a different ``python``, or an environment that changes interpreter start-up
(``PYTHON*``, ``LD_*``) are not served here (`server_for` returns None), nor is any test
when the server cannot start or ``DTF_FORK_SERVER=0``: the runner spawns those.

This module is both sides: `ForkServer` and `ForkedChild` in the worker, `_serve_forks`
and what follows inside the server process (which imports only this module and the
preloads). The runner (dtf.runner) keeps timeouts, RSS sampling and classification.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Mapping, NoReturn

__all__ = ["FORK_SERVER_PRELOAD", "ForkServer", "ForkedChild", "kill_group", "model_server_for", "server_for",
           "stop_default_server"]


def kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads (a test and everything it started)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# Protocol, one Unix-socket connection per test: the runner sends one JSON line
# {"script", "env", "stderr"}; the server forks and answers {"pid": ...}; when the child
# exits the server kills the child's process group (the unreaped zombie still holds the
# pid, so the group id cannot have been reused), reaps it, and answers {"returncode": ...}
# (negative for a signal, as subprocess reports it). If the runner hangs up first, the
# server kills the child's group.

# runpy and pkgutil: run_path imports pkgutil, which cost every forked test ~2 ms.
FORK_SERVER_PRELOAD: tuple[str, ...] = ("dtf.harness", "numpy", "json", "math", "random", "tracemalloc", "traceback",
                                       "runpy", "pkgutil", "numpy.lib.stride_tricks")
_FORK_SERVER_ENV = "DTF_FORK_SERVER"
_START_TIMEOUT_S = 60.0
_REQUEST_TIMEOUT_S = 10.0
_RETRY_START_AFTER_S = 60.0
# A test whose source imports a GPU framework or names a GPU kind gets a fresh interpreter.
_NEEDS_SPAWN = re.compile(
    r"^\s*(?:import|from)\s+(?:torch|tensorflow|jax|jaxlib|cupy|triton|pycuda|numba|transformers|onnxruntime"
    r"|keras|mlx|tinygrad)\b|['\"](?:cuda|rocm|mps|webgpu)['\"]",
    re.MULTILINE,
)


_SERVER_ENV = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
                         "VIRTUAL_ENV", "SYSTEMROOT"})
_SERVER_ENV_PREFIXES = ("LC_", "PYTHON", "LD_", "OMP_", "OPENBLAS_", "GOTO_", "MKL_", "NUMEXPR_")


def _startup_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables that change how an interpreter starts or loads libraries."""
    return {k: v for k, v in env.items()
            if (k.startswith("PYTHON") and k != "PYTHONDONTWRITEBYTECODE") or k.startswith("LD_")}


class ForkedChild:
    """A test forked from the fork server: not our child, so its exit status comes over the socket."""

    def __init__(self, conn: socket.socket, pid: int, buffered: bytes) -> None:
        self.conn = conn
        self.pid = pid
        self.returncode: int | None = None
        self.peak_rss = 0
        self.lost = False
        self._buf = buffered
        self._parse()

    def _parse(self) -> None:
        if b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            answer = json.loads(line)
            self.returncode = int(answer["returncode"])
            self.peak_rss = int(answer.get("maxrss_kb") or 0) * 1024

    def poll(self, timeout: float) -> bool:
        if self.returncode is not None or self.lost:
            return True
        self.conn.settimeout(max(timeout, 1e-4))
        try:
            chunk = self.conn.recv(4096)
        except socket.timeout:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self.lost = True
            return True
        self._buf += chunk
        self._parse()
        return self.returncode is not None

    def finish(self) -> int:
        if self.returncode is None and not self.lost:
            kill_group(self.pid)  # timed out: the server reaps it and reports the signal
            deadline = time.monotonic() + 30
            while not self.poll(0.5) and time.monotonic() < deadline:
                pass
        if self.lost or self.returncode is None:
            kill_group(self.pid)
        self.conn.close()
        return self.returncode if self.returncode is not None else -signal.SIGKILL


class ForkServer:
    """A warm interpreter that forks one child per test.

    Spawned fresh (never forked from a multi-threaded worker), it imports ``preload`` once;
    it never imports torch or any GPU runtime, so no CUDA context exists before a fork.
    Thread-safe: each test uses its own connection. ``fork`` returns None when the server
    cannot take a test, and the caller spawns a fresh interpreter instead.
    """

    def __init__(self, preload: tuple[str, ...] = FORK_SERVER_PRELOAD, python: str = sys.executable, *,
                 setup: tuple[str, Mapping[str, Any]] | None = None, extra_env: Mapping[str, str] | None = None,
                 start_timeout_s: float = _START_TIMEOUT_S) -> None:
        self.preload = preload
        self.python = python
        # (module, argument): the server calls module.preload(argument) after the imports, before
        # any fork (dtf.models.reuse: a model server); its failure fails the start.
        self.setup = setup
        self.extra_env = dict(extra_env or {})
        self.start_timeout_s = start_timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None
        self._startup_env: dict[str, str] = {}
        self._failed_at = -1e9

    @property
    def socket_path(self) -> str:
        return os.path.join(self._dir or "", "fork.sock")

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def serves(self, env: Mapping[str, str]) -> bool:
        """Whether a test with this environment starts the same forked as spawned."""
        return _startup_env(env) == self._startup_env

    def ensure_started(self) -> bool:
        with self._lock:
            if self.running():
                return True
            self._stop_locked()
            if time.monotonic() - self._failed_at < _RETRY_START_AFTER_S:
                return False
            try:
                self._start_locked()
                return True
            except (OSError, RuntimeError, ValueError):
                self._stop_locked()
                self._failed_at = time.monotonic()
                return False

    def _start_locked(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="dtf-fork-")
        # Only what an interpreter and numpy need: a child's /proc/self/environ shows the
        # server's environment, so nothing else (no secret) may be in it.
        env = {k: v for k, v in os.environ.items() if k in _SERVER_ENV or k.startswith(_SERVER_ENV_PREFIXES)}
        env.update(self.extra_env)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        self._startup_env = _startup_env(env)
        code = ("import sys\nfrom dtf.forkserver import _serve_forks\n"
                "_serve_forks(sys.argv[1], sys.argv[2].split(','), sys.argv[3])\n")
        self._proc = subprocess.Popen(
            [self.python, "-c", code, self.socket_path, ",".join(self.preload), json.dumps(self.setup)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=self._dir,
            start_new_session=True,  # a Ctrl-C meant for the worker does not reach it
        )
        assert self._proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self._proc.stdout, selectors.EVENT_READ)
        ready = sel.select(self.start_timeout_s)
        sel.close()
        if not ready or self._proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("fork server did not start")

    def fork(self, script: Path, env: Mapping[str, str], stderr_file: Path) -> ForkedChild | None:
        if not self.ensure_started():
            return None
        request = json.dumps({"script": str(script), "env": dict(env), "stderr": str(stderr_file)}).encode() + b"\n"
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.settimeout(_REQUEST_TIMEOUT_S)
            conn.connect(self.socket_path)
            conn.sendall(request)
            buf = b""
            while b"\n" not in buf:
                chunk = conn.recv(4096)
                if not chunk:
                    raise OSError("fork server hung up")
                buf += chunk
            line, rest = buf.split(b"\n", 1)
            pid = int(json.loads(line)["pid"])
        except (OSError, ValueError, KeyError):
            conn.close()
            return None  # nothing was forked, or the child was killed when we hung up
        return ForkedChild(conn, pid, rest)

    def stop(self) -> None:
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()  # EOF: the server kills its children's groups and exits
                proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                kill_group(proc.pid)
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


_default_server: ForkServer | None = None
_default_lock = threading.Lock()


def server_for(source: str, env: Mapping[str, str], python: str) -> ForkServer | None:
    """The process's fork server if this test may be forked, else None (spawn it)."""
    global _default_server
    if os.environ.get(_FORK_SERVER_ENV, "1").strip().lower() in {"0", "false", "no", "off"}:
        return None
    if sys.platform == "win32" or python != sys.executable or _NEEDS_SPAWN.search(source):
        return None
    with _default_lock:
        if _default_server is None:
            _default_server = ForkServer()
            atexit.register(_default_server.stop)
        server = _default_server
    return server if server.ensure_started() and server.serves(env) else None


_model_servers: "dict[str, ForkServer]" = {}  # load key -> server, least recently used first
# Passed from the test's environment to a model server: where models and caches are, never a token.
_MODEL_ENV_PREFIXES = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TORCH_", "TIMM_", "XDG_CACHE_HOME")
_MODEL_SERVER_PRELOAD = (*FORK_SERVER_PRELOAD, "torch", "dtf.models.runtime")
_MODEL_SERVER_START_S = 900.0  # importing torch and loading the model, once


def model_server_for(load: Mapping[str, Any], env: Mapping[str, str], python: str) -> ForkServer | None:
    """A server that loaded this model (dtf.models.reuse), started on first use; None when
    the fork server is off, or the server could not start (the test is spawned and loads
    the model itself). At most dtf.models.reuse.MODEL_SERVERS_MAX per process."""
    from .models.reuse import MODEL_SERVERS_MAX, load_key

    if os.environ.get(_FORK_SERVER_ENV, "1").strip().lower() in {"0", "false", "no", "off"}:
        return None
    if sys.platform == "win32" or python != sys.executable:
        return None
    key = load_key(load)
    library = "timm" if load["source"].get("source") == "timm" else "transformers"
    extra = {k: v for k, v in env.items() if k.startswith(_MODEL_ENV_PREFIXES)
             and not any(word in k for word in ("TOKEN", "PASSWORD", "SECRET", "KEY"))}
    stopped = []
    with _default_lock:
        server = _model_servers.pop(key, None)
        if server is None:
            server = ForkServer((*_MODEL_SERVER_PRELOAD, library), setup=("dtf.models.reuse", load), extra_env=extra,
                                start_timeout_s=_MODEL_SERVER_START_S)
            atexit.register(server.stop)
        _model_servers[key] = server  # most recently used last
        while len(_model_servers) > MODEL_SERVERS_MAX:
            stopped.append(_model_servers.pop(next(iter(_model_servers))))
    for old in stopped:
        old.stop()
    return server if server.ensure_started() and server.serves(env) else None


def stop_default_server() -> bool:
    """Stop this process's fork server and model servers (each kills what it forked); True when
    one was running. The next CPU test starts a fresh one."""
    with _default_lock:
        servers = [s for s in (_default_server, *_model_servers.values()) if s is not None and s.running()]
    for server in servers:
        server.stop()
    return bool(servers)


def _forget_server_in_child() -> None:
    # A forked worker process (Celery prefork) starts a fork server of its own when it needs one.
    global _default_server, _default_lock, _model_servers
    _default_server, _default_lock, _model_servers = None, threading.Lock(), {}


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_server_in_child)


# -- inside the fork server -----------------------------------------------------------------------

def _serve_forks(path: str, preload: list[str], setup: str = "null") -> None:
    """The fork server's loop: fork a child per request, report its exit, exit on stdin EOF."""
    import importlib

    sys.dont_write_bytecode = True
    for name in filter(None, preload):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a missing optional module only makes forks colder
            pass
    wanted = json.loads(setup)
    if wanted:  # a failure here ends the server before "ready": the runner spawns the test instead
        module, argument = wanted
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)  # what loading prints must not come before "ready" on the pipe the runner reads
        try:
            importlib.import_module(module).preload(argument)
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
    blas = _find_blas()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(128)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(wake_r, selectors.EVENT_READ, "signal")
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "parent")
    children: dict[int, socket.socket] = {}
    conns: dict[socket.socket, int | None] = {}
    # A spare child forked ahead, waiting on a pipe for its request: a test starts without
    # waiting for the fork (about a millisecond and a half here: the fork and the child's first run).
    spare: list[tuple[int, int]] = []  # [(pid, write end of its request pipe)] or []

    def refill() -> None:
        if not spare:
            made = _fork_spare(blas, [listener, *conns], sel, (wake_r, wake_w))
            if made is not None:
                spare.append(made)

    refill()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        for key, _ in sel.select(timeout=1.0):
            if key.data == "accept":
                conn, _ = listener.accept()
                conns[conn] = None
                sel.register(conn, selectors.EVENT_READ, "conn")
            elif key.data == "signal":
                while True:
                    try:
                        if not os.read(wake_r, 512):
                            break
                    except BlockingIOError:
                        break
            elif key.data == "parent":
                if not os.read(sys.stdin.fileno(), 4096):
                    for pid in [*children, *(pid for pid, _ in spare)]:
                        kill_group(pid)
                    return
            else:
                conn = key.fileobj  # type: ignore[assignment]
                assert isinstance(conn, socket.socket)
                pid = conns.get(conn)
                request = _read_line(conn) if pid is None else b""
                if not request:  # the runner hung up (or sent nothing): drop the child with it
                    if pid is not None:
                        kill_group(pid)
                        children.pop(pid, None)
                    sel.unregister(conn)
                    conns.pop(conn, None)
                    conn.close()
                    continue
                pid = _hand_to_spare(spare, request) or _fork_test(json.loads(request), blas, [listener, *conns], sel,
                                                                  (wake_r, wake_w))
                conns[conn] = pid
                children[pid] = conn
                try:
                    conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
                except OSError:
                    pass  # seen as a hang-up on the next select
        _reap(children, conns, sel, spare)
        refill()


def _fork_spare(blas: Any, sockets: list[socket.socket], sel: selectors.BaseSelector,
                wake: tuple[int, int]) -> tuple[int, int] | None:
    """Fork a child that waits for one request on a pipe, then becomes that test."""
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return None
    if pid:
        os.close(read_end)
        return pid, write_end
    try:
        os.close(write_end)
        _leave_server(sockets, sel, wake)
        os.setsid()  # its own group now: the server can kill it as a group like any test
        _warm_spare()
        request = b""
        while not request.endswith(b"\n"):
            chunk = os.read(read_end, 1 << 20)
            if not chunk:
                os._exit(0)  # the server went away (or dropped this spare) before a request came
            request += chunk
        os.close(read_end)
        _run_test_child(json.loads(request), blas, new_session=False)
    finally:
        os._exit(70)


def _warm_spare() -> None:
    """Run, while the spare waits, what every test's start runs (the compiler, JSON, the
    environment, the harness), so that the copy-on-write page faults they cause after a fork
    are taken now and not on the test's clock. Nothing here is seen by the test."""
    try:
        exec(compile("import json, os\nfrom dtf import harness\nh = harness.Harness()\nh.metric('w', 1)\n"
                     "json.loads(json.dumps({'outcome': 'passed', 'metrics': h.metrics, 'env': dict(os.environ)}))\n",
                     "<dtf-spare-warm-up>", "exec"), {"__name__": "__dtf_warm__"})
    except Exception:  # noqa: BLE001 - a warm-up only
        pass


def _hand_to_spare(spare: list[tuple[int, int]], request: bytes) -> int | None:
    """Give ``request`` to the spare child; its pid, or None when there is no live spare."""
    while spare:
        pid, write_end = spare.pop()
        try:
            view = memoryview(request)  # the script path, stderr path and environment: a few KB
            while view:
                view = view[os.write(write_end, view):]
            return pid
        except OSError:  # it died (and is reaped as an unknown child)
            kill_group(pid)
        finally:
            os.close(write_end)
    return None


def _read_line(conn: socket.socket) -> bytes:
    buf = b""
    conn.settimeout(_REQUEST_TIMEOUT_S)
    try:
        while not buf.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                return b""
            buf += chunk
    except OSError:
        return b""
    return buf


def _reap(children: dict[int, socket.socket], conns: dict[socket.socket, int | None], sel: selectors.BaseSelector,
          spare: list[tuple[int, int]] | None = None) -> None:
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None:
            return
        kill_group(info.si_pid)  # before reaping: the zombie keeps the group id from reuse
        _, status, usage = os.wait4(info.si_pid, 0)
        conn = children.pop(info.si_pid, None)
        if conn is None:
            for dead in [entry for entry in spare or () if entry[0] == info.si_pid]:
                spare.remove(dead)  # type: ignore[union-attr]  # a spare that died: the loop forks another
                os.close(dead[1])
            continue
        # ru_maxrss (KiB on Linux): the exact peak of the child and its reaped descendants,
        # which sampling misses for a test that ends within a millisecond or two.
        answer = {"returncode": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss}
        try:
            conn.sendall(json.dumps(answer).encode() + b"\n")
        except OSError:
            pass
        sel.unregister(conn)
        conns.pop(conn, None)
        conn.close()


def _fork_test(request: dict[str, Any], blas: Any, sockets: list[socket.socket],
               sel: selectors.BaseSelector, wake: tuple[int, int]) -> int:
    pid = os.fork()
    if pid:
        return pid
    try:
        _leave_server(sockets, sel, wake)
        _run_test_child(request, blas)
    finally:
        os._exit(70)


def _leave_server(sockets: list[socket.socket], sel: selectors.BaseSelector, wake: tuple[int, int]) -> None:
    """In a freshly forked child: nothing of the server may survive into the test."""
    for sock in sockets:
        os.close(sock.detach())
    sel.close()
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in wake:
        os.close(fd)


def _run_test_child(request: dict[str, Any], blas: Any, *, new_session: bool = True) -> NoReturn:
    """Become the test: what `python test_main.py` would be, minus the start-up."""
    import atexit as child_atexit
    import runpy

    if new_session:
        os.setsid()  # own session and process group: the timeout kills the tree
    script = str(request["script"])
    os.chdir(os.path.dirname(script))
    null = os.open(os.devnull, os.O_RDWR)
    err = os.open(str(request["stderr"]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(err, 2)
    os.close(null)
    os.close(err)
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [script]
    sys.path[0] = os.path.dirname(script)
    if "numpy.random" in sys.modules:
        sys.modules["numpy.random"].seed()  # as unpredictable as in a fresh interpreter
    # (Python's own random reseeds itself in a forked child: os.register_at_fork.)
    _limit_blas_threads(blas)
    _apply_threads_before_main(blas)
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = _exit_code(exc)
    except BaseException:  # noqa: BLE001 - as the interpreter would: traceback, exit 1
        sys.excepthook(*sys.exc_info())
        code = 1
    try:
        threading._shutdown()  # type: ignore[attr-defined]  # join non-daemon threads, as at exit
    except Exception:  # noqa: BLE001
        pass
    child_atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(code)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _find_blas() -> Any:
    """(get, set) thread-count functions of the OpenBLAS numpy loaded, or None."""
    import ctypes

    try:
        with open("/proc/self/maps", encoding="utf-8") as fh:
            paths = sorted({line.split()[-1] for line in fh if "openblas" in line.lower() and "/" in line})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for suffix in ("scipy_openblas_{}_num_threads64_", "openblas_{}_num_threads64_", "openblas_{}_num_threads"):
            getter = getattr(lib, suffix.format("get"), None)
            setter = getattr(lib, suffix.format("set"), None)
            if getter is not None and setter is not None:
                return getter, setter
    return None


def _limit_blas_threads(blas: Any) -> None:
    """What OpenBLAS would have read from the environment had it been loaded just now."""
    if blas is None:
        return
    wanted = os.cpu_count() or 1
    for var in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"):
        try:
            value = int(os.environ.get(var, "").split(",")[0])
        except ValueError:
            continue
        if value > 0:
            wanted = value
            break
    getter, setter = blas
    if getter() != wanted:
        setter(wanted)


def _apply_threads_before_main(blas: Any) -> None:
    """Templates set OMP_NUM_THREADS and friends before `import numpy`, which the fork
    server already did: apply them when the test hands control to the harness."""
    harness = sys.modules.get("dtf.harness")
    if blas is None or harness is None:
        return
    run = harness.run

    def run_with_threads(main: Any, **kwargs: Any) -> None:
        _limit_blas_threads(blas)
        run(main, **kwargs)

    harness.run = run_with_threads
