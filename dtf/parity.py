"""Cross-hardware parity: compact output fingerprints and the one table of tolerances.

A real-model test records a *fingerprint* of what the model computed on a fixed, seeded
input: per output tensor its shape, element count, L2 norm, mean, largest magnitude, and
a fixed sample of values (the same indices on every backend). Two fingerprints of the same
model, batch and seed can then be compared without shipping whole tensors around.

The reference is always cpu/fp32. A candidate (another backend, another precision)
passes when, on every output present in both, the largest absolute difference over the
sampled values stays within ``atol + rtol * rms(reference)``, and its L2 norm is within
``rtol`` (relative) of the reference's. The tolerances depend only on the candidate's
precision and live in ``TOLERANCES`` below, the one place they are defined:

=========  ======  =====  =======================================================
precision  atol    rtol   why
=========  ======  =====  =======================================================
fp32       1e-5    1e-2   TF32 matmuls/convolutions on NVIDIA and other reduction
                          orders keep fp32 within about 1e-3 of the output's RMS
fp16       1e-3    5e-2   10-bit mantissa, accumulated through every layer
bf16       1e-2    2e-1   7-bit mantissa: a few percent per layer
int8       1e-2    3e-1   dynamic per-tensor quantisation of weights and activations
=========  ======  =====  =======================================================

Pure: numpy only, used inside the test process (to fail a test whose outputs drift) and
by reports (to draw the parity matrix of a run from the stored fingerprints).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = [
    "TOLERANCES",
    "SAMPLE_SIZE",
    "REFERENCE",
    "Parity",
    "fingerprint",
    "compare",
    "tolerance_for",
]

REFERENCE = ("cpu", "fp32")
SAMPLE_SIZE = 64
# precision -> (atol, rtol); see the module docstring for the reasons.
TOLERANCES: Mapping[str, tuple[float, float]] = {
    "fp32": (1e-5, 1e-2),
    "fp16": (1e-3, 5e-2),
    "bf16": (1e-2, 2e-1),
    "int8": (1e-2, 3e-1),
}


def tolerance_for(precision: str) -> tuple[float, float]:
    """(atol, rtol) for a candidate at `precision` (unknown precisions get fp32's)."""
    return TOLERANCES.get(precision, TOLERANCES["fp32"])


def _sample_indices(numel: int, k: int = SAMPLE_SIZE) -> list[int]:
    if numel <= k:
        return list(range(numel))
    step = (numel - 1) / (k - 1)
    return [round(i * step) for i in range(k)]


def fingerprint(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """{name: {shape, numel, l2, mean, max_abs, finite, sample}} of numeric arrays.

    `outputs` maps names to anything ``numpy.asarray`` takes (arrays, lists); values are
    converted to float64 before the sums, so the fingerprint itself adds no rounding.
    """
    import numpy as np

    out: dict[str, Any] = {}
    for name, value in outputs.items():
        a = np.asarray(value, dtype=np.float64)
        flat = a.reshape(-1)
        finite = bool(np.isfinite(flat).all()) if flat.size else True
        safe = np.nan_to_num(flat, nan=0.0, posinf=0.0, neginf=0.0)
        out[name] = {
            "shape": list(a.shape),
            "numel": int(flat.size),
            "l2": float(np.sqrt(np.dot(safe, safe))) if flat.size else 0.0,
            "mean": float(safe.mean()) if flat.size else 0.0,
            "max_abs": float(np.abs(safe).max()) if flat.size else 0.0,
            "finite": finite,
            "sample": [float(flat[i]) for i in _sample_indices(int(flat.size))],
        }
    return out


@dataclass(frozen=True)
class Parity:
    """The verdict of one candidate against its reference."""

    reference: str  # e.g. "cpu/fp32"
    candidate: str  # e.g. "cuda/fp16"
    verdict: str  # "pass", "fail" or "n/a"
    max_abs: float = 0.0
    max_rel: float = 0.0  # max_abs / rms(reference) on the worst output
    tolerance: float = 0.0  # atol + rtol * rms on the worst output
    output: str = ""  # the worst output's name
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "verdict": self.verdict,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "tolerance": self.tolerance,
            "output": self.output,
            "message": self.message,
        }


def compare(
    reference: Mapping[str, Any],
    candidate: Mapping[str, Any],
    *,
    precision: str,
    candidate_name: str,
    reference_name: str = "/".join(REFERENCE),
) -> Parity:
    """Compare two fingerprints; the worst output decides. "n/a" when nothing is comparable."""
    atol, rtol = tolerance_for(precision)
    worst: tuple[float, float, float, str] | None = None  # (excess ratio, max_abs, tol, name)
    failures: list[str] = []
    max_rel = 0.0
    for name, ref in reference.items():
        cand = candidate.get(name)
        if not isinstance(ref, Mapping) or not isinstance(cand, Mapping):
            continue
        if list(ref.get("shape", [])) != list(cand.get("shape", [])):
            failures.append(f"{name}: shape {cand.get('shape')} != {ref.get('shape')}")
            continue
        if not cand.get("finite", True) and ref.get("finite", True):
            failures.append(f"{name}: non-finite values")
            continue
        rs, cs = ref.get("sample") or [], cand.get("sample") or []
        if not rs or len(rs) != len(cs):
            continue
        numel = max(int(ref.get("numel") or len(rs)), 1)
        rms = float(ref.get("l2", 0.0)) / math.sqrt(numel)
        tol = atol + rtol * rms
        diff = max(abs(float(a) - float(b)) for a, b in zip(rs, cs))
        l2_ref, l2_cand = float(ref.get("l2", 0.0)), float(cand.get("l2", 0.0))
        norm_off = abs(l2_cand - l2_ref) > atol * math.sqrt(numel) + rtol * l2_ref
        rel = diff / rms if rms > 0 else (0.0 if diff == 0 else math.inf)
        max_rel = max(max_rel, rel)
        ratio = diff / tol if tol > 0 else math.inf
        if norm_off:
            ratio = max(ratio, 1.0 + 1e-9)
        if worst is None or ratio > worst[0]:
            worst = (ratio, diff, tol, name)
    if failures:
        return Parity(reference_name, candidate_name, "fail", math.inf, math.inf, 0.0, failures[0].split(":")[0],
                      f"{candidate_name} differs from {reference_name}: {failures[0]}")
    if worst is None:
        return Parity(reference_name, candidate_name, "n/a", message="no output to compare")
    ratio, diff, tol, name = worst
    if ratio <= 1.0:
        return Parity(reference_name, candidate_name, "pass", diff, max_rel, tol, name,
                      f"{candidate_name} matches {reference_name}: max abs {diff:.1e} <= {tol:.1e} on {name}")
    why = f"max abs {diff:.1e} > {tol:.1e}" if diff > tol else f"L2 norm off by more than the tolerance (max abs {diff:.1e})"
    return Parity(reference_name, candidate_name, "fail", diff, max_rel, tol, name,
                  f"{candidate_name} differs from {reference_name}: {why} on {name}")
