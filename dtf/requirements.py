"""What a test requires of the machine that runs it, and the queue that carries it there.

A suite states ``requires:`` (top level or in ``defaults:``, per model, per ``tests:``
entry) with any of:

    tags: [a100, nvlink]     every tag must be among the worker's --tags
    gpu_memory_gb: 24        a GPU (of the test's kind) with at least this much memory (GiB, 3% slack)
    device: "*H100*"         a GPU (of the test's kind; the CPU model for cpu) whose name matches this glob, any case
    cpu_cores: 16            at least this many usable cores (logical cores, or a cgroup quota)
    ram_gb: 64               at least this much memory (installed, or a cgroup limit; GiB, 3% slack)
    model_sources: [onnx]    the worker can run models from each of these sources

A more specific level replaces the keys it states (a model's ``tags`` replace the suite's).
Tests with the same hardware kind and the same requirement set share one queue,
``dtf.<kind>.r-<8 hex digits>``; the digits hash the set's canonical text, which
``describe`` spells for people (``tags=a100 gpu_memory_gb>=24``). A test with no
requirements keeps its kind's plain queue ``dtf.<kind>``. Workers consume a requirement
queue only when ``unmet`` finds nothing missing on their machine.

Pure: no broker, no I/O.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import re
from typing import Any, Mapping, Sequence

from .model import HardwareProfile, TestSpec, queue_for

__all__ = [
    "REQUIRE_KEYS",
    "ROUTE_MARK",
    "RequirementError",
    "check_requires",
    "merge_requires",
    "canonical",
    "describe",
    "route_queue",
    "queue_of",
    "is_route_queue",
    "unmet",
]

REQUIRE_KEYS = ("tags", "gpu_memory_gb", "device", "cpu_cores", "ram_gb", "model_sources")
ROUTE_MARK = ".r-"
_TAG = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_ROUTE_QUEUE = re.compile(r"dtf\.[a-z]+\.r-[0-9a-f]{8}")
_GPU_VENDOR = {"cuda": "nvidia", "rocm": "amd", "mps": "apple"}
_MAX_TAGS = 32
# Sizes are GiB as the tools report them, with 3% slack: an "80 GB" H100 reports 79.6 GiB
# (81559 MiB), a "24 GB" card 23.99 GiB; what the firmware keeps back should not unserve it.
_SLACK = 0.97


class RequirementError(ValueError):
    """A bad ``requires:`` value; ``field`` is the key inside the mapping (None: the mapping itself)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_requires(value: object, sources: Sequence[str] = ()) -> dict[str, Any]:
    """A ``requires:`` mapping validated into its canonical dict (sorted tags, floats), or RequirementError."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RequirementError(None, f"expected a mapping of requirements ({', '.join(REQUIRE_KEYS)}), got {type(value).__name__}")
    out: dict[str, Any] = {}
    for key, raw in value.items():
        if key not in REQUIRE_KEYS:
            raise RequirementError(str(key), f"unknown requirement {key!r} (expected one of {', '.join(REQUIRE_KEYS)})")
        if raw is None:
            continue
        if key in ("tags", "model_sources"):
            items = [raw] if isinstance(raw, str) else raw
            if not isinstance(items, list) or len(items) > _MAX_TAGS or not all(isinstance(t, str) for t in items):
                raise RequirementError(key, f"expected a list of at most {_MAX_TAGS} names")
            for item in items:
                if key == "tags" and not _TAG.fullmatch(item):
                    raise RequirementError(key, f"invalid tag {item!r}: use a-z, 0-9, '_', '.' and '-' (64 at most)")
                if key == "model_sources" and sources and item not in sources:
                    raise RequirementError(key, f"unknown model source {item!r} (expected one of {', '.join(sources)})")
            if items:
                out[key] = sorted(set(items))
        elif key == "device":
            if not isinstance(raw, str) or not raw.strip() or len(raw) > 128:
                raise RequirementError(key, "expected a device name pattern such as '*H100*'")
            out[key] = raw.strip()
        else:
            # Compared before isfinite: a huge int overflows float().
            if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw > 1e6 or raw <= 0 or not math.isfinite(raw):
                shown = repr(raw) if len(repr(raw)) <= 40 else repr(raw)[:37] + "..."
                raise RequirementError(key, f"expected a positive number up to 1e6, got {shown}")
            out[key] = float(raw)
    return out


def merge_requires(*levels: Mapping[str, Any] | None) -> dict[str, Any]:
    """Later levels replace the keys they state (suite, then model or test entry)."""
    merged: dict[str, Any] = {}
    for level in levels:
        merged.update(level or {})
    return {k: merged[k] for k in REQUIRE_KEYS if k in merged}


def canonical(requires: Mapping[str, Any]) -> str:
    """The JSON the queue name hashes: sorted keys, no spaces."""
    return json.dumps({k: requires[k] for k in sorted(requires)}, sort_keys=True, separators=(",", ":"))


def describe(requires: Mapping[str, Any]) -> str:
    """A requirement set for people: ``tags=a100 gpu_memory_gb>=24 device~*H100*``."""
    parts = []
    for key in REQUIRE_KEYS:
        if key not in requires:
            continue
        value = requires[key]
        if isinstance(value, list):
            parts.append(f"{key}={','.join(value)}")
        elif key == "device":
            parts.append(f"device~{value}")
        else:
            parts.append(f"{key}>={value:g}")
    return " ".join(parts) or "nothing"


def route_queue(hardware: str, requires: Mapping[str, Any] | None) -> str:
    """The queue for tests of this kind with these requirements."""
    if not requires:
        return queue_for(hardware)
    digest = hashlib.sha256(f"{hardware}:{canonical(requires)}".encode()).hexdigest()[:8]
    return f"{queue_for(hardware)}{ROUTE_MARK}{digest}"


def queue_of(spec: TestSpec | Mapping[str, Any]) -> str:
    """The queue one test (a spec, or its dict form) is published on."""
    if isinstance(spec, TestSpec):
        return route_queue(spec.hardware, spec.requires)
    return route_queue(str(spec["hardware"]), spec.get("requires") or None)


def is_route_queue(queue: str) -> bool:
    return bool(_ROUTE_QUEUE.fullmatch(queue))


def unmet(profile: HardwareProfile | None, tags: Sequence[str], hardware: str, requires: Mapping[str, Any]) -> list[str]:
    """What this machine (with these worker tags) lacks for the requirement set; [] when it has it all."""
    missing: list[str] = []
    wanted_tags = [t for t in requires.get("tags") or () if t not in tags]
    if wanted_tags:
        missing.append(f"tags {', '.join(wanted_tags)}")
    if profile is None:
        return missing + [k for k in requires if k != "tags"]
    vendor = _GPU_VENDOR.get(hardware)
    gpus = [g for g in profile.gpus if vendor is None or g.vendor == vendor]
    pattern = requires.get("device")
    if pattern is not None:
        names = [g.name for g in gpus] + ([profile.cpu_model] if hardware == "cpu" else [])
        matching = [g for g in gpus if fnmatch.fnmatch(g.name.lower(), pattern.lower())]
        if not any(fnmatch.fnmatch(n.lower(), pattern.lower()) for n in names):
            missing.append(f"device {pattern}")
        gpus = matching or gpus
    need = requires.get("gpu_memory_gb")
    if need is not None and not any(g.memory_mb and g.memory_mb / 1024 >= need * _SLACK for g in gpus):
        missing.append(f"gpu_memory_gb {need:g}")
    cores = requires.get("cpu_cores")
    if cores is not None:
        known = [float(c) for c in (profile.logical_cores, profile.cpu_quota) if c]
        if not known or min(known) < cores:
            missing.append(f"cpu_cores {cores:g}")
    ram = requires.get("ram_gb")
    if ram is not None:
        known_mb = [mb for mb in (profile.memory_total_mb, profile.memory_limit_mb) if mb is not None]
        if not known_mb or min(known_mb) / 1024 < ram * _SLACK:
            missing.append(f"ram_gb {ram:g}")
    lacking = [s for s in requires.get("model_sources") or () if s not in profile.model_sources]
    if lacking:
        missing.append(f"model_sources {', '.join(lacking)}")
    return missing
