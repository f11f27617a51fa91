"""What a detected HardwareProfile means for a worker: the queues it consumes, its
name, how much CPU and memory it can give tests, and rows for a human table.

Pure functions over the profile; nothing here probes the machine.
"""

from __future__ import annotations

import re
from typing import Sequence

from dtf.errors import HardwareError
from dtf.model import HARDWARE_KINDS, GpuInfo, HardwareProfile, queue_for

__all__ = [
    "TAG_QUEUE_PREFIX",
    "select_queues",
    "tag_queue",
    "worker_name",
    "memory_capacity_gb",
    "cpu_capacity",
    "format_profile",
]

TAG_QUEUE_PREFIX = "dtf.tag."
_QUEUE_NAME = re.compile(r"[a-z0-9_.-]+")


def _check_name(name: str, what: str) -> str:
    if not _QUEUE_NAME.fullmatch(name):
        raise HardwareError(f"invalid {what} {name!r}: use only a-z, 0-9, '_', '.' and '-'")
    return name


def _check_queue(queue: str) -> str:
    """A queue a worker may consume: dtf.<hardware kind> or dtf.tag.<tag>.

    Other dtf.* queues (the coordinator's, the results queue) belong to the leader.
    """
    _check_name(queue, "queue name")
    if queue.startswith(TAG_QUEUE_PREFIX) and len(queue) > len(TAG_QUEUE_PREFIX):
        return queue
    if queue in {queue_for(kind) for kind in HARDWARE_KINDS}:
        return queue
    kinds = ", ".join(queue_for(k) for k in HARDWARE_KINDS)
    raise HardwareError(f"unknown queue {queue!r}: use one of {kinds}, or {TAG_QUEUE_PREFIX}<tag>")


def tag_queue(tag: str) -> str:
    """The queue for a tag: a hardware kind's own queue, else dtf.tag.<tag>.

    A tag already spelled as a queue ("dtf.tag.sm90", "dtf.cuda") is taken as one.
    """
    if tag.startswith("dtf."):
        return _check_queue(tag)
    _check_name(tag, "tag")
    return queue_for(tag) if tag in HARDWARE_KINDS else TAG_QUEUE_PREFIX + tag


def select_queues(
    profile: HardwareProfile,
    *,
    queues: Sequence[str] | None = None,
    tags: Sequence[str] | None = None,
    no_cpu: bool = False,
) -> list[str]:
    """The queues a worker on this machine consumes.

    dtf.cpu (unless no_cpu) and dtf.<kind> for each detected hardware kind; `queues`,
    when given, replaces that list outright (no_cpu then has no effect); each of `tags`
    adds a queue (see tag_queue). Raises HardwareError for a bad or unknown name, or
    when nothing is left to consume.
    """
    if queues:
        chosen = [_check_queue(q) for q in queues]
    else:
        chosen = [queue_for(k) for k in profile.hardware_kinds if k in HARDWARE_KINDS]
        if "cpu" not in profile.hardware_kinds:
            chosen.insert(0, queue_for("cpu"))
        if no_cpu:
            chosen = [q for q in chosen if q != queue_for("cpu")]
    chosen += [tag_queue(t) for t in tags or ()]
    unique = list(dict.fromkeys(chosen))
    if not unique:
        raise HardwareError("no queues to consume: this machine has only a CPU and --no-cpu was given")
    return unique


def worker_name(profile: HardwareProfile, name: str | None = None) -> str:
    """`name` if given, else dtf-<kinds>@<hostname>, e.g. dtf-cpu-cuda@host1."""
    if name:
        return name
    kinds = "-".join(profile.hardware_kinds) or "cpu"
    return f"dtf-{kinds}@{profile.hostname or 'localhost'}"


def memory_capacity_gb(profile: HardwareProfile) -> float | None:
    """GiB of memory tests may use: the smaller of installed memory and a cgroup limit."""
    known = [mb for mb in (profile.memory_total_mb, profile.memory_limit_mb) if mb is not None]
    return min(known) / 1024 if known else None


def cpu_capacity(profile: HardwareProfile) -> float:
    """Cores tests may use: the smaller of logical cores and a cgroup quota (at least one
    core assumed when nothing is known)."""
    known = [float(c) for c in (profile.logical_cores, profile.cpu_quota) if c]
    return min(known) if known else 1.0


# --- a human table -----------------------------------------------------------------------


def _size(mb: float | None) -> str:
    if mb is None:
        return "unknown"
    return f"{mb / 1024:.1f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"


def _gpu_row(gpu: GpuInfo) -> tuple[str, str]:
    label = f"gpu {gpu.index}" if gpu.index is not None else "gpu"
    details = [gpu.name]
    if gpu.mig:
        details.append("MIG instance")
    if gpu.memory_mb is not None:
        details.append(_size(gpu.memory_mb))
    if gpu.compute_capability:
        details.append(f"{'cc ' if gpu.vendor == 'nvidia' else ''}{gpu.compute_capability}")
    if gpu.driver:
        details.append(f"driver {gpu.driver}")
    return label, f"{gpu.vendor}: " + ", ".join(details)


def _cores(profile: HardwareProfile) -> str:
    counts = []
    if profile.physical_cores is not None:
        counts.append(f"{profile.physical_cores} physical")
    if profile.logical_cores is not None:
        counts.append(f"{profile.logical_cores} logical")
    if profile.cpu_quota is not None:
        counts.append(f"limited to {profile.cpu_quota:g}")
    return ", ".join(counts) or "unknown"


def _memory(profile: HardwareProfile) -> str:
    text = f"{_size(profile.memory_total_mb)} total"
    if profile.memory_available_mb is not None:
        text += f", {_size(profile.memory_available_mb)} available"
    if profile.memory_limit_mb is not None:
        text += f", limited to {_size(profile.memory_limit_mb)}"
    return text


def _disk(profile: HardwareProfile) -> str:
    if profile.disk_total_gb is None:
        return "unknown"
    return f"{profile.disk_free_gb:.1f} GiB free of {profile.disk_total_gb:.1f} GiB"


def format_profile(profile: HardwareProfile) -> list[tuple[str, str]]:
    """(label, value) rows describing the profile, for the CLI to print as a table."""
    platform = profile.platform + (f" ({profile.container})" if profile.container else "")
    rows = [
        ("hostname", profile.hostname or "unknown"),
        ("platform", platform),
        ("os", profile.os_release or "unknown"),
        ("architecture", profile.architecture or "unknown"),
        ("cpu", profile.cpu_model or "unknown"),
        ("cores", _cores(profile)),
        ("memory", _memory(profile)),
        ("disk", _disk(profile)),
    ]
    rows += [_gpu_row(g) for g in profile.gpus] or [("gpus", "none")]
    rows += [
        ("torch devices", ", ".join(profile.torch_devices) or "none"),
        ("browser", profile.browser or "none"),
        ("hardware kinds", ", ".join(profile.hardware_kinds)),
        ("model sources", ", ".join(profile.model_sources) or "unknown"),
        ("model packages", ", ".join(profile.model_packages) or "none"),
    ]
    rows += [("note", note) for note in profile.notes]
    return rows
