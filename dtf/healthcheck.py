"""Health-gated workers: a short known-answer check per hardware kind before a worker
consumes that kind's queues, again every ``DTF_HEALTHCHECK_INTERVAL`` seconds and after a
test ends in an infrastructure error.

* cpu: a small pure-Python computation (an integer matrix product, a sum of squares and
  a sha256) compared with answers computed by hand once and written down here.
* cuda, rocm, mps: when torch is installed, a tiny seeded matmul on the device compared
  with the same product on the CPU (in a subprocess, so the worker never initialises a
  GPU context itself); plus, on NVIDIA, the driver's uncorrected ECC error counters
  (``nvidia-smi --query-gpu=index,ecc.errors.uncorrected.volatile.total``): any
  uncorrected error fails the check.
* webgpu, and a GPU kind without torch: nothing to compute here; passes with a note.

A failed check takes the kind's queues (plain and requirement queues) away from the worker
(dtf.routing) and the reason is shown in ``dtf workers``.

Test hook: ``DTF_HEALTHCHECK_FAIL`` (a comma list of kinds, or ``all``) makes those kinds'
checks fail with the reason "failed by DTF_HEALTHCHECK_FAIL (test hook)". It exists so that
the gate can be exercised on healthy machines; never set it in production.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from typing import Callable, Mapping, Sequence

from .hardware.host import run_command

__all__ = ["CHECKS", "FAIL_ENV", "INTERVAL_ENV", "DEFAULT_INTERVAL_S", "check_kind", "check_kinds", "cpu_check", "interval_s",
           "parse_nvidia_ecc"]

log = logging.getLogger("dtf.worker")

FAIL_ENV = "DTF_HEALTHCHECK_FAIL"
INTERVAL_ENV = "DTF_HEALTHCHECK_INTERVAL"
DEFAULT_INTERVAL_S = 600.0
_TORCH_TIMEOUT_S = 120.0

# Known answers: [[1..4],[5..8]] x [[1,2],[3,4],[5,6],[7,8]], sum of k^2 for k < 1000, sha256("dtf-health").
_A = [[1, 2, 3, 4], [5, 6, 7, 8]]
_B = [[1, 2], [3, 4], [5, 6], [7, 8]]
_PRODUCT = [[50, 60], [114, 140]]
_SQUARES = 332_833_500
_HEALTH_DIGEST = "8942d4e0627e56a63e772a242caeb912e1fee62f7b1b83e4112fe2c8fd3d961f"


def cpu_check() -> str | None:
    """None when the CPU computes the known answers; else what differed."""
    product = [[sum(a * b for a, b in zip(row, col)) for col in zip(*_B)] for row in _A]
    if product != _PRODUCT:
        return f"cpu known-answer check failed: matmul gave {product}, expected {_PRODUCT}"
    squares = sum(k * k for k in range(1000))
    if squares != _SQUARES:
        return f"cpu known-answer check failed: sum of squares gave {squares}, expected {_SQUARES}"
    if hashlib.sha256(b"dtf-health").hexdigest() != _HEALTH_DIGEST:
        return "cpu known-answer check failed: sha256 differs"
    return None


_TORCH_SCRIPT = """
import sys
try:
    import torch
except Exception:
    print("no-torch"); sys.exit(0)
kind = sys.argv[1]
device = {"cuda": "cuda", "rocm": "cuda", "mps": "mps"}[kind]
ok = torch.backends.mps.is_available() if kind == "mps" else torch.cuda.is_available()
if not ok:
    print("unavailable"); sys.exit(3)
g = torch.Generator().manual_seed(1234)
a = torch.randn(64, 64, generator=g)
b = torch.randn(64, 64, generator=g)
want = a @ b
got = (a.to(device) @ b.to(device)).cpu()
err = (got - want).abs().max().item()
print(f"max-abs-diff {err:.3g}")
sys.exit(0 if err < 1e-2 else 4)
"""


def _torch_check(kind: str) -> str | None:
    try:
        proc = subprocess.run([sys.executable, "-c", _TORCH_SCRIPT, kind], capture_output=True, text=True,
                              timeout=_TORCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"{kind} known-answer check: no answer within {_TORCH_TIMEOUT_S:g} s"
    out = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode == 0:
        if out == "no-torch":
            log.info("%s health check: torch is not installed, known-answer check skipped", kind)
        return None
    if proc.returncode == 3:
        return f"{kind} known-answer check: torch sees no {kind} device"
    if proc.returncode == 4:
        return f"{kind} known-answer check: device matmul differs from the CPU's ({out})"
    tail = (proc.stderr.strip().splitlines() or [out])[-1]
    return f"{kind} known-answer check crashed (exit {proc.returncode}): {tail[:200]}"


def parse_nvidia_ecc(text: str) -> dict[int, int]:
    """GPU index -> uncorrected volatile ECC errors, from ``nvidia-smi
    --query-gpu=index,ecc.errors.uncorrected.volatile.total --format=csv,noheader,nounits``.
    GPUs that report [N/A] (ECC off, or not supported) are left out."""
    counts: dict[int, int] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 2 or not cells[0].isdigit():
            continue
        if cells[1].isdigit():
            counts[int(cells[0])] = int(cells[1])
    return counts


def _nvidia_counters() -> str | None:
    try:
        code, out, _ = run_command(["nvidia-smi", "--query-gpu=index,ecc.errors.uncorrected.volatile.total",
                                    "--format=csv,noheader,nounits"], 15.0)
    except (OSError, ValueError):
        return None
    if code != 0:
        return None
    bad = {i: n for i, n in parse_nvidia_ecc(out).items() if n > 0}
    if bad:
        return "uncorrected ECC errors: " + ", ".join(f"gpu {i}: {n}" for i, n in sorted(bad.items()))
    return None


def _gpu_check(kind: str) -> str | None:
    if kind == "cuda":
        counters = _nvidia_counters()
        if counters:
            return counters
    return _torch_check(kind)


CHECKS: Mapping[str, Callable[[], str | None]] = {
    "cpu": cpu_check,
    "cuda": lambda: _gpu_check("cuda"),
    "rocm": lambda: _gpu_check("rocm"),
    "mps": lambda: _gpu_check("mps"),
}


def _forced(kind: str, env: Mapping[str, str]) -> bool:
    wanted = {k.strip() for k in env.get(FAIL_ENV, "").split(",") if k.strip()}
    return kind in wanted or "all" in wanted


def check_kind(kind: str, env: Mapping[str, str] | None = None) -> str | None:
    """Run one kind's check: None when it passed, else the reason."""
    env = os.environ if env is None else env
    if _forced(kind, env):
        return f"failed by {FAIL_ENV} (test hook)"
    check = CHECKS.get(kind)
    if check is None:
        return None
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - a check that raises is a failed check
        return f"{kind} health check raised {type(exc).__name__}: {exc}"


def check_kinds(kinds: Sequence[str], env: Mapping[str, str] | None = None) -> dict[str, str | None]:
    return {kind: check_kind(kind, env) for kind in kinds}


def interval_s(env: Mapping[str, str] | None = None) -> float:
    env = os.environ if env is None else env
    try:
        value = float(env.get(INTERVAL_ENV, "") or DEFAULT_INTERVAL_S)
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value > 0 else DEFAULT_INTERVAL_S
