"""What every benchmark script shares: the machine and versions it ran on, repeats with
median and spread, a private redis-server on a free loopback port, trivial suites, and
printing one JSON document."""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import psutil

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
TEMPLATES = BENCH / "templates"
PYTHON = sys.executable

_PACKAGES = ("dtf", "celery", "kombu", "redis", "duckdb", "pyarrow", "jinja2", "pytest", "pytest-xdist", "numpy")


def machine() -> dict[str, Any]:
    """Cores, memory and software versions, so a figure is never read without its context."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    redis_server = shutil.which("redis-server")
    if redis_server:
        out = subprocess.run([redis_server, "--version"], capture_output=True, text=True).stdout
        versions["redis-server"] = next((p.split("=", 1)[1] for p in out.split() if p.startswith("v=")), out.strip())
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "versions": versions,
    }


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median and spread of repeated measurements (spread = (max - min) / median)."""
    vals = [float(v) for v in values]
    med = statistics.median(vals)
    return {
        "median": med,
        "min": min(vals),
        "max": max(vals),
        "spread_pct": round(100.0 * (max(vals) - min(vals)) / med, 1) if med else 0.0,
        "runs": vals,
    }


def repeat(fn: Callable[[], float], repeats: int) -> dict[str, Any]:
    return summary([fn() for _ in range(repeats)])


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def emit(name: str, args: Any, results: dict[str, Any], notes: Sequence[str] = ()) -> None:
    doc = {
        "benchmark": name,
        "command": " ".join([f"python bench/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "quick": bool(getattr(args, "quick", False)),
        "repeats": repeats_of(args),
        "machine": machine(),
        "results": results,
        "notes": list(notes),
    }
    json.dump(doc, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A private redis-server (no persistence) on a free loopback port; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def trivial_suite(path: Path, n: int, *, name: str = "bench") -> Path:
    """A suite of exactly ``n`` trivial tests with no dependencies: one model per test id
    block, batch sizes 1..k, fp32 on cpu."""
    per_model = min(n, 100)
    lines = [f"name: {name}", "chain_batch_sizes: false", "hardware: [cpu]", "batch_sizes: [1]", "precisions: [fp32]",
             "defaults: {timeout_s: 60, retries: 0, iterations: 1, warmup: 0}", "models:"]
    left, i = n, 0
    while left > 0:
        k = min(per_model, left)
        sizes = ", ".join(str(b) for b in range(1, k + 1))
        lines.append(f"  - {{name: m{i:05d}, family: bench, template: bench/trivial, batch_sizes: [{sizes}]}}")
        left -= k
        i += 1
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def dtf_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTF_")}
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def add_common_args(parser: Any, *, repeats: int = 3) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for smoke tests")
    parser.add_argument("--repeats", type=int, default=None, help=f"repeats per measurement (default {repeats}; 1 with --quick)")


def repeats_of(args: Any, default: int = 3) -> int:
    if args.repeats is not None:
        return max(1, args.repeats)
    return 1 if args.quick else default
