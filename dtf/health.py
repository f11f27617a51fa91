"""Worker health: how loaded this machine is right now.

`HealthSampler.sample()` measures CPU %, memory % (against a container's cgroup limit
when it has one), load average, free disk, and per-GPU utilisation and memory from
nvidia-smi / rocm-smi (asked only when detection found such GPUs). The worker sends the
latest sample with every heartbeat, and the resource guard judges it.

    sampler = HealthSampler(profile, disk_path=".")
    sample = sampler.sample()          # HealthSample(cpu_percent=12.5, ...)
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import psutil

from .hardware import (
    NVIDIA_QUERY_FIELDS,
    FileReader,
    Runner,
    parse_nvidia_smi_csv,
    parse_rocm_smi_json,
    read_text,
    run_command,
)
from .model import GpuInfo, HardwareProfile

__all__ = ["GpuHealth", "HealthSample", "HealthSampler", "gpu_health", "cgroup_memory_percent"]

log = logging.getLogger("dtf.health")

NVIDIA_HEALTH_ARGV = ("nvidia-smi", f"--query-gpu={','.join(NVIDIA_QUERY_FIELDS)}", "--format=csv,noheader,nounits")
ROCM_HEALTH_ARGV = ("rocm-smi", "--showproductname", "--showmeminfo", "vram", "--showuse", "--json")
_TOOL_TIMEOUT_S = 5.0
_UNLIMITED = 2**60  # cgroup v1 writes a huge number for "no limit"


@dataclass(frozen=True)
class GpuHealth:
    """One accelerator's load as its vendor tool reported it."""

    vendor: str
    name: str
    index: int | None = None
    utilization_percent: float | None = None
    memory_used_mb: float | None = None
    memory_total_mb: float | None = None

    @property
    def memory_percent(self) -> float | None:
        if self.memory_used_mb is None or not self.memory_total_mb:
            return None
        return round(100.0 * self.memory_used_mb / self.memory_total_mb, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "vendor": self.vendor, "name": self.name, "index": self.index,
            "utilization_percent": self.utilization_percent, "memory_used_mb": self.memory_used_mb,
            "memory_total_mb": self.memory_total_mb, "memory_percent": self.memory_percent,
        }


@dataclass(frozen=True)
class HealthSample:
    """One measurement of the machine; what a heartbeat carries under "health"."""

    cpu_percent: float
    memory_percent: float
    load: tuple[float, float, float] | None = None
    disk_free_gb: float | None = None
    gpus: tuple[GpuHealth, ...] = ()
    at: float = field(default_factory=time.time)

    @property
    def gpu_memory_percent(self) -> float | None:
        """The fullest GPU's memory use, or None when no GPU reports it."""
        known = [g.memory_percent for g in self.gpus if g.memory_percent is not None]
        return max(known) if known else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu_percent": self.cpu_percent, "memory_percent": self.memory_percent,
            "load": list(self.load) if self.load else None, "disk_free_gb": self.disk_free_gb,
            "gpus": [g.to_dict() for g in self.gpus], "gpu_memory_percent": self.gpu_memory_percent,
            "sampled_at": self.at,
        }


def gpu_health(gpus: Sequence[GpuInfo]) -> tuple[GpuHealth, ...]:
    """GpuHealth records from what the nvidia-smi / rocm-smi parsers return."""
    return tuple(
        GpuHealth(g.vendor, g.name, g.index, g.utilization_percent, g.memory_used_mb, g.memory_mb) for g in gpus
    )


def _number(text: str | None) -> float | None:
    try:
        return float(text.strip()) if text else None
    except ValueError:
        return None  # "max", or garbage


def _inactive_file(stat: str | None, key: str) -> float:
    for line in (stat or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return _number(value) or 0.0
    return 0.0


def cgroup_memory_percent(read: Callable[[str], str | None]) -> float | None:
    """Memory use as a percentage of this container's cgroup limit, or None without a limit.

    Uses the working set (usage minus inactive page cache), as `docker stats` and the
    kubelet do: the kernel reclaims that cache before it would OOM-kill anything.
    """
    for usage_f, limit_f, stat_f, key in (
        ("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.stat", "inactive_file"),
        ("/sys/fs/cgroup/memory/memory.usage_in_bytes", "/sys/fs/cgroup/memory/memory.limit_in_bytes",
         "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file"),
    ):
        limit, usage = _number(read(limit_f)), _number(read(usage_f))
        if limit is None or usage is None or limit <= 0 or limit >= _UNLIMITED:
            continue
        working_set = max(0.0, usage - _inactive_file(read(stat_f), key))
        return round(100.0 * working_set / limit, 1)
    return None


class HealthSampler:
    """Takes HealthSamples of this machine; GPU tools are asked only when detection saw GPUs.

    The seams (`run` for tools, `read_file` for /sys files) are the same as detection's.
    """

    def __init__(
        self,
        profile: HardwareProfile | None = None,
        *,
        disk_path: str = ".",
        run: Runner | None = None,
        read_file: FileReader | None = None,
    ) -> None:
        vendors = {g.vendor for g in (profile.gpus if profile else ())}
        self.nvidia = "nvidia" in vendors
        self.amd = "amd" in vendors
        self.disk_path = disk_path
        self._run: Runner = run or (lambda argv, timeout: run_command(argv, timeout))
        self._read_file = read_file or read_text
        self._failed: set[str] = set()
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement

    def sample(self) -> HealthSample:
        """CPU % is the average since the previous sample (or since construction)."""
        return HealthSample(
            cpu_percent=float(psutil.cpu_percent(interval=None)),
            memory_percent=self._memory_percent(),
            load=_load(),
            disk_free_gb=_disk_free_gb(self.disk_path),
            gpus=self._gpus(),
        )

    def _read(self, path: str) -> str | None:
        try:
            return self._read_file(path)
        except Exception:  # noqa: BLE001 - a missing cgroup file means "no limit here"
            return None

    def _memory_percent(self) -> float:
        host = float(psutil.virtual_memory().percent)
        limited = cgroup_memory_percent(self._read)
        return max(host, limited) if limited is not None else host

    def _gpus(self) -> tuple[GpuHealth, ...]:
        found: list[GpuInfo] = []
        if self.nvidia:
            found += parse_nvidia_smi_csv(self._tool(NVIDIA_HEALTH_ARGV) or "")
        if self.amd:
            found += parse_rocm_smi_json(self._tool(ROCM_HEALTH_ARGV) or "")
        return gpu_health(found)

    def _tool(self, argv: Sequence[str]) -> str | None:
        try:
            code, out, err = self._run(list(argv), _TOOL_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - missing, hung or failing tool: no GPU numbers
            self._note(argv[0], f"{type(exc).__name__}: {exc}")
            return None
        if code != 0:
            self._note(argv[0], f"exit {code}: {(err or out).strip()[:200]}")
            return None
        return out

    def _note(self, tool: str, why: str) -> None:
        if tool not in self._failed:  # once per tool, not every few seconds
            self._failed.add(tool)
            log.warning("%s gave no GPU health: %s", tool, why)


def _load() -> tuple[float, float, float] | None:
    try:
        one, five, fifteen = os.getloadavg()
    except (AttributeError, OSError):  # Windows has no load average
        return None
    return round(one, 2), round(five, 2), round(fifteen, 2)


def _disk_free_gb(path: str) -> float | None:
    try:
        return round(shutil.disk_usage(path).free / 2**30, 2)
    except OSError:
        return None

