"""``dtf models list|fetch|inspect``: the logic and the printing; dtf/cli/models.py only parses options.

Each function prints to the consoles it is given and returns the exit code; bad input and
an unreachable hub raise DtfError (one line on stderr, exit 2, through the CLI's handler).
"""

from __future__ import annotations

import json
import os
import platform
from typing import Any

from rich.console import Console
from rich.table import Table

from ..errors import DtfError, check_option, check_positive
from .source import PACKAGES_FOR_SOURCE, TASKS, WEIGHTS, ModelSource

__all__ = ["list_models", "fetch_model", "inspect_command", "machine_report"]

_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def machine_report() -> dict[str, Any]:
    """What this machine can run: packages with versions, sources, ONNX Runtime's
    providers, and the models in the HF cache with their size."""
    from . import hub
    from .inspect import installed, onnx_providers, runnable_sources

    versions = installed()
    runnable = set(runnable_sources(versions))
    sources = {
        source: {"runnable": source in runnable, "needs": list(needs), "missing": [p for p in needs if not versions.get(p)]}
        for source, needs in PACKAGES_FOR_SOURCE.items()
    }
    return {
        "packages": versions,
        "sources": sources,
        "onnx_providers": onnx_providers(),
        "hf_cache": str(hub.cache_dir()),
        "cached_models": hub.cached_models(),
    }


def list_models(out: Console, *, as_json: bool = False) -> int:
    report = machine_report()
    if as_json:
        out.print_json(json.dumps(report))
        return 0
    packages = Table(title="model sources on this machine")
    for col in ("source", "runs here", "needs"):
        packages.add_column(col, overflow="fold")
    versions = report["packages"]
    for source, info in report["sources"].items():
        needs = ", ".join(f"{p} {versions.get(p) or '(not installed)'}" for p in info["needs"]) or "numpy (built in)"
        packages.add_row(source, "yes" if info["runnable"] else "no: pip install 'dtf[models]'", needs)
    out.print(packages)
    extra = ", ".join(f"{p} {v}" for p, v in versions.items() if v and not any(p in i["needs"] for i in report["sources"].values()))
    providers = report["onnx_providers"]
    out.print(f"also installed: {extra or 'none'}")
    out.print(f"onnxruntime providers: {', '.join(providers) if providers else 'none (onnxruntime not installed)'}")
    models = report["cached_models"]
    cache = Table(title=f"models in the HF cache ({report['hf_cache']})")
    for col in ("model", "revisions", "size MB"):
        cache.add_column(col, overflow="fold")
    for m in models:
        cache.add_row(m["name"], ", ".join(r[:12] for r in m["revisions"]) or "-", f"{m['size_mb']:.1f}")
    if models:
        out.print(cache)
    else:
        out.print(f"no models in the HF cache ({report['hf_cache']}); `dtf models fetch NAME` where the network is reachable")
    return 0


def fetch_model(out: Console, name: str, *, revision: str | None = None) -> int:
    """Download `name` into the HF cache. Offline (or the hub unreachable): DtfError."""
    from . import hub

    where = platform.node()
    for var in _OFFLINE_VARS:
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            raise DtfError(f"cannot fetch {name}: {var} is set on {where}; unset it where the network is reachable")
    # Fail fast rather than wait on a network that does not answer.
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
    try:
        folder = hub.fetch(name, revision)
    except hub.PackageMissing as exc:
        raise DtfError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - the hub's errors are many; say which in one line
        kind = type(exc).__name__
        if "NotFound" in kind and "Entry" not in kind:
            raise DtfError(f"cannot fetch {name}: no such model or revision on the Hugging Face hub ({kind})") from None
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise DtfError(f"cannot fetch {name}: the Hugging Face hub is not reachable from {where} ({kind}: {first})") from None
    size = sum(f.stat().st_size for f in _files(folder))
    out.print(f"fetched {name} -> {folder} ({size / (1 << 20):.1f} MB)")
    return 0


def _files(folder: str) -> list[Any]:
    from pathlib import Path

    return [p for p in Path(folder).rglob("*") if p.is_file()]


def inspect_command(out: Console, name: str, *, source: str = "hf", weights: str = "pretrained", path: str | None = None,
                    revision: str | None = None, task: str = "auto", batch_size: int = 1, hardware: str = "cpu",
                    as_json: bool = False) -> int:
    from ..model import HARDWARE_KINDS
    from .hub import ModelMissing, PackageMissing
    from .inspect import inspect_model

    if source not in ("hf", "timm"):
        raise DtfError(f"--source must be hf or timm, got {source!r} (an onnx file is not instantiated in torch)")
    check_option("--weights", weights, WEIGHTS, "weights")
    check_option("--task", task, TASKS, "task")
    check_option("--hardware", hardware, HARDWARE_KINDS, "hardware")
    check_positive("--batch-size", batch_size)
    if path is not None:
        path = os.path.abspath(os.path.expanduser(path))
    spec = ModelSource(source=source, weights=weights, path=path, revision=revision, task=task)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # inspect reads the cache; it never downloads
    try:
        info = inspect_model(name, spec, batch_size=batch_size, hardware=hardware)
    except PackageMissing as exc:
        raise DtfError(str(exc)) from None
    except ModelMissing as exc:
        hint = " (or --weights random for the architecture's defaults)" if weights == "pretrained" and path is None else ""
        raise DtfError(f"{exc}{hint}") from None
    except Exception as exc:  # noqa: BLE001 - an unknown timm name, a config transformers rejects
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise DtfError(f"cannot inspect {name} ({source}): {type(exc).__name__}: {first}") from None
    if as_json:
        out.print_json(json.dumps(info))
        return 0
    table = Table(title=f"{name} ({source}, {info['model_class']})", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    rows = [("class", info["model_class"]), ("task", info["task"]), ("family", info["family"]),
            ("config from", info["config_source"]), ("revision", info["revision"]),
            ("parameters", f"{info['param_count']:,} ({info['param_count_m']:.1f} M)"),
            ("buffers", f"{info['buffer_count']:,}")]
    for label, value in rows:
        table.add_row(label, str(value))
    out.print(table)
    memory = Table(title=f"memory per precision (estimate: batch {batch_size} on {hardware}, as the scheduler admits it)")
    for col in ("precision", "weights GB", "estimate GB"):
        memory.add_column(col)
    for precision, m in info["memory"].items():
        memory.add_row(precision, f"{m['weights_gb']:.3f}", f"{m['estimate_gb']:.3f}")
    out.print(memory)
    return 0
