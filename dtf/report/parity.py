"""What a run's real-model results say about their source, stack and cross-hardware parity:
the pure computations every output shares (the JSON of ``dtf results``, the terminal
table, the report document and its Markdown, HTML and JUnit renderings, the dashboard).

* ``source_label``: "hf", "timm", "onnx", or "synthetic" for the built-in workloads, which
  are never shown as the model they are named after.
* ``lift``: a result row with ``source``, ``provenance`` and (where the test computed it)
  ``parity`` lifted out of its metrics to the top level; the metrics stay as they are, and
  the output fingerprint is not copied.
* ``parity_label``: the short terminal form of a test's own verdict ("pass 2.4e-2").
* ``parity_matrix``: per (model, source, batch size) of a run, every backend and precision
  compared with the cpu/fp32 result of the same model and batch *in this run*, from the
  fingerprints the tests stored (``dtf.parity.compare``, its tolerances).
* ``stack_table``: the distinct stacks (torch, CUDA/ROCm, driver, device, ONNX Runtime
  provider...) the results of each hardware kind ran on.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

from .. import parity as parity_mod
from ..models.source import result_source

__all__ = [
    "SYNTHETIC",
    "STACK_COLUMNS",
    "sci",
    "source_label",
    "lift",
    "parity_of",
    "parity_label",
    "parity_matrix",
    "stack_table",
    "synthetic_count",
]

SYNTHETIC = "synthetic"
REFERENCE = "/".join(parity_mod.REFERENCE)
# Provenance keys a stack table shows, in order, with their column headings.
STACK_COLUMNS: tuple[tuple[str, str], ...] = (
    ("device_name", "device"),
    ("device_memory_mb", "device MB"),
    ("torch", "torch"),
    ("torch_cuda", "CUDA"),
    ("torch_hip", "ROCm/HIP"),
    ("cudnn", "cuDNN"),
    ("driver", "driver"),
    ("onnxruntime", "onnxruntime"),
    ("onnx_provider", "ONNX provider"),
    ("transformers", "transformers"),
    ("timm", "timm"),
    ("python", "python"),
    ("platform", "platform"),
)
_PRECISION_ORDER = {"fp32": 0, "tf32": 1, "fp16": 2, "bf16": 3, "int8": 4}
_HARDWARE_ORDER = {"cpu": 0, "cuda": 1, "rocm": 2, "mps": 3, "webgpu": 4}


def _metrics(row: Mapping[str, Any]) -> Mapping[str, Any]:
    metrics = row.get("metrics")
    return metrics if isinstance(metrics, Mapping) else {}


source_label = result_source  # where a result's model came from; the rule lives in dtf.models.source


def parity_of(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The parity verdict the test itself recorded, or None."""
    value = _metrics(row).get("parity")
    return dict(value) if isinstance(value, Mapping) and value.get("verdict") else None


def lift(row: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a result row with top-level ``source``, ``weights`` (real models),
    ``provenance`` (the stack, with the model revision) and ``parity`` (when computed).
    Metrics are untouched; the fingerprint stays only there."""
    out = dict(row)
    metrics = _metrics(row)
    out["source"] = source_label(row)
    if metrics.get("weights") is not None:
        out["weights"] = metrics["weights"]
    prov = metrics.get("provenance")
    provenance = dict(prov) if isinstance(prov, Mapping) else None
    if metrics.get("revision") is not None:
        provenance = {**(provenance or {}), "revision": metrics["revision"]}
    out["provenance"] = provenance
    parity = parity_of(row)
    if parity is not None:
        out["parity"] = parity
    return out


def sci(value: Any, missing: str = "–") -> str:
    """2.4e-2: two significant digits, short exponent (as parity messages read)."""
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return missing
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def parity_label(row_or_parity: Mapping[str, Any] | None) -> str:
    """"pass 2.4e-2" / "FAIL 3.1e-1" (max relative error), "ref", "off", "n/a", or "" when
    the test computed no parity (synthetic workloads)."""
    if row_or_parity is None:
        return ""
    parity = row_or_parity if "verdict" in row_or_parity else parity_of(row_or_parity)
    if not parity:
        return ""
    verdict = str(parity.get("verdict"))
    if verdict == "reference":
        return "ref"
    if verdict == "pass":
        return f"pass {sci(parity.get('max_rel'))}"
    if verdict == "fail":
        rel = parity.get("max_rel")
        return f"FAIL {sci(rel)}" if isinstance(rel, (int, float)) and math.isfinite(rel) else "FAIL"
    return verdict


# -- the parity matrix ---------------------------------------------------------------------------
def _candidate(row: Mapping[str, Any]) -> str:
    return f"{row['hardware']}/{row['precision']}"


def _order(row: Mapping[str, Any]) -> tuple[int, int, str, int, str]:
    hw, precision = str(row["hardware"]), str(row["precision"])
    return (0 if (hw, precision) == parity_mod.REFERENCE else 1, _HARDWARE_ORDER.get(hw, 9), hw,
            _PRECISION_ORDER.get(precision, 9), precision)


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _cell(row: Mapping[str, Any], reference: Mapping[str, Any] | None) -> dict[str, Any]:
    metrics = _metrics(row)
    own = parity_of(row)
    cell: dict[str, Any] = {
        "candidate": _candidate(row), "hardware": row["hardware"], "precision": row["precision"],
        "test_id": row.get("test_id"), "status": row.get("status"),
        "verdict": "n/a", "max_abs": None, "max_rel": None, "tolerance": None, "output": None, "message": "",
        "basis": None, "in_test": own.get("verdict") if own else None,
    }
    fp = metrics.get("fingerprint")
    if (row["hardware"], row["precision"]) == parity_mod.REFERENCE:
        cell.update(verdict="reference", basis="run",
                    message="the reference" if isinstance(fp, Mapping) else "the reference recorded no outputs")
        return cell
    if own and own.get("verdict") == "off":
        cell.update(verdict="off", basis="test", message="parity switched off for this model")
        return cell
    ref_fp = _metrics(reference).get("fingerprint") if reference is not None else None
    if isinstance(fp, Mapping) and isinstance(ref_fp, Mapping):
        result = parity_mod.compare(ref_fp, fp, precision=str(row["precision"]), candidate_name=_candidate(row))
        if result.verdict != "fail" and own and own.get("verdict") == "fail":
            # The test's own check (against the cpu/fp32 outputs it computed itself) failed:
            # a failure either way is a failure, and the test's numbers say why.
            _from_test(cell, own)
            cell["run_verdict"] = result.verdict
            return cell
        cell.update(verdict=result.verdict, max_abs=_finite(result.max_abs), max_rel=_finite(result.max_rel),
                    tolerance=_finite(result.tolerance), output=result.output or None, message=result.message,
                    basis="run")
        return cell
    if own and own.get("verdict") in ("pass", "fail", "n/a"):
        # No cpu/fp32 result of this model and batch in the run: the test's own comparison
        # (against a cpu/fp32 reference it computed itself) is the best there is.
        _from_test(cell, own)
        return cell
    if not isinstance(fp, Mapping):
        cell["message"] = f"no outputs recorded (test {row.get('status')})"
    else:
        cell["message"] = f"no {REFERENCE} result of this model and batch size in the run"
    return cell


def _from_test(cell: dict[str, Any], own: Mapping[str, Any]) -> None:
    cell.update(verdict=own["verdict"], max_abs=_finite(own.get("max_abs")), max_rel=_finite(own.get("max_rel")),
                tolerance=_finite(own.get("tolerance")), output=own.get("output"),
                message=str(own.get("message") or ""), basis="test")


def parity_matrix(tests: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One group per (model, source, batch size) of real-model results: every backend and
    precision against the cpu/fp32 result of the same model and batch in this run.

    Each group: {model, source, batch_size, reference, reference_test_id, counts, cells};
    each cell: {candidate, hardware, precision, test_id, status, verdict (reference | pass |
    fail | n/a | off), max_abs, max_rel, tolerance, output, message, basis ("run": compared
    here from the stored fingerprints; "test": the test's own verdict, used when the run has
    no cpu/fp32 reference, or when the test's own check failed while the run's comparison
    did not, whose verdict is then ``run_verdict``), in_test (the verdict the test itself
    recorded)}. A failure by either comparison is a failure.
    Synthetic workloads record no outputs and have no group.
    """
    groups: dict[tuple[str, str, int], list[Mapping[str, Any]]] = {}
    for row in tests:
        source = source_label(row)
        metrics = _metrics(row)
        if source == SYNTHETIC and not metrics.get("fingerprint") and not parity_of(row):
            continue
        groups.setdefault((str(row["model"]), source, int(row["batch_size"])), []).append(row)
    out = []
    for (model, source, batch), rows in groups.items():
        rows = sorted(rows, key=_order)
        reference = next((r for r in rows if (r["hardware"], r["precision"]) == parity_mod.REFERENCE
                          and isinstance(_metrics(r).get("fingerprint"), Mapping)), None)
        cells = [_cell(r, reference) for r in rows]
        counts: dict[str, int] = {}
        for c in cells:
            counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
        out.append({"model": model, "source": source, "batch_size": batch, "reference": REFERENCE,
                    "reference_test_id": reference.get("test_id") if reference is not None else None,
                    "counts": counts, "cells": cells})
    return out


# -- the stack table -----------------------------------------------------------------------------
def stack_table(tests: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The distinct stacks per hardware kind: [{hardware, stack: {key: value}, hosts,
    tests, sources}] for results that recorded provenance, in hardware order. Results of one
    kind that differ on any STACK_COLUMNS key (another torch, driver or device) are separate
    rows; host names are listed, not compared."""
    rows: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}
    for row in tests:
        prov = _metrics(row).get("provenance")
        if not isinstance(prov, Mapping):
            continue
        values = tuple(prov.get(key) for key, _ in STACK_COLUMNS)
        entry = rows.setdefault((str(row["hardware"]), values), {
            "hardware": str(row["hardware"]), "stack": {key: prov.get(key) for key, _ in STACK_COLUMNS},
            "hosts": [], "tests": 0, "sources": []})
        entry["tests"] += 1
        host = prov.get("hostname") or row.get("hostname")
        if host and host not in entry["hosts"]:
            entry["hosts"].append(host)
        source = source_label(row)
        if source not in entry["sources"]:
            entry["sources"].append(source)
    return sorted(rows.values(), key=lambda e: (_HARDWARE_ORDER.get(e["hardware"], 9), e["hardware"], -e["tests"]))


def synthetic_count(tests: Sequence[Mapping[str, Any]]) -> int:
    """How many results are synthetic workloads (which record no stack and no parity)."""
    return sum(1 for t in tests if source_label(t) == SYNTHETIC)
