"""Pure parsers for CPU, memory, cgroup and OS facts, from the raw text of the files and
tools each platform offers (/proc, /sys/fs/cgroup, sysctl, wmic, sw_vers, os-release).

Every parser takes text and returns data; none reads a file or runs a tool, and none
raises on text it does not understand: it returns what it could read, or nothing.
Sizes are in mebibytes (MiB), as nvidia-smi and the kernel's kB fields count them.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Mapping

__all__ = [
    "CpuInfo",
    "MemInfo",
    "parse_cpuinfo",
    "parse_meminfo",
    "parse_cgroup_cpu_max",
    "parse_cgroup_v1_cpu",
    "parse_cgroup_memory_limit",
    "parse_proc_cgroup",
    "cgroup_dirs",
    "parse_sysctl",
    "cpu_from_sysctl",
    "memory_from_sysctl",
    "is_apple_silicon",
    "parse_wmic_cpu",
    "parse_os_release",
    "parse_sw_vers",
    "arm_cpu_name",
]

_MIB = 1024 * 1024
# cgroup v1 reports "no limit" as a page-rounded LONG_MAX (9223372036854771712) or, on
# older kernels, as 2**64-1. No real machine has an exbibyte, so anything that large is
# no limit at all.
_UNLIMITED_BYTES = 2**60


@dataclass(frozen=True)
class CpuInfo:
    """What one CPU source told us; None where it did not say."""

    model: str = ""
    physical_cores: int | None = None
    logical_cores: int | None = None


@dataclass(frozen=True)
class MemInfo:
    """Total and available memory in MiB; None where the source did not say."""

    total_mb: float | None = None
    available_mb: float | None = None


def _squash(text: str) -> str:
    """Collapse runs of whitespace: vendors pad model names with spaces."""
    return " ".join(text.split())


def _to_int(text: str | None, base: int = 10) -> int | None:
    try:
        return int(text.strip(), base) if text is not None else None
    except ValueError:
        return None


def _to_float(text: str | None) -> float | None:
    try:
        return float(text.strip()) if text is not None else None
    except ValueError:
        return None


# --- /proc/cpuinfo ---------------------------------------------------------------------

# arm64 kernels print no "model name": only the implementer and part numbers. These are
# the MIDR values from the Linux kernel's arch/arm64/include/asm/cputype.h for the cores
# found in servers and common boards (Graviton2 = Neoverse-N1, Graviton3 = Neoverse-V1,
# Graviton4 and Grace = Neoverse-V2).
_ARM_IMPLEMENTERS: Mapping[int, str] = {
    0x41: "ARM",
    0x42: "Broadcom",
    0x43: "Cavium",
    0x46: "Fujitsu",
    0x48: "HiSilicon",
    0x4E: "NVIDIA",
    0x50: "APM",
    0x51: "Qualcomm",
    0x61: "Apple",
    0xC0: "Ampere",
}
_ARM_PARTS: Mapping[tuple[int, int], str] = {
    (0x41, 0xD03): "Cortex-A53",
    (0x41, 0xD04): "Cortex-A35",
    (0x41, 0xD05): "Cortex-A55",
    (0x41, 0xD07): "Cortex-A57",
    (0x41, 0xD08): "Cortex-A72",
    (0x41, 0xD09): "Cortex-A73",
    (0x41, 0xD0A): "Cortex-A75",
    (0x41, 0xD0B): "Cortex-A76",
    (0x41, 0xD0C): "Neoverse-N1",
    (0x41, 0xD0D): "Cortex-A77",
    (0x41, 0xD40): "Neoverse-V1",
    (0x41, 0xD41): "Cortex-A78",
    (0x41, 0xD44): "Cortex-X1",
    (0x41, 0xD49): "Neoverse-N2",
    (0x41, 0xD4A): "Neoverse-E1",
    (0x41, 0xD4F): "Neoverse-V2",
    (0x41, 0xD84): "Neoverse-V3",
    (0x41, 0xD8E): "Neoverse-N3",
    (0x46, 0x001): "A64FX",
    (0x48, 0xD01): "Kunpeng-920",
    (0x4E, 0x004): "Carmel",
    (0xC0, 0xAC3): "Ampere-1",
    (0xC0, 0xAC4): "Ampere-1a",
}


def arm_cpu_name(implementer: str, part: str) -> str:
    """A readable name for an arm64 core from cpuinfo's hex "CPU implementer"/"CPU part"."""
    impl, part_no = _to_int(implementer, 16), _to_int(part, 16)
    if impl is None:
        return ""
    vendor = _ARM_IMPLEMENTERS.get(impl, f"implementer {implementer.strip()}")
    core = _ARM_PARTS.get((impl, part_no)) if part_no is not None else None
    return f"{vendor} {core}" if core else f"{vendor} CPU part {part.strip()}"


def _cpuinfo_blocks(text: str) -> list[dict[str, str]]:
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current.setdefault(key.strip(), value.strip())
    if current:
        blocks.append(current)
    return blocks


def _cpuinfo_model(blocks: list[dict[str, str]]) -> str:
    for key in ("model name", "cpu model", "Processor"):  # x86, MIPS, 32-bit ARM
        for block in blocks:
            if block.get(key):
                return _squash(block[key])
    names = [arm_cpu_name(b["CPU implementer"], b.get("CPU part", "")) for b in blocks if "CPU implementer" in b]
    # big.LITTLE boards have two core types; name both, most common first.
    return " + ".join(name for name, _ in Counter(n for n in names if n).most_common())


def _cpuinfo_physical(blocks: list[dict[str, str]], logical: int | None) -> int | None:
    per_package: dict[str, int] = {}
    pairs: set[tuple[str, str]] = set()
    for block in blocks:
        package = block.get("physical id", "0")
        cores = _to_int(block.get("cpu cores"))
        if cores is not None:
            per_package[package] = cores
        if "core id" in block:
            pairs.add((package, block["core id"]))
    physical = sum(per_package.values()) if per_package else (len(pairs) or None)
    # "cpu cores" describes the whole package even when only some processors are listed
    # (lxcfs in containers, trimmed captures), and there cannot be more cores than threads.
    if physical is not None and logical is not None:
        physical = min(physical, logical)
    return physical


def parse_cpuinfo(text: str) -> CpuInfo:
    """Model name and core counts from Linux /proc/cpuinfo (x86, arm64, others)."""
    blocks = _cpuinfo_blocks(text)
    logical = sum(1 for b in blocks if _to_int(b.get("processor")) is not None) or None
    return CpuInfo(
        model=_cpuinfo_model(blocks),
        physical_cores=_cpuinfo_physical(blocks, logical),
        logical_cores=logical,
    )


# --- /proc/meminfo ---------------------------------------------------------------------


def parse_meminfo(text: str) -> MemInfo:
    """Total and available memory from /proc/meminfo.

    Kernels before 3.14 have no MemAvailable; then free + buffers + page cache is the
    usual estimate of what a new process could get.
    """
    kib: dict[str, float] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        number = _to_float(rest.split()[0]) if sep and rest.split() else None
        if number is not None:
            kib[key.strip()] = number
    total = kib.get("MemTotal")
    available = kib.get("MemAvailable")
    if available is None and "MemFree" in kib:
        available = kib["MemFree"] + kib.get("Buffers", 0.0) + kib.get("Cached", 0.0)
    return MemInfo(
        total_mb=total / 1024 if total is not None else None,
        available_mb=available / 1024 if available is not None else None,
    )


# --- cgroups ---------------------------------------------------------------------------


def parse_cgroup_cpu_max(text: str) -> float | None:
    """Cores allowed by a cgroup v2 cpu.max ("quota period"); None for "max" (no limit)."""
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    return _quota_cores(_to_float(fields[0]), _to_float(fields[1]))


def parse_cgroup_v1_cpu(quota_text: str, period_text: str) -> float | None:
    """Cores allowed by cgroup v1 cpu.cfs_quota_us / cpu.cfs_period_us; -1 means no limit."""
    return _quota_cores(_to_float(quota_text), _to_float(period_text))


def _quota_cores(quota: float | None, period: float | None) -> float | None:
    if quota is None or period is None or quota <= 0 or period <= 0:
        return None
    return quota / period


def parse_cgroup_memory_limit(text: str) -> float | None:
    """A cgroup memory limit in MiB from v2 memory.max or v1 memory.limit_in_bytes.

    None for "max" and for the huge values v1 uses to mean no limit.
    """
    limit = _to_int(text.strip()) if text.strip() else None
    if limit is None or limit <= 0 or limit >= _UNLIMITED_BYTES:
        return None
    return limit / _MIB


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """Map each controller to this process's cgroup path from /proc/self/cgroup.

    cgroup v2's single hierarchy ("0::/path") is under the key "".
    """
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3 or not parts[2].startswith("/"):
            continue
        for controller in parts[1].split(","):
            paths.setdefault(controller, parts[2])
    return paths


def cgroup_dirs(mount: str, path: str) -> list[str]:
    """The directories to read limits from, leaf first, up to the mount point.

    A parent's limit binds its children too, so the caller takes the smallest. Inside a
    container the path names the host's hierarchy, which is not mounted there; those
    directories are simply missing, and the walk ends at the container's own root.
    """
    parts = [p for p in path.split("/") if p]
    if ".." in parts:  # a path outside our cgroup namespace: only the root is ours
        parts = []
    mount = mount.rstrip("/")
    return ["/".join([mount, *parts[:i]]) for i in range(len(parts), -1, -1)]


# --- macOS sysctl and sw_vers ------------------------------------------------------------


def parse_sysctl(text: str) -> dict[str, str]:
    """Key/value pairs from `sysctl` output ("key: value", or BSD's "key = value")."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"^\s*([\w.\-]+)\s*(?::|=)\s?(.*)$", line)
        if match:
            values.setdefault(match.group(1), match.group(2).strip())
    return values


def cpu_from_sysctl(values: Mapping[str, str]) -> CpuInfo:
    """CPU model and cores from parsed sysctl values (macOS, Intel or Apple Silicon)."""
    physical = _to_int(values.get("hw.physicalcpu")) or _to_int(values.get("machdep.cpu.core_count"))
    if physical is None:  # Apple Silicon lists cores per performance level
        levels = [_to_int(v) for k, v in values.items() if re.fullmatch(r"hw\.perflevel\d+\.physicalcpu", k)]
        physical = sum(n for n in levels if n) or None
    logical = (
        _to_int(values.get("hw.logicalcpu"))
        or _to_int(values.get("machdep.cpu.thread_count"))
        or _to_int(values.get("hw.ncpu"))
    )
    return CpuInfo(_squash(values.get("machdep.cpu.brand_string", "")), physical, logical)


def memory_from_sysctl(values: Mapping[str, str]) -> float | None:
    """Installed memory in MiB from hw.memsize."""
    size = _to_int(values.get("hw.memsize"))
    return size / _MIB if size else None


def is_apple_silicon(values: Mapping[str, str]) -> bool:
    """Whether sysctl describes an Apple Silicon (arm64) Mac.

    hw.optional.arm64 says so even to an x86 process running under Rosetta, where
    platform.machine() would say x86_64.
    """
    if values.get("hw.optional.arm64") == "1":
        return True
    if values.get("machdep.cpu.brand_string", "").startswith("Apple"):
        return True
    return any(key.startswith("hw.optional.arm.") for key in values)


def parse_sw_vers(text: str) -> str:
    """ "macOS 14.5 (23F79)" from `sw_vers` output."""
    values = parse_sysctl(text)
    name = " ".join(v for v in (values.get("ProductName"), values.get("ProductVersion")) if v)
    build = values.get("BuildVersion")
    return f"{name} ({build})" if name and build else name


# --- Windows wmic / PowerShell -----------------------------------------------------------


def parse_wmic_cpu(text: str) -> CpuInfo:
    """CPU model and cores from `wmic cpu get ... /format:list` or PowerShell `Format-List`.

    One block per socket; cores add up across sockets. wmic ends lines with \\r\\r\\n.
    """
    blocks: list[dict[str, str]] = [{}]
    for line in re.split(r"\r*\n|\r", text):
        match = re.match(r"^\s*(\w+)\s*[=:]\s*(.*)$", line)
        if match:
            blocks[-1][match.group(1)] = match.group(2).strip()
        elif not line.strip() and blocks[-1]:
            blocks.append({})
    names = [_squash(b["Name"]) for b in blocks if b.get("Name")]
    physical = [_to_int(b.get("NumberOfCores")) for b in blocks]
    logical = [_to_int(b.get("NumberOfLogicalProcessors")) for b in blocks]
    return CpuInfo(
        model=names[0] if names else "",
        physical_cores=sum(n for n in physical if n) or None,
        logical_cores=sum(n for n in logical if n) or None,
    )


# --- Linux os-release --------------------------------------------------------------------


def parse_os_release(text: str) -> str:
    """The distribution's pretty name from /etc/os-release."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            values[key] = value.strip().strip("\"'")
    pretty = values.get("PRETTY_NAME")
    if pretty:
        return pretty
    return " ".join(v for v in (values.get("NAME"), values.get("VERSION")) if v)
