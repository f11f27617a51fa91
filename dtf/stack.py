"""The software and hardware stack a result was produced on, recorded with every result.

``stack()`` is cheap and safe to call in any test process: package versions come from
installed metadata (nothing is imported to read them), and the device part is filled in
only from modules the test has already imported (torch, onnxruntime). The NVIDIA driver
version is read from ``/proc/driver/nvidia/version`` or, failing that, one ``nvidia-smi``
query with a short time limit.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from typing import Any

__all__ = ["stack", "package_versions", "PACKAGES", "nvidia_driver", "fingerprint"]

# Distribution names whose versions every result records (None when not installed).
PACKAGES = ("dtf", "numpy", "torch", "transformers", "timm", "onnxruntime", "onnxruntime-gpu",
            "huggingface-hub", "safetensors")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    if "dtf" in out and out["dtf"] is None:  # run from a checkout, not installed
        from . import __version__

        out["dtf"] = f"{__version__} (source tree)"
    if out.get("onnxruntime") is None and out.get("onnxruntime-gpu"):
        out["onnxruntime"] = out["onnxruntime-gpu"]
    out.pop("onnxruntime-gpu", None)
    return out


@lru_cache(maxsize=1)
def fingerprint() -> str:
    """This process's stack fingerprint (dtf/cache.py): Python and the PACKAGES versions.
    Workers report it in heartbeats and record it with every result."""
    from .cache import stack_fingerprint

    return stack_fingerprint(platform.python_version(), package_versions())


@lru_cache(maxsize=1)
def nvidia_driver() -> str | None:
    """The NVIDIA kernel driver version, or None where there is none."""
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8") as fh:
            match = re.search(r"Kernel Module\s+(?:for \S+\s+)?([0-9][0-9.]+)", fh.read())
            if match:
                return match.group(1)
    except OSError:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    return line.strip() or None


def _torch_device(device: str | None) -> dict[str, Any]:
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    info: dict[str, Any] = {
        "torch_cuda": getattr(torch.version, "cuda", None),
        "torch_hip": getattr(torch.version, "hip", None),
    }
    try:
        info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:  # noqa: BLE001 - a broken cudnn install must not lose the result
        info["cudnn"] = None
    if device and device.startswith("cuda") and torch.cuda.is_available():
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info["device_name"] = props.name
        info["device_memory_mb"] = round(props.total_memory / (1 << 20), 1)
        info["device_capability"] = f"{props.major}.{props.minor}"
        if getattr(torch.version, "hip", None):
            info["driver"] = None  # ROCm: the HIP runtime version above is what matters
        else:
            info["driver"] = nvidia_driver()
    elif device == "mps":
        info["device_name"] = "Apple MPS"
    return info


def stack(device: str | None = None, *, provider: str | None = None) -> dict[str, Any]:
    """Versions and device facts for one result. `device` is torch's device string
    ("cpu", "cuda", "mps"); `provider` the ONNX Runtime execution provider that ran."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": f"{platform.system().lower()}-{platform.machine()}",
        "hostname": platform.node(),
        **package_versions(),
        "device": device or "cpu",
    }
    if device in (None, "cpu"):
        info["device_name"] = platform.processor() or _cpu_model()
    info.update(_torch_device(device))
    if provider:
        info["onnx_provider"] = provider
    info["hf_offline"] = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "TRUE", "yes")
    return info


@lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()
