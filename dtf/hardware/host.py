"""The seams detection looks at the machine through, and the probing context.

A Runner runs a tool, a FileReader reads a file, and the environment stands for
os.environ. The defaults here touch the real machine; tests pass their own. `Host`
bundles them with the notes detection collects, and turns a missing, failing or hung
tool into a note instead of an exception.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable, Mapping, Sequence, TypeVar

__all__ = [
    "Runner",
    "FileReader",
    "Host",
    "run_command",
    "read_text",
    "current_platform",
    "normalise_platform",
    "normalise_arch",
    "first_line",
    "load_psutil",
    "safely",
]

Runner = Callable[[Sequence[str], float], tuple[int, str, str]]
"""run(argv, timeout_s) -> (returncode, stdout, stderr); raises FileNotFoundError when the
tool is missing and TimeoutError when it runs past the timeout."""

FileReader = Callable[[str], str]
"""read_file(path) -> text; raises OSError when the file cannot be read."""

_log = logging.getLogger("dtf.hardware")
_logged: set[str] = set()  # a worker may re-detect; say each problem once per process

_REAP_S = 1.0  # after SIGKILL, how long to wait for a tool before abandoning it
_MAX_READ = 4 * 1024 * 1024  # /proc and /sys files are small; don't trust that blindly
_CHUNK = 64 * 1024

T = TypeVar("T")


# --- the default seams -------------------------------------------------------------------


def run_command(argv: Sequence[str], timeout: float, *, env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    """Run a tool and return (returncode, stdout, stderr), never waiting past `timeout`.

    Raises FileNotFoundError when the tool is not on PATH (env's PATH when env is given)
    and TimeoutError when it does not finish in time; a timed-out tool is killed with
    its whole process group.
    """
    exe = shutil.which(argv[0], path=env.get("PATH", "") if env is not None else None)
    if exe is None:
        raise FileNotFoundError(f"{argv[0]}: not found on PATH")
    proc = subprocess.Popen(
        [exe, *argv[1:]],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=dict(env) if env is not None else None,
        start_new_session=os.name == "posix",  # so a timeout can kill what the tool started
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(proc)
        raise TimeoutError(f"{argv[0]} did not finish within {timeout:g}s") from None
    return proc.returncode, out, err


def _stop(proc: subprocess.Popen[str]) -> None:
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except OSError:
        pass  # it exited in the meantime
    try:
        proc.communicate(timeout=_REAP_S)
    except subprocess.TimeoutExpired:
        # nvidia-smi can sit in uninterruptible sleep when a GPU falls off the bus; then
        # not even SIGKILL ends it, and waiting would hang detection with it.
        pass


def read_text(path: str) -> str:
    """The default file reader: text, with undecodable bytes replaced.

    Reads in small chunks: some /proc/sys files fail a single large read with ENOMEM.
    """
    chunks: list[bytes] = []
    size = 0
    with open(path, "rb") as handle:
        while size < _MAX_READ:
            chunk = handle.read(_CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def current_platform() -> str:
    """This interpreter's platform as dtf names it: linux, darwin or windows."""
    return normalise_platform(sys.platform)


def normalise_platform(name: str) -> str:
    lowered = name.lower()
    if lowered.startswith("linux"):
        return "linux"
    if lowered in ("darwin", "macos", "mac", "osx"):
        return "darwin"
    if lowered in ("win32", "windows", "cygwin", "win"):
        return "windows"
    return lowered


def normalise_arch(machine: str) -> str:
    lowered = machine.strip().lower()
    return {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(lowered, lowered)


def first_line(*texts: str) -> str:
    for text in texts:
        for line in (text or "").splitlines():
            if line.strip():
                return line.strip()[:200]
    return "no output"


def load_psutil() -> ModuleType | None:
    """psutil, if installed. A seam: tests replace it to exercise the parsing fallbacks."""
    try:
        return importlib.import_module("psutil")
    except ImportError:
        return None


# --- the machine as the seams show it ----------------------------------------------------


@dataclass
class Host:
    """The machine being probed, seen only through the injected seams, plus the notes."""

    platform: str
    run: Runner
    read_file: FileReader
    env: Mapping[str, str]
    timeout_s: float
    native: bool  # the platform is this interpreter's own, so psutil describes it
    notes: list[str] = field(default_factory=list)
    unavailable: set[str] = field(default_factory=set)  # tools missing or hung: not asked again

    def note(self, message: str, *, level: int = logging.INFO) -> None:
        if message in self.notes:
            return
        self.notes.append(message)
        if message not in _logged:
            _logged.add(message)
            _log.log(level, "%s", message)

    def read(self, path: str) -> str | None:
        try:
            return self.read_file(path)
        except Exception:  # a missing file is the normal answer here, not a problem
            return None

    def tool(
        self,
        argv: Sequence[str],
        *,
        lacking: str,
        optional: bool = False,
        timeout: float | None = None,
        label: str | None = None,
    ) -> str | None:
        """stdout of a tool that ran and succeeded, else None with a note saying why.

        `lacking` says what detection goes without when the tool cannot answer.
        """
        name = label or os.path.basename(argv[0])
        if name in self.unavailable:
            return None
        limit = timeout if timeout is not None else self.timeout_s
        try:
            code, out, err = self.run(list(argv), limit)
        except FileNotFoundError:
            self.unavailable.add(name)
            if not optional:
                self.note(f"{name} not found ({lacking})")
            return None
        except (TimeoutError, subprocess.TimeoutExpired):
            self.unavailable.add(name)
            self.note(f"{name} timed out after {limit:g}s ({lacking})", level=logging.WARNING)
            return None
        except Exception as exc:
            self.note(f"{name} could not run: {type(exc).__name__}: {exc} ({lacking})", level=logging.WARNING)
            return None
        if code != 0:
            self.note(f"{name} exited {code}: {first_line(out, err)} ({lacking})", level=logging.WARNING)
            return None
        return out


def safely(host: Host, what: str, probe: Callable[[], T], default: T) -> T:
    """Run one probe; a bug or surprise in it costs that fact, not the whole detection."""
    try:
        return probe()
    except Exception as exc:
        host.note(f"{what} probe failed: {type(exc).__name__}: {exc}", level=logging.WARNING)
        return default
