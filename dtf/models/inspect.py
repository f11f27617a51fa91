"""What a model is and what this machine can run, without weights or a download.

- ``installed()``: the packages behind each model source (torch, transformers, timm,
  onnxruntime, ...) with versions, read from package metadata without importing them, and
  the sources that can run here (``runnable_sources``; what ``dtf detect`` reports).
- ``inspect_model()``: architecture, parameter count and memory per precision of an ``hf``
  or ``timm`` model, built on torch's ``meta`` device (shapes only, no memory, no weights).
  The config comes from ``path:``, the HF cache, or transformers' defaults exactly as
  ``dtf.models.hf.resolve_config`` finds it for a run.
- ``with_param_counts()``: the submit-time pre-pass that gives the scheduler each real
  model's parameter count (``params.param_count_m``), so ``dtf.suite.estimate_memory_gb``
  sizes a test from the model instead of its family's typical footprint. The counting runs
  in a child interpreter, offline, so the submitting process never imports torch; counts
  are cached per model in memory and in the state directory (``param-counts.json``).
  Anything that goes wrong leaves the suite as it was: the family footprint stands.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .source import PACKAGES_FOR_SOURCE, ModelSource

__all__ = [
    "MODEL_PACKAGES",
    "BYTES_PER_PARAM",
    "installed",
    "package_version",
    "runnable_sources",
    "onnx_providers",
    "meta_model",
    "count_params",
    "inspect_model",
    "with_param_counts",
    "COUNTABLE_SOURCES",
]

# Import name -> distributions that provide it (the first installed one gives the version).
MODEL_PACKAGES: Mapping[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "transformers": ("transformers",),
    "timm": ("timm",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-rocm", "onnxruntime-directml",
                    "onnxruntime-openvino", "onnxruntime-qnn", "onnxruntime-silicon"),
    "onnx": ("onnx",),
    "onnxscript": ("onnxscript",),
    "huggingface_hub": ("huggingface_hub", "huggingface-hub"),
    "safetensors": ("safetensors",),
}
BYTES_PER_PARAM: Mapping[str, float] = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0}
COUNTABLE_SOURCES = frozenset({"hf", "timm"})
COUNT_TIMEOUT_S = 120.0
_CACHE_FILE = "param-counts.json"
_ROOT = Path(__file__).resolve().parent.parent.parent  # the folder holding this dtf package
# The child imports this very dtf, whatever the working directory holds.
_CHILD = "import sys; sys.path.insert(0, {root!r}); from dtf.models.inspect import _count_main; raise SystemExit(_count_main())"


# -- what is installed -------------------------------------------------------------------------


def package_version(module: str) -> str | None:
    """The installed version of the package importable as `module`, or None when it is not
    importable. Reads metadata only: nothing is imported."""
    try:
        if importlib.util.find_spec(module) is None:
            return None
    except (ImportError, ValueError):
        return None
    for dist in MODEL_PACKAGES.get(module, (module,)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def installed() -> dict[str, str | None]:
    """{package: version or None} for every package a model source may need."""
    return {module: package_version(module) for module in MODEL_PACKAGES}


def runnable_sources(versions: Mapping[str, str | None] | None = None) -> tuple[str, ...]:
    """The model sources whose packages are all installed (synthetic always)."""
    versions = installed() if versions is None else versions
    return tuple(source for source, needs in PACKAGES_FOR_SOURCE.items() if all(versions.get(p) for p in needs))


def onnx_providers() -> list[str] | None:
    """ONNX Runtime's available execution providers (imports onnxruntime), None without it."""
    if package_version("onnxruntime") is None:
        return None
    try:
        import onnxruntime

        return list(onnxruntime.get_available_providers())
    except Exception:  # noqa: BLE001 - a broken install lists as no providers
        return []


# -- the model on the meta device --------------------------------------------------------------


def _family(name: str, family: str | None) -> str:
    if family:
        return family
    from ..suite import detect_family

    return detect_family(name)


def meta_model(name: str, source: ModelSource, *, family: str | None = None,
               overrides: Mapping[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """(module on torch's meta device, what was learnt: class, task, config source, revision).
    Raises PackageMissing, ModelMissing, or the library's own error."""
    from .runtime import require

    require(source.source)
    import torch

    if source.source == "timm":
        import timm

        with torch.device("meta"):
            module = timm.create_model(name, pretrained=False, **dict(overrides or {}))
        return module, {"task": "image-classification", "config_source": "timm", "revision": f"timm-{timm.__version__}"}
    if source.source != "hf":
        raise ValueError(f"{source.source} models are not instantiated in torch; inspect takes hf or timm")
    from . import hf

    config, origin, revision, _ = hf.resolve_config(name, source, overrides)
    task = hf.pick_task(config, _family(name, family), source.task)
    with torch.device("meta"):
        module = hf.auto_class(task).from_config(config)
    return module, {"task": task, "config_source": origin, "revision": revision,
                    "model_type": getattr(config, "model_type", None)}


def _counts(module: Any) -> tuple[int, int]:
    """(parameters, buffer elements); shared (tied) tensors count once."""
    params = sum(p.numel() for p in module.parameters())
    buffers = sum(b.numel() for b in module.buffers() if b.is_floating_point())
    return int(params), int(buffers)


def count_params(name: str, source: ModelSource, *, family: str | None = None,
                 overrides: Mapping[str, Any] | None = None) -> int:
    """The model's parameter count, from its meta-device instance."""
    module, _ = meta_model(name, source, family=family, overrides=overrides)
    return _counts(module)[0]


def inspect_model(name: str, source: ModelSource, *, family: str | None = None,
                  overrides: Mapping[str, Any] | None = None, batch_size: int = 1,
                  hardware: str = "cpu") -> dict[str, Any]:
    """Architecture, parameter count and memory per precision (``dtf models inspect``).

    ``weights_gb``: parameters and floating-point buffers at that precision (int8 keeps
    buffers in 16 bits). ``estimate_gb``: what the scheduler admits a test of this model
    with at `batch_size` on `hardware` (``dtf.suite.estimate_memory_gb`` with the real
    parameter count)."""
    from ..suite import estimate_memory_gb

    module, learnt = meta_model(name, source, family=family, overrides=overrides)
    params, buffers = _counts(module)
    fam = _family(name, family)
    memory = {}
    for precision, size in BYTES_PER_PARAM.items():
        buffer_bytes = max(size, 2.0) if precision == "int8" else size
        memory[precision] = {
            "weights_gb": round((params * size + buffers * buffer_bytes) / 1e9, 4),
            "estimate_gb": estimate_memory_gb(fam, batch_size, precision, hardware,
                                              {"param_count_m": params / 1e6}),
        }
    return {
        "name": name, "source": source.source, "weights": source.weights, "family": fam,
        "model_class": type(module).__name__, **learnt,
        "param_count": params, "param_count_m": round(params / 1e6, 3), "buffer_count": buffers,
        "batch_size": batch_size, "hardware": hardware, "memory": memory,
    }


# -- the submit-time pre-pass ------------------------------------------------------------------

_MEMO: dict[str, int | None] = {}


def _request(entry: Any) -> dict[str, Any]:
    return {"name": entry.name, "source": entry.source.to_dict(), "family": entry.resolved_family,
            "overrides": dict(entry.params.get("config") or {})}


def _stat(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size]


def _cached_snapshot(name: str, revision: str | None) -> str | None:
    """The snapshot a hub id's revision points at in the HF cache, read without
    huggingface_hub; None when the cache has no such model or revision."""
    from .hub import cache_dir

    repo = cache_dir() / f"models--{name.replace('/', '--')}"
    try:
        return (repo / "refs" / (revision or "main")).read_text().strip()
    except OSError:
        return revision if revision and (repo / "snapshots" / revision).is_dir() else None


def _cache_key(request: Mapping[str, Any], versions: Mapping[str, str | None]) -> str:
    """What the count depends on: the request, the library versions, and the config it
    will read (the folder's config.json, or the snapshot the hub ref points at)."""
    source = request["source"]
    where: Any = None
    if source.get("path"):
        where = _stat(Path(source["path"]) / "config.json") or _stat(Path(source["path"]))
    elif source["source"] == "hf":
        where = _cached_snapshot(request["name"], source.get("revision"))
    text = json.dumps([request, where, [versions.get(p) for p in ("torch", "transformers", "timm")]], sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _cache_path() -> Path:
    from ..state import default_state_dir

    return Path(default_state_dir(os.environ)) / _CACHE_FILE


def _disk_cache() -> dict[str, Any]:
    try:
        data = json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_disk_cache(found: Mapping[str, int]) -> None:
    path = _cache_path()
    try:
        data = {**_disk_cache(), **found}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".param-counts.")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
    except OSError:
        pass


def _count_in_child(requests: Sequence[Mapping[str, Any]], timeout_s: float) -> list[int | None] | None:
    """Counts from a fresh interpreter, offline (None for a model it could not count);
    None when the child failed or ran out of time."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    try:
        proc = subprocess.run([sys.executable, "-c", _CHILD.format(root=str(_ROOT))], input=json.dumps(list(requests)),
                              capture_output=True, text=True, timeout=timeout_s, env=env)
        counts = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        counts = None
    if not isinstance(counts, list) or len(counts) != len(requests):
        return None
    return [c if isinstance(c, int) and not isinstance(c, bool) and c > 0 else None for c in counts]


def _countable(entry: Any, versions: Mapping[str, str | None]) -> bool:
    """A real torch model the suite gave no size for, whose packages are here, and whose
    config can be found (a pretrained hub model the cache lacks fails its test anyway)."""
    params, source = entry.params, entry.source
    if source.source not in COUNTABLE_SOURCES or "param_count_m" in params or "memory_gb" in params:
        return False
    if not all(versions.get(p) for p in PACKAGES_FOR_SOURCE[source.source]):
        return False
    if source.source == "hf" and source.path is None and source.weights == "pretrained":
        return _cached_snapshot(entry.name, source.revision) is not None
    return True


def param_counts(entries: Iterable[Any], *, timeout_s: float = COUNT_TIMEOUT_S) -> dict[str, int]:
    """{model name: parameter count} for the hf/timm entries whose count can be had."""
    versions = installed()
    todo = [e for e in entries if _countable(e, versions)]
    if not todo:
        return {}
    keys = {e.name: _cache_key(_request(e), versions) for e in todo}
    disk = _disk_cache()
    for key in keys.values():
        if key not in _MEMO and isinstance(disk.get(key), int):
            _MEMO[key] = disk[key]
    missing = [e for e in todo if keys[e.name] not in _MEMO]
    if missing:
        counts = _count_in_child([_request(e) for e in missing], timeout_s)
        if counts is not None:  # a failed child is not remembered: the next submit tries again
            _MEMO.update((keys[e.name], count) for e, count in zip(missing, counts))
            found = {keys[e.name]: count for e, count in zip(missing, counts) if count is not None}
            if found:
                _save_disk_cache(found)
    return {name: count for name, key in keys.items() if (count := _MEMO.get(key)) is not None}


def with_param_counts(suite: Any, *, timeout_s: float = COUNT_TIMEOUT_S) -> Any:
    """The suite with ``params.param_count_m`` filled in for each hf/timm model whose count
    could be computed (a suite's own param_count_m or memory_gb stands). Test ids and
    everything else are unchanged; on any failure the suite comes back as it was."""
    try:
        counts = param_counts(suite.models, timeout_s=timeout_s)
    except Exception:  # noqa: BLE001 - an estimate, never a reason to refuse a suite
        return suite
    if not counts:
        return suite
    models = tuple(
        dataclasses.replace(m, params={**m.params, "param_count_m": round(counts[m.name] / 1e6, 6)})
        if m.name in counts else m
        for m in suite.models
    )
    return dataclasses.replace(suite, models=models)


def _count_main() -> int:
    """``python -m dtf.models.inspect --count``: JSON requests on stdin, counts on stdout."""
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    out: list[int | None] = []
    for request in json.loads(sys.stdin.read() or "[]"):
        try:
            out.append(count_params(request["name"], ModelSource.from_dict(request["source"]),
                                    family=request.get("family"), overrides=request.get("overrides")))
        except Exception:  # noqa: BLE001 - no count for this model; the family footprint stands
            out.append(None)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--count"]:
        raise SystemExit(_count_main())
    raise SystemExit("usage: python -m dtf.models.inspect --count < requests.json")
